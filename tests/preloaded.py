"""Processes for the tests, forked from an interpreter that has already imported torch.

A fresh `python train_gpt.py` spends about 4.5 s of a tiny test run on importing torch and
torch._dynamo (torch.optim imports the latter on its first parameter group), on a 2-core CPU.
The tests start dozens of such runs, so each pytest worker starts one multiprocessing fork
server with those imports done, and every run here is a child forked from it: still a process
of its own, with the run's environment, working directory, argv, sys.path, standard streams,
signals and exit status, but without the imports; a two-rank run is two such children given
torchrun's variables. One torchrun run (test_train_gpt.py), the probe's cases, the process rings
of tools.turns and the bench still start fresh interpreters, so that path stays tested too.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# what every trainer run imports and costs most to import; nothing of this repository, so
# that each run imports the repository's code afresh from its own sys.path
PRELOAD = ["torch", "torch._dynamo", "torch.distributed", "numpy", "sentencepiece"]
_context = None
ROOT = Path(__file__).resolve().parents[1]


def _fork_server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _interpreter_path(first: str, env: dict) -> list[str]:
    """sys.path as `python <first>` would have it: the script's folder (or the working directory
    for -m), PYTHONPATH, then the interpreter's own folders; not the pytest worker's additions."""
    own = [p for p in sys.path if p.startswith((sys.prefix, sys.base_prefix, sys.exec_prefix))]
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [first, *extra, *own]


def _child(target: tuple[str, str], args: tuple[str, ...], env: dict, cwd: str, out_path: str, err_path: str) -> None:
    """In the forked child: the run's streams, environment, folder and path, then the script or
    module as __main__. Its SystemExit becomes the exit status, as in a fresh interpreter."""
    for fd, path in ((1, out_path), (2, err_path)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    kind, name = target
    sys.argv = [name, *args]
    if kind == "script":
        sys.path[:] = _interpreter_path(str(Path(name).resolve().parent), env)
        runpy.run_path(name, run_name="__main__")
    else:
        sys.path[:] = _interpreter_path(cwd, env)
        runpy.run_module(name, run_name="__main__", alter_sys=True)


class Job:
    """A started run of one or more ranks, as subprocess.Popen is for one process: poll, wait,
    send_signal, kill; `result()` once it has ended. As torchrun does, the first rank to fail has
    the others stopped (SIGTERM); the outputs are the ranks' in rank order."""

    def __init__(self, command: list[str], target: tuple[str, str], args: tuple[str, ...], env: dict, cwd: Path,
                 nproc: int):
        self.command, self.returncode, self._failed = command, None, False
        ranks = [{}] if not nproc else [dict(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(nproc),
                                             LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1")
                                        for r in range(nproc)]
        port = str(free_port())
        self._tmp = tempfile.TemporaryDirectory(prefix="preloaded_")
        self._paths = [(os.path.join(self._tmp.name, f"stdout{k}"), os.path.join(self._tmp.name, f"stderr{k}"))
                       for k in range(len(ranks))]
        self.processes = [_fork_server().Process(target=_child, args=(
            target, tuple(args), dict(env) | extra | (dict(MASTER_PORT=port) if nproc else {}), str(cwd), *paths))
            for extra, paths in zip(ranks, self._paths)]
        for p in self.processes:
            p.start()
        self.pids = [p.pid for p in self.processes]

    def poll(self) -> int | None:
        if self.returncode is None:
            failed = next((p for p in self.processes if p.exitcode not in (None, 0)), None)
            if failed is not None and not self._failed:
                self._failed = True
                self.send_signal(signal.SIGTERM)
            if all(p.exitcode is not None for p in self.processes):
                self.returncode = (failed or self.processes[0]).exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None if it is still running after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            multiprocessing.connection.wait([p.sentinel for p in self.processes if p.exitcode is None],
                                            timeout=0.5 if left is None else min(0.5, left))
        return self.returncode

    def send_signal(self, signum: int) -> None:
        for p in self.processes:
            if p.exitcode is None:
                os.kill(p.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        self.wait()

    def result(self) -> subprocess.CompletedProcess:
        """Its outputs once it has ended (the temporary files are then removed)."""
        assert self.returncode is not None, "the run has not ended"
        read = lambda path: Path(path).read_text(errors="replace") if os.path.exists(path) else ""
        stdout, stderr = ("".join(read(p[i]) for p in self._paths) for i in (0, 1))
        self._tmp.cleanup()
        return subprocess.CompletedProcess(self.command, self.returncode, stdout, stderr)


def start(env: dict, cwd: Path, script: Path | None = None, module: str | None = None, args: tuple[str, ...] = (),
          nproc: int = 0) -> Job:
    """Start `python script` (or `python -m module`) with `args`; with `nproc`, that many ranks of
    one gloo job, given the variables torchrun gives (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT)."""
    assert (script is None) != (module is None), "give a script or a module"
    target = ("script", str(script)) if script is not None else ("module", module)
    command = [sys.executable, *([str(script)] if script is not None else ["-m", module]), *args]
    return Job(command, target, tuple(args), env, cwd, nproc)


def run(env: dict, cwd: Path, script: Path | None = None, module: str | None = None, args: tuple[str, ...] = (),
        timeout: float = 600, nproc: int = 0) -> subprocess.CompletedProcess:
    """start(...) to the end; like subprocess.run with capture_output=True and text=True. A run past
    `timeout` is killed and TimeoutExpired raised."""
    job = start(env, cwd, script, module, args, nproc)
    if job.wait(timeout) is None:
        job.kill()
        done = job.result()
        raise subprocess.TimeoutExpired(job.command, timeout, output=done.stdout, stderr=done.stderr)
    return job.result()


def run_like_launch(env: dict, nproc: int = 0, entry=None, **kwargs) -> subprocess.CompletedProcess:
    """tools.launch.run_trainer for a tool that a test runs in-process (the test monkeypatches it
    in): the trainer forked from here, its output captured as text whatever `kwargs` ask."""
    assert entry is None, "only train_gpt.py itself"
    done = run(env, ROOT, script=ROOT / "train_gpt.py", timeout=kwargs.get("timeout", 600), nproc=nproc)
    if kwargs.get("stderr") == subprocess.STDOUT:
        done.stdout, done.stderr = done.stdout + done.stderr, None
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
