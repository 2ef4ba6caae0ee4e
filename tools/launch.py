"""Launching the trainer as a user does, for the tests, `make compare` and `make bench`: one
process (`python train_gpt.py`) or `nproc` ranks through torchrun (gloo on a CPU)."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trainer_command(nproc: int = 0, entry: tuple[str, ...] = (str(ROOT / "train_gpt.py"),)) -> list[str]:
    """The command line; `entry` replaces train_gpt.py (tools/turns.py runs it wrapped, as `-m tools.turns`)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
    return [sys.executable, *launcher, *entry]


def run_trainer(env: dict, nproc: int = 0, entry: tuple[str, ...] | None = None, timeout: float | None = None,
                **kwargs) -> subprocess.CompletedProcess:
    """Run it to the end in the repository root, as subprocess.run does (`kwargs` go to Popen),
    but on Ctrl-C the run is given the time to end in its own line before KeyboardInterrupt goes
    on (subprocess.run kills it after a quarter of a second)."""
    if kwargs.pop("capture_output", False):
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with start_trainer(env, nproc, entry, **kwargs) as child:
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise
        except KeyboardInterrupt:
            let_it_end(child)
            raise
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def let_it_end(child: subprocess.Popen) -> None:
    """An interrupted run writes its last line: from a terminal it has the signal already; a
    `kill -INT` of the launcher alone is passed on, once (a second would cut its ending short)."""
    try:
        child.communicate(timeout=5)
        return
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGINT)
    try:
        child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()


def start_trainer(env: dict, nproc: int = 0, entry: tuple[str, ...] | None = None, **kwargs) -> subprocess.Popen:
    """Start it and return at once; `kwargs` go to subprocess.Popen."""
    command = trainer_command(nproc) if entry is None else trainer_command(nproc, entry)
    return subprocess.Popen(command, env=env, cwd=ROOT, **kwargs)
