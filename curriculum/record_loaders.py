"""The curriculum as the late records' two loaders (April 2026), for scripts that read their
settings into one object `h` and train on document-packed `[1, N]` streams:

    from curriculum.plugin import CurriculumDocumentLoader, CurriculumSequenceLoader
    train_loader = CurriculumDocumentLoader(h, device)      # was DocumentPackingLoader(h, device)
    calib_loader = CurriculumSequenceLoader(h, device)      # was ShuffledSequenceLoader(h, device)

With CURRICULUM unset or 0 every value they return is the record loaders' bit for bit
(curriculum/documents.py, curriculum/sequences.py); with CURRICULUM=1 the document loader packs
the pieces the schedule asks for and the sequence loader keeps the rows the schedule asks for.
Progress is the scripts' own: the time since the first batch over MAX_WALLCLOCK_SECONDS -
GPTQ_RESERVE_SECONDS, or the steps over ITERATIONS without a cap; `set_progress` replaces it.
"""
from __future__ import annotations

import glob
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .artifact import code_bytes, code_sha256, read_budget
from .config import SEED, CurriculumConfig, read_curriculum
from .environment import EnvReader
from .documents import check_document_shards
from .packed_source import PackedBatches, PackedStatistics
from .shards import DataError

H_FIELDS = ("rank", "world_size", "train_seq_len", "train_files")
TOKEN_TYPE_IDS = 1 << 16  # the shards hold uint16 tokens
# settings of the March loader that choose other rows; these loaders read the records' order only
IGNORED_HERE = {"DATA_ORDER": "sequential", "DATA_ALIGN": "none", "MIX": "", "CURRICULUM_PHASES": ""}


