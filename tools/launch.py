"""Launching the trainer as a user does, for the tests, `make compare` and `make bench`: one
process (`python train_gpt.py`) or `nproc` ranks through torchrun (gloo on a CPU)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trainer_command(nproc: int = 0, entry: tuple[str, ...] = (str(ROOT / "train_gpt.py"),)) -> list[str]:
    """The command line; `entry` replaces train_gpt.py (tools/turns.py runs it wrapped, as `-m tools.turns`)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
    return [sys.executable, *launcher, *entry]


def run_trainer(env: dict, nproc: int = 0, entry: tuple[str, ...] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run it to the end in the repository root; `kwargs` go to subprocess.run."""
    command = trainer_command(nproc) if entry is None else trainer_command(nproc, entry)
    return subprocess.run(command, env=env, cwd=ROOT, **kwargs)


def start_trainer(env: dict, nproc: int = 0, entry: tuple[str, ...] | None = None, **kwargs) -> subprocess.Popen:
    """Start it and return at once; `kwargs` go to subprocess.Popen."""
    command = trainer_command(nproc) if entry is None else trainer_command(nproc, entry)
    return subprocess.Popen(command, env=env, cwd=ROOT, **kwargs)
