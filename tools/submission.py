"""A submission folder: train_gpt.py with only the code the run's settings import, packed small.

    python -m tools.submission OUT      # the run's settings in the environment, as for the run itself

Writes OUT/train_gpt.py (the trainer minified: docstrings, comments and function annotations
gone, one space per indentation level, still plain text), OUT/trainer/__init__.py and
OUT/curriculum/__init__.py: each package's modules that these settings import, minified and
compressed into one file (curriculum/pack.py). Run from OUT, train_gpt.py trains exactly as from
the repository (the same code, token for token) and its `Code size:` counts those three files.
A package's modules that the settings do not import are not there: build the folder with the
settings the run will use. OUT must not exist; it appears whole or not at all.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from curriculum.loader import Position
from curriculum.plan import open_data_path
from curriculum.shards import DataError
from trainer.provenance import HERE, imported_code_files
from trainer.settings import SettingsError


def import_what_the_run_imports(environ: dict) -> list[Path]:
    """Read the settings as the trainer does, build its data path and draw one batch, so that every
    module the run needs is imported; the files imported_code_files() then names."""
    sys.path.insert(0, str(HERE))  # train_gpt.py is a script beside the packages, not one of them
    import train_gpt
    s = train_gpt.read_settings(environ)
    batches = open_data_path(s.data, s.shape, torch.device("cpu"), s.rank)
    try:
        batches.next_batch(Position())
        batches.summary(Position())
    finally:
        batches.close()
    return imported_code_files()


def write_submission(out: Path, files: list[Path]) -> list[Path]:
    """train_gpt.py minified and one packed __init__.py per package into `out`, staged beside it and
    renamed."""
    from curriculum.pack import minify, packed_init, write_folder  # here: a run does not import it, so it is not counted
    texts = {"train_gpt.py": minify((HERE / "train_gpt.py").read_text(), "train_gpt.py")}
    for package in ("trainer", "curriculum"):
        texts[f"{package}/__init__.py"] = packed_init([f for f in files if f.is_relative_to(HERE / package)], HERE / package)
    return write_folder(out, texts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.submission", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the folder to write (must not exist)")
    a = ap.parse_args(argv)
    if a.out.exists():
        print(f"tools.submission: {a.out} exists; remove it or choose another folder", file=sys.stderr)
        return 2
    try:
        imported = import_what_the_run_imports(dict(os.environ))
    except (SettingsError, DataError) as err:
        print(f"tools.submission: {err}", file=sys.stderr)
        return 2
    written = write_submission(a.out, imported)
    for f in written:
        print(f"{f.stat().st_size:>8,}  {f}")
    print(f"{sum(f.stat().st_size for f in written):>8,}  bytes of code in {len(written)} files "
          f"(the repository's {sum(f.stat().st_size for f in imported):,} in {len(imported)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
