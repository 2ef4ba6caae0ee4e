"""The run's log: one writer per RUN_ID (a lock in LOG_DIR), every line on the console and in
`<LOG_DIR>/<RUN_ID>.txt`, and the line that ends a failed run written last into it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from trainer.settings import Settings, SettingsError


LOG_PATH: list[Path] = []
HELD: list = []  # (the lock file, its open handle) of the RUN_ID this process writes  # the log this process writes, once it has begun: its last line names what ended it


class Logger:
    def __init__(self, s: Settings):
        self.master = s.rank == 0
        self.path = Path(s.log_dir) / f"{s.run_id}.txt"
        if self.master:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.lock = hold_run_name(self.path.parent, s.run_id)
            self.file = open(self.path, "a" if s.resume else "w")  # a resumed run goes on in its log
            LOG_PATH.append(self.path)

    def __call__(self, msg: str, console: bool = True) -> None:
        if not self.master:
            return
        if console:
            print(msg, flush=True)
        try:
            self.file.write(msg + "\n")
            self.file.flush()
        except OSError as err:  # a full disk: name the log, so the message says which file
            raise OSError(err.errno, err.strerror, str(self.path)) from None


def hold_run_name(folder: Path, run_id: str):
    """One run at a time writes a RUN_ID's logs: an exclusive lock on `.<RUN_ID>.lock` in LOG_DIR,
    held for the process's life (the kernel drops it however the process ends, kill -9 too)."""
    import fcntl
    path = folder / f".{run_id}.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise SettingsError(f"RUN_ID={run_id!r}: another run ({holder}) is writing {folder / run_id}.txt now; choose "
                            f"another RUN_ID, or wait for that run to end") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    HELD.append((path, handle))
    return handle


def release_run_name() -> None:
    """The lock file removed as the run ends, however it ends but kill -9 (then the kernel has
    released the lock, and the next run of the RUN_ID takes the file over)."""
    while HELD:
        path, handle = HELD.pop()
        path.unlink(missing_ok=True)
        handle.close()


def say_and_log(line: str) -> None:
    """The one line that ends a failed run: on stderr, and as the last line of its log when it began one."""
    sys.stderr.write(line + "\n")  # one write: the lines of ranks sharing a terminal do not run together
    sys.stderr.flush()
    for path in LOG_PATH:
        try:
            with open(path, "a") as f:
                f.write(f"error: {line}\n")
        except OSError:
            pass  # a full disk: stderr has it
