"""Launching the trainer as a user does, for the tests, `make compare` and `make bench`: one
process (`python train_gpt.py`) or `nproc` ranks through torchrun (gloo on a CPU).

    python -m tools.launch --standalone --nproc_per_node=8 train_gpt.py

is torchrun itself (its arguments, its agent), ending as one process does: an interrupted or
failed run ends in the ranks' own lines and one of its own, with the ranks' exit status, where
torchrun prints a traceback of its agent (`make run` uses it on GPUs)."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trainer_command(nproc: int = 0, entry: tuple[str, ...] = (str(ROOT / "train_gpt.py"),)) -> list[str]:
    """The command line; `entry` replaces train_gpt.py (tools/turns.py runs it wrapped, as `-m tools.turns`)."""
    launcher = ["-m", "tools.launch", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
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


def main(argv: list[str] | None = None) -> int:
    """torchrun with `argv`; a signal or a failed rank ends in one line and the ranks' exit status."""
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    args = torchrun.parse_args(argv)
    try:
        torchrun.run(args)  # not torchrun.main, whose wrapper prints the failure's table and traceback
    except SignalException as err:  # the agent passed it on to every rank, and each said so
        print(f"launch: {signal.Signals(err.sigval).name}: the ranks were stopped (each says how above)",
              file=sys.stderr, flush=True)
        return 128 + int(err.sigval)
    except ChildFailedError as err:  # each failed rank ended in its own line (rank 0 names bad settings)
        codes = {rank: f.exitcode if f.exitcode > 0 else 128 - f.exitcode for rank, f in err.failures.items()}  # -N: signal N
        by_code: dict[int, list[int]] = {}
        for rank, code in sorted(codes.items()):
            by_code.setdefault(code, []).append(rank)
        print("launch: " + "; ".join(f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} ended with exit "
                                     f"status {code}" for code, ranks in by_code.items()) + " (their lines are above)",
              file=sys.stderr, flush=True)
        first, _ = err.get_first_failure()  # the cause: the others may be the agent's SIGTERM after it
        return min(codes[first], 255)
    return 0


if __name__ == "__main__":
    sys.exit(main())
