"""Processes for the tests, forked from an interpreter that has already imported torch.

A fresh `python train_gpt.py` spends about 4.5 s of a tiny test run on importing torch and
torch._dynamo (torch.optim imports the latter on its first parameter group), on a 2-core CPU.
The tests start some sixty such runs, so each pytest worker starts one multiprocessing fork
server with those imports done, and every run here is a child forked from it: still a process
of its own, with the run's environment, working directory, argv, sys.path, standard streams and
exit status, but without the imports. Runs through torchrun, and the tools that launch the
trainer themselves (tools.experiment, tools.bench, tools.turns), still start fresh interpreters,
so that path stays tested too.
"""
from __future__ import annotations

import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

# what every trainer run imports and costs most to import; nothing of this repository, so
# that each run imports the repository's code afresh from its own sys.path
PRELOAD = ["torch", "torch._dynamo", "torch.distributed", "numpy", "sentencepiece"]
_context = None


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


def run(env: dict, cwd: Path, script: Path | None = None, module: str | None = None, args: tuple[str, ...] = (),
        timeout: float = 600) -> subprocess.CompletedProcess:
    """`python script` (or `python -m module`) with `args`, to the end; like subprocess.run with
    capture_output=True and text=True. A run past `timeout` is killed and TimeoutExpired raised."""
    assert (script is None) != (module is None), "give a script or a module"
    target = ("script", str(script)) if script is not None else ("module", module)
    command = [sys.executable, *([str(script)] if script is not None else ["-m", module]), *args]
    with tempfile.TemporaryDirectory(prefix="preloaded_") as tmp:
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        process = _fork_server().Process(target=_child, args=(target, tuple(args), dict(env), str(cwd),
                                                                         out_path, err_path))
        process.start()
        process.join(timeout)
        timed_out = process.exitcode is None
        if timed_out:
            process.kill()
            process.join()
        read = lambda p: Path(p).read_text(errors="replace") if os.path.exists(p) else ""
        stdout, stderr = read(out_path), read(err_path)
    if timed_out:
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(command, process.exitcode, stdout, stderr)

