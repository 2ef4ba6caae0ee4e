"""A drop-in for the challenge's `DistributedTokenLoader`: the curriculum in anyone's trainer.

    from curriculum.plugin import CurriculumTokenLoader
    train_loader = CurriculumTokenLoader(args.train_files, rank, world_size, device)  # was DistributedTokenLoader
    ...
    train_loader.set_progress(progress)   # once per step, the progress the script's warmdown uses

The constructor and `next_batch` take the challenge's arguments. With CURRICULUM=0 (or unset)
the batches are the challenge loader's, bit for bit; with CURRICULUM=1 they are selected exactly
as train_gpt.py selects them, because train_gpt.py uses the same `BatchSource`. Settings come
from the same environment variables, read by the same function (curriculum/config.py).
"""
from __future__ import annotations

import glob
import math
import os
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from .config import (SEED, CurriculumConfig, EnvReader, read_curriculum, read_data_align, read_data_order, read_mix,
                     read_order)
from .index_order import OrderConfig
from .mixing import MixConfig
from .loader import BatchSource, Position


class CurriculumSettingsError(ValueError):
    """Invalid CURRICULUM*/DATA_ORDER settings; the message lists every one."""


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_loader_settings(environ: Mapping[str, str], config: CurriculumConfig | None = None
                         ) -> tuple[CurriculumConfig, str, int, str, int, OrderConfig, MixConfig]:
    """(the curriculum, DATA_ORDER, SEED, DATA_ALIGN, DOC_MAX_TOKENS, the ORDER_* and the MIX*
    settings) from the environment, every problem reported at once; a `config` given by the caller
    replaces the CURRICULUM* variables."""
    e = EnvReader(environ)
    config = read_curriculum(e) if config is None else config
    order = read_data_order(e)
    seed = e.read(SEED)
    align, doc_max = read_data_align(e)
    index_order = read_order(e)
    mix = read_mix(e)
    errors = e.errors + config.problems() + mix.problems()
    if errors:
        raise CurriculumSettingsError("invalid settings:\n  " + "\n  ".join(errors))
    return config, order, seed, align, doc_max, index_order, mix


class CurriculumTokenLoader:
    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device,
                 config: CurriculumConfig | None = None, vocab_size: int | None = None):
        config, self.order, self.seed, self.align, self.doc_max, self.index_order, self.mix = read_loader_settings(
            os.environ, config)
        # the index's fingerprint names the tokenizer; the challenge's scripts pass none, so TOKENIZER_PATH if set
        self.tokenizer = os.environ.get("TOKENIZER_PATH", "").strip() or None
        problems = []
        if not (_whole(world_size) and world_size >= 1):
            problems.append(f"world_size={world_size!r}: must be a whole number >= 1")
        elif not (_whole(rank) and 0 <= rank < world_size):
            problems.append(f"rank={rank!r}: must be a whole number in [0, world_size={world_size})")
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            problems.append(f"device={device!r}: not a torch device ({err})")
        else:
            if device.type == "cuda" and not torch.cuda.is_available():
                problems.append(f"device={str(device)!r}: no CUDA device is available here")
        # the challenge's scripts pass no vocabulary: theirs is VOCAB_SIZE, 1024 by default. The
        # scores size their tables by it, and the read-ahead thread names any token beyond it
        raw_vocab = vocab_size if vocab_size is not None else (os.environ.get("VOCAB_SIZE", "").strip() or "1024")
        try:
            self.vocab_size = int(raw_vocab)
            if self.vocab_size < 2:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"VOCAB_SIZE={raw_vocab!r}: must be a whole number >= 2")
        if problems:
            raise CurriculumSettingsError("invalid loader arguments:\n  " + "\n  ".join(problems))
        self.files = [Path(p) for p in sorted(glob.glob(pattern))]
        if not self.files:
            raise FileNotFoundError(f"No files found for pattern: {pattern}")
        self.rank, self.world_size, self.device, self.config = rank, world_size, device, config
        self.progress, self.warmdown_start = 0.0, 1.0
        self.source: BatchSource | None = None
        self.steps_seen, self._accum = 0, 1

    def set_progress(self, progress: float, warmdown_start: float = 1.0) -> None:
        """The training progress in [0, 1] (the caller's, as its warmdown uses it); 0 until called."""
        if not (math.isfinite(float(progress)) and math.isfinite(float(warmdown_start))):
            raise ValueError(f"set_progress: progress={progress!r}, warmdown_start={warmdown_start!r}: must be finite numbers")
        self.progress, self.warmdown_start = min(max(float(progress), 0.0), 1.0), warmdown_start

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[Tensor, Tensor]:
        bad = [f"{name}={value!r}" for name, value in (("global_tokens", global_tokens), ("seq_len", seq_len),
                                                       ("grad_accum_steps", grad_accum_steps))
               if not (_whole(value) and value >= 1)]
        if bad:
            raise ValueError(f"next_batch: {', '.join(bad)}: must be whole numbers >= 1")
        local = global_tokens // (self.world_size * grad_accum_steps)
        if local < seq_len or local % seq_len:
            raise ValueError(f"next_batch: {global_tokens} tokens over {self.world_size} ranks x {grad_accum_steps} "
                             f"micro-batches is {local} per micro-batch, not a whole number of {seq_len}-token sequences")
        if self.source is None:
            self.source = BatchSource(self.files, seq_len=seq_len, batch_seqs=local // seq_len, rank=self.rank,
                                      world_size=self.world_size, vocab_size=self.vocab_size, device=self.device,
                                      config=self.config, order=self.order, seed=self.seed, align=self.align,
                                      doc_max_tokens=self.doc_max, index_order=self.index_order, mix=self.mix,
                                      tokenizer=self.tokenizer if self.tokenizer and Path(self.tokenizer).is_file() else None)
        else:
            self.source.set_shape(seq_len, local // seq_len)
        self._accum = grad_accum_steps
        return self.source.next_batch(Position(self.progress, self.warmdown_start))

    def observe(self, per_token_loss: Tensor) -> None:
        """Optional, once per micro-batch after the forward: the per-token loss [sequences, seq_len]
        (e.g. `F.cross_entropy(..., reduction="none")`), left on the device. MIX=adaptive moves its
        weights from it; without the call the weights stay where they started."""
        if self.source is not None:
            self.source.observe(per_token_loss)

    def log_line(self, step: int) -> str:
        return self.source.log_line(step, self.progress) if self.source else f"data step:{step} (no batch yet)"

    def summary(self) -> dict:
        if self.source is None:
            return {}
        return self.source.summary(Position(step=max(self.source.micro_batches // self._accum, 1)))["data"]

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
