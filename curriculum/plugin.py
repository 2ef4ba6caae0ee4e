"""A drop-in for the challenge's `DistributedTokenLoader`: the curriculum in anyone's trainer.

    from curriculum.plugin import CurriculumTokenLoader
    train_loader = CurriculumTokenLoader(args.train_files, rank, world_size, device)  # was DistributedTokenLoader

The constructor and `next_batch` take the challenge's arguments. With CURRICULUM=0 (or unset)
the batches are the challenge loader's, bit for bit; with CURRICULUM=1 they are selected exactly
as train_gpt.py selects them: both read the same environment variables with the same function
into one `DataPlan`, checked by the same rules and opened by the same `open_data_path`
(curriculum/plan.py).

The training progress the curriculum follows is the script's own: the loader reads the
`MAX_WALLCLOCK_SECONDS` and `ITERATIONS` the challenge's scripts read (with their defaults,
600 and 20000) and takes the time since its first batch over the cap, or the steps over the
iterations without one. `set_progress(p)` replaces that with the script's exact value.

The package is imported piece by piece: the loader imports the index, the whole-run orders and
adaptive mixing only when the settings use them. What to copy beside a script, for the
settings in the environment (the files they import, nothing else):

    python -m curriculum.plugin --copy-to ../my_submission --train-files './data/fineweb_train_*.bin'

With `--pack` the same modules go into one minified, compressed `curriculum/__init__.py`
(curriculum/pack.py): about a fifth of the bytes, the same code.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from .config import CurriculumConfig
from .environment import EnvReader
from .plan import DATA_SETTINGS, DataPlan, Shape, open_data_path, read_data_plan
from .artifact import PACKAGE, code_bytes, code_sha256, loaded_modules, read_budget  # noqa: F401  (re-exported)


class CurriculumSettingsError(ValueError):
    """Invalid CURRICULUM*/DATA_ORDER settings; the message lists every one."""


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Read by the plan but only named in the summary when set: the plugin refuses both (a phase changes
# the script's shapes; the packed layout is the late records' loader's), and a March script's
# summary stays what it was
REFUSED_QUIET = {"DATA_LAYOUT": "rows", "CURRICULUM_PHASES": ""}


def read_loader_plan(environ: Mapping[str, str], pattern: str, vocab_size: int, config: CurriculumConfig | None = None
                     ) -> tuple[DataPlan, dict]:
    """The data plan the environment describes for the shards `pattern` (curriculum/plan.py's
    `read_data_plan`, as train_gpt.py reads it) and every value read by name, every problem
    reported at once; a `config` given by the caller replaces the CURRICULUM* variables."""
    e = EnvReader(environ)
    # the index's fingerprint names the tokenizer; the challenge's scripts pass none, so TOKENIZER_PATH if set
    tokenizer = (environ.get("TOKENIZER_PATH") or "").strip() or None
    plan = read_data_plan(e, train_files=pattern, vocab_size=vocab_size,
                          tokenizer=tokenizer if tokenizer and Path(tokenizer).is_file() else None)
    if config is not None:
        plan = dataclasses.replace(plan, curriculum=config)
    cap, iterations, budget_problems = read_budget(environ)
    errors = e.errors + e.ignored(DATA_SETTINGS) + plan.curriculum.problems() + plan.mix.problems() + budget_problems
    if plan.phases:  # never ignored in silence: the phases change the trainer's shapes
        errors.append(f"CURRICULUM_PHASES={plan.phases!r}: the plugin does not run phases files (a phase changes the "
                      f"script's sequence length and batch); train_gpt.py does")
    if plan.layout != "rows":
        errors.append(f"DATA_LAYOUT={plan.layout!r}: this loader gives the March scripts' rows; the late records' "
                      f"document packing is CurriculumDocumentLoader (docs/plugin.md)")
    if errors:
        raise CurriculumSettingsError("invalid settings:\n  " + "\n  ".join(errors))
    values = {k: int(v) if isinstance(v, bool) else v for k, v in e.values.items()
              if REFUSED_QUIET.get(k, object()) != v}
    return plan, values | dict(MAX_WALLCLOCK_SECONDS=cap, ITERATIONS=iterations)


def __getattr__(name: str):
    """The late records' loaders, imported only by the scripts that use them (curriculum/record_loaders.py)."""
    if name in ("CurriculumDocumentLoader", "CurriculumSequenceLoader", "LoaderSettingsError"):
        from . import record_loaders
        return getattr(record_loaders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CurriculumTokenLoader:
    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device,
                 config: CurriculumConfig | None = None, vocab_size: int | None = None):
        problems = []
        if not isinstance(pattern, (str, os.PathLike)):
            problems.append(f"pattern={pattern!r}: must be a glob of the training shards (a str)")
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
        self.plan, self.settings = read_loader_plan(os.environ, str(pattern), self.vocab_size, config)
        self.max_wallclock_seconds, self.iterations = self.settings["MAX_WALLCLOCK_SECONDS"], self.settings["ITERATIONS"]
        self.files = self.plan.shards()
        if not self.files:
            raise FileNotFoundError(f"No files found for pattern: {pattern}")
        self.rank, self.world_size, self.device, self.config = rank, world_size, device, self.plan.curriculum
        self.given_progress: float | None = None  # set_progress's value, once it has been called
        self.warmdown_start = 1.0
        self.started: float | None = None  # the clock at the first batch: the script's training starts there
        self.source = None  # the BatchSource (curriculum/loader.py), made at the first batch
        self._accum = 1

    def set_progress(self, progress: float, warmdown_start: float = 1.0) -> None:
        """The training progress in [0, 1] as the caller's warmdown uses it; it replaces the
        loader's own (time since the first batch over MAX_WALLCLOCK_SECONDS, or steps over
        ITERATIONS without a cap) from this call on."""
        if not (math.isfinite(float(progress)) and math.isfinite(float(warmdown_start))):
            raise ValueError(f"set_progress: progress={progress!r}, warmdown_start={warmdown_start!r}: must be finite numbers")
        self.given_progress, self.warmdown_start = min(max(float(progress), 0.0), 1.0), warmdown_start

    def budget_progress(self, step: int) -> float:
        """The challenge's progress at `step`: elapsed time over the cap, or step over ITERATIONS."""
        if self.max_wallclock_seconds > 0:
            elapsed = 0.0 if self.started is None else time.perf_counter() - self.started
            return min(elapsed / self.max_wallclock_seconds, 1.0)
        return min(step / self.iterations, 1.0)

    @property
    def steps_taken(self) -> int:
        return self.source.micro_batches // self._accum if self.source is not None else 0

    @property
    def progress(self) -> float:
        """What the next batch is selected at: the caller's progress if given, else the budget's."""
        return self.given_progress if self.given_progress is not None else self.budget_progress(self.steps_taken)

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
        from .loader import Position  # here: a late records' script imports none of it
        if self.source is None:
            self.started = time.perf_counter()
            self.source = open_data_path(self.plan, Shape(seq_len, global_tokens, self.world_size, grad_accum_steps),
                                         self.device, self.rank)
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
        """The loader's line about the steps since the last one, at `step`'s own progress (the
        caller's if it gives one, else the budget's at that step)."""
        if self.source is None:
            return f"data step:{step} (no batch yet)"
        progress = self.given_progress if self.given_progress is not None else self.budget_progress(step)
        return self.source.log_line(step, progress)

    def results(self) -> dict:
        """What the data path did over the run (the trainer's summary's `data`), {} before a batch."""
        if self.source is None:
            return {}
        from .loader import Position
        return self.source.summary(Position(step=max(self.steps_taken, 1)))["data"]

    def summary(self) -> str:
        """One line for the script's log at the end: `curriculum: summary {JSON}` with every setting
        the loader read (the seed among them), its code's size and hash, and `results()`.
        tools.compare reads it from a plain log to pair and group runs."""
        data = {k: v for k, v in self.results().items() if k not in ("first_rows", "rank_first_rows")}  # rows, not totals
        body = dict(settings=self.settings, code_bytes=code_bytes(), code_sha256=code_sha256(), data=data)
        return "curriculum: summary " + json.dumps(body, sort_keys=True, default=str)

    @staticmethod
    def code_bytes() -> int:
        """Bytes of the curriculum's imported modules: add them to the script's `Code size:`."""
        return code_bytes()

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