class LoaderSettingsError(ValueError):
    """Invalid arguments or settings of a record loader; the message lists every one."""


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class ScriptRun:
    """What both loaders read of the script and the environment, checked at once: the fields of
    `h`, the curriculum's settings, the budget and the progress the script's warmdown follows."""

    def __init__(self, h, device, environ=os.environ):
        problems = [f"h.{name}: missing (the late records' settings object has it)"
                    for name in H_FIELDS if not hasattr(h, name)]
        rank, world = getattr(h, "rank", 0), getattr(h, "world_size", 1)
        if not (_whole(world) and world >= 1):
            problems.append(f"h.world_size={world!r}: must be a whole number >= 1")
        elif not (_whole(rank) and 0 <= rank < world):
            problems.append(f"h.rank={rank!r}: must be a whole number in [0, {world})")
        seq_len = getattr(h, "train_seq_len", 1)
        if not (_whole(seq_len) and seq_len >= 1):
            problems.append(f"h.train_seq_len={seq_len!r}: must be a whole number >= 1")
        vocab = getattr(h, "vocab_size", None)
        if vocab is None:  # scripts without the field: VOCAB_SIZE, as the challenge's default it
            vocab = (environ.get("VOCAB_SIZE") or "").strip() or "1024"
            vocab = int(vocab) if vocab.isdigit() else vocab
        if not (_whole(vocab) and 2 <= vocab <= TOKEN_TYPE_IDS):
            problems.append(f"vocab_size={vocab!r}: must be a whole number in [2, {TOKEN_TYPE_IDS:,}] (the shards' "
                            f"uint16 tokens hold no larger id)")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            problems.append(f"device={device!r}: not a torch device ({err})")
        else:
            if self.device.type == "cuda" and not torch.cuda.is_available():
                problems.append(f"device={str(device)!r}: no CUDA device is available here")
        e = EnvReader(environ)
        self.config: CurriculumConfig = read_curriculum(e)
        e.read(SEED)  # recorded in the settings: tools.compare pairs runs by it
        problems += e.errors + self.config.problems()
        if self.config.score.startswith("index:"):
            problems.append(f"CURRICULUM_SCORE={self.config.score}: the index scores rows of its own layout; these "
                            f"loaders score their own pieces and rows from their tokens")
        problems += [f"{name}={environ[name]!r}: the late records' loaders read the shards in their own order; "
                     f"unset it (default {default or 'empty'})" for name, default in IGNORED_HERE.items()
                     if (environ.get(name) or "").strip() not in ("", default)]
        cap, iterations, budget_problems = read_budget(environ)
        problems += budget_problems
        self.cap = float(getattr(h, "max_wallclock_seconds", cap))
        self.iterations = int(getattr(h, "iterations", iterations))
        raw_reserve = getattr(h, "gptq_reserve_seconds", None)
        if raw_reserve is None:
            raw_reserve = (environ.get("GPTQ_RESERVE_SECONDS") or "0").strip()
        try:
            self.reserve = float(raw_reserve)
            if not (math.isfinite(self.reserve) and self.reserve >= 0):
                raise ValueError
        except ValueError:
            problems.append(f"GPTQ_RESERVE_SECONDS={raw_reserve!r}: must be a number of seconds >= 0")
            self.reserve = 0.0
        if self.cap > 0 and self.reserve >= self.cap:
            problems.append(f"GPTQ_RESERVE_SECONDS={self.reserve:g}: must be below MAX_WALLCLOCK_SECONDS={self.cap:g}")
        # the records' LR warmdown is the last WARMDOWN_FRAC of the progress: CURRICULUM_PEAK=warmdown turns there
        self.warmdown_start = 1.0 - float(getattr(h, "warmdown_frac", 0.0) or 0.0)
        files = sorted(glob.glob(str(getattr(h, "train_files", "")))) if hasattr(h, "train_files") else []
        if hasattr(h, "train_files") and not files:
            problems.append(f"h.train_files={h.train_files!r}: matches no file")
        if problems:
            raise LoaderSettingsError("invalid loader arguments or settings:\n  " + "\n  ".join(problems))
        self.files = [Path(f) for f in files]
        self.rank, self.world_size, self.seq_len, self.vocab_size = rank, world, seq_len, vocab
        self.settings = {k: int(v) if isinstance(v, bool) else v for k, v in e.values.items()} | dict(
            MAX_WALLCLOCK_SECONDS=self.cap, ITERATIONS=self.iterations, GPTQ_RESERVE_SECONDS=self.reserve)
        self.given: float | None = None
        self.started: float | None = None

    def start_clock(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def progress(self, step: int) -> float:
        """The script's progress: its own value once given, else time over the cap less the
        reserve, else steps over ITERATIONS."""
        if self.given is not None:
            return self.given
        if self.cap > 0:
            elapsed = 0.0 if self.started is None else time.perf_counter() - self.started
            return min(elapsed / (self.cap - self.reserve), 1.0)
        return min(step / self.iterations, 1.0)

    def set_progress(self, progress: float, warmdown_start: float | None = None) -> None:
        if not math.isfinite(float(progress)):
            raise ValueError(f"set_progress: progress={progress!r}: must be a finite number")
        self.given = min(max(float(progress), 0.0), 1.0)
        if warmdown_start is not None:
            self.warmdown_start = float(warmdown_start)

    def summary(self, data: dict) -> str:
        body = dict(settings=self.settings, code_bytes=code_bytes(), code_sha256=code_sha256(), data=data)
        return "curriculum: summary " + json.dumps(body, sort_keys=True, default=str)


def _batch_size(global_tokens, grad_accum_steps, world_size: int) -> int:
    bad = [f"{name}={value!r}" for name, value in (("global_tokens", global_tokens), ("grad_accum_steps", grad_accum_steps))
           if not (_whole(value) and value >= 1)]
    if bad:
        raise ValueError(f"next_batch: {', '.join(bad)}: must be whole numbers >= 1")
    n = global_tokens // (world_size * grad_accum_steps)
    if n < 1:
        raise ValueError(f"next_batch: {global_tokens} tokens over {world_size} ranks x {grad_accum_steps} micro-batches "
                         f"is less than one token per micro-batch")
    return n


class CurriculumDocumentLoader:
    """The records' `DocumentPackingLoader(h, device, cu_bucket_size)`: `next_batch(global_tokens,
    grad_accum_steps)` gives (inputs [1, N], targets [1, N], cu_seqlens int32, max_seqlen), N =
    global_tokens // (world_size x grad_accum_steps); batches are prepared two ahead on a thread,
    each with the N asked for when it was requested, as theirs are (packed_source.PackedBatches)."""

    def __init__(self, h, device, cu_bucket_size: int = 64):
        problems = [] if _whole(cu_bucket_size) and cu_bucket_size >= 1 else [
            f"cu_bucket_size={cu_bucket_size!r}: must be a whole number >= 1"]
        try:
            self.run = ScriptRun(h, device)
        except LoaderSettingsError as err:
            raise LoaderSettingsError("\n  ".join([str(err)] + problems)) from None
        if problems:
            raise LoaderSettingsError("invalid loader arguments or settings:\n  " + "\n  ".join(problems))
        bad = check_document_shards(self.run.files)
        if bad:
            raise DataError("training shards that cannot be packed by document:\n  " + "\n  ".join(bad))
        self.device = self.run.device
        self.batches = PackedBatches(self.run.files, self.run.rank, self.run.world_size, self.run.vocab_size,
                                     self.run.seq_len, cu_bucket_size, self.run.config, pin=self.device.type == "cuda")
        self.statistics = PackedStatistics(cu_bucket_size)
        self._accum = 1

    def next_batch(self, global_tokens: int, grad_accum_steps: int) -> tuple[Tensor, Tensor, Tensor, int]:
        n = _batch_size(global_tokens, grad_accum_steps, self.run.world_size)
        self._accum = grad_accum_steps
        self.run.start_clock()
        batch, wait_ms = self.batches.get(n, self.progress, self.run.warmdown_start)
        self.statistics.taken(batch, wait_ms)
        inputs, targets = (torch.as_tensor(a)[None].to(self.device, non_blocking=True) for a in (batch.inputs, batch.targets))
        return inputs, targets, torch.as_tensor(batch.cu_seqlens).to(self.device, non_blocking=True), batch.max_seqlen

    @property
    def progress(self) -> float:
        return self.run.progress(self.statistics.c["micro_batches"] // self._accum)

    def set_progress(self, progress: float, warmdown_start: float | None = None) -> None:
        """The script's exact progress in [0, 1]; it replaces the loader's own from this call on."""
        self.run.set_progress(progress, warmdown_start)

    def log_line(self, step: int) -> str:
        """The loader's line about the steps since the last one, at `step`'s progress."""
        progress = self.run.given if self.run.given is not None else self.run.progress(step)
        return self.statistics.log_line(step, progress, self.run.config.enabled)

    def results(self) -> dict:
        return self.statistics.results(self.batches, self.run.config)

    def summary(self) -> str:
        """`curriculum: summary {JSON}`: every setting read (the seed among them), the code's size
        and hash, and what the loader did; tools.compare pairs plain logs by it."""
        return self.run.summary(self.results())

    @staticmethod
    def code_bytes() -> int:
        return code_bytes()

    def close(self) -> None:
        self.batches.close()


class CurriculumSequenceLoader:
    """The records' `ShuffledSequenceLoader(h, device)`: `next_batch(global_tokens,
    grad_accum_steps)` gives (x, y) of [global_tokens // (world_size x grad_accum_steps) //
    seq_len, seq_len]. With the curriculum on, a pool of CURRICULUM_OVERSAMPLE x the rows is read
    in the same order and the selector keeps the rows the schedule asks for (curriculum/selector.py)."""

    def __init__(self, h, device):
        from .sequences import ShuffledSequences
        self.run = ScriptRun(h, device)
        self.device = self.run.device
        self.rows = ShuffledSequences(self.run.files, self.run.rank, self.run.world_size, self.run.seq_len)
        self.selector, self.micro_batches, self._accum = None, 0, 1
        self.tokens_read = self.tokens_trained = 0

    def _selector(self, keep: int):
        if self.selector is None or self.selector.batch_seqs != keep:
            from .selector import Selector, WindowStats
            self.stats = WindowStats(self.device, 0)
            self.selector = Selector(self.run.config, keep, files=self.run.files, vocab_size=self.run.vocab_size,
                                     device=self.device, stats=self.stats)
        return self.selector

    def next_batch(self, global_tokens: int, grad_accum_steps: int) -> tuple[Tensor, Tensor]:
        rows = _batch_size(global_tokens, grad_accum_steps, self.run.world_size) // self.run.seq_len
        if rows < 1:
            raise ValueError(f"next_batch: {global_tokens} tokens over {self.run.world_size} ranks x {grad_accum_steps} "
                             f"micro-batches is less than one sequence of {self.run.seq_len}")
        self._accum = grad_accum_steps
        self.run.start_clock()
        if not self.run.config.enabled:
            taken = torch.from_numpy(self.rows.take(rows))
        else:
            selector = self._selector(rows)
            fresh = torch.from_numpy(self.rows.take(selector.fresh_needed())).to(self.device, non_blocking=True)
            progress = self.run.progress(self.micro_batches // self._accum)
            taken, _ = selector.choose(fresh, None, self.micro_batches, progress, self.run.warmdown_start)
            self.tokens_read += fresh.numel()
        self.micro_batches += 1
        self.tokens_trained += taken.numel()
        return taken[:, :-1].to(self.device, non_blocking=True), taken[:, 1:].to(self.device, non_blocking=True)

    def set_progress(self, progress: float, warmdown_start: float | None = None) -> None:
        self.run.set_progress(progress, warmdown_start)

    def summary(self) -> str:
        return self.run.summary(dict(loader="sequences", micro_batches=self.micro_batches,
                                     tokens_trained=self.tokens_trained, tokens_read=self.tokens_read))