def copy_imported(pattern: str, out: Path, pack: bool = False) -> list[Path]:
    """Build the loader the environment's settings describe, draw one batch (so that every part
    those settings use is imported), and copy the package's imported files to `out`/curriculum/,
    or with `pack` one `__init__.py` that holds them minified and compressed (curriculum/pack.py),
    written whole under a temporary name and then renamed."""
    loader = CurriculumTokenLoader(pattern, 0, 1, torch.device("cpu"))
    try:
        seq_len = int(os.environ.get("TRAIN_SEQ_LEN", "1024"))
        loader.next_batch(int(os.environ.get("TRAIN_BATCH_TOKENS", str(8 * seq_len))), seq_len, 1)
    finally:
        loader.close()
    files = loaded_modules()  # before importing pack, which a run does not import and so does not count
    from .pack import packed_init, write_folder
    texts = ({"__init__.py": packed_init(files, PACKAGE)} if pack else
             {f.relative_to(PACKAGE).as_posix(): f.read_text() for f in files})
    return write_folder(out / "curriculum", texts)


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Copy the curriculum's files that the environment's settings import.")
    ap.add_argument("--copy-to", type=Path, required=True, help="the folder of your script; curriculum/ goes inside")
    default = os.path.join(os.environ["DATA_PATH"], "*train_*.bin") if os.environ.get("DATA_PATH") else None
    ap.add_argument("--train-files", default=default, help="the training shards (default: $DATA_PATH/*train_*.bin)")
    ap.add_argument("--pack", action="store_true", help="one minified, compressed __init__.py instead of the files")
    args = ap.parse_args(argv)
    problems = []
    if not args.train_files or not glob.glob(args.train_files):
        problems.append(f"--train-files={args.train_files!r}: matches no shard (or set DATA_PATH)")
    existing = next((d for d in (args.copy_to, *args.copy_to.parents) if d.exists()), Path("."))
    if not existing.is_dir():
        problems.append(f"--copy-to={args.copy_to}: {existing} is a file; name a folder")
    elif not os.access(existing, os.W_OK | os.X_OK):
        problems.append(f"--copy-to={args.copy_to}: {existing} is not writable")
    elif (args.copy_to / "curriculum").exists():
        problems.append(f"--copy-to={args.copy_to}: {args.copy_to / 'curriculum'} exists; remove it or choose another")
    if problems:
        print("curriculum.plugin: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    from .shards import DataError
    try:
        files = copy_imported(args.train_files, args.copy_to, args.pack)
    except (CurriculumSettingsError, DataError, FileExistsError) as err:
        print(f"curriculum.plugin: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only folder, a full disk: nothing of the copy is left (pack.write_folder)
        print(f"curriculum.plugin: --copy-to={args.copy_to}: cannot write {err.filename or args.copy_to}: "
              f"{err.strerror or err}; nothing was copied", file=sys.stderr)
        return 1
    for f in files:
        print(f"{f.stat().st_size:>8,}  {f}")
    print(f"{sum(f.stat().st_size for f in files):>8,}  bytes in {len(files)} files: add them to the script's Code size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
