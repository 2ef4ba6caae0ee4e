"""What a user's artifact carries of this package, and the budget the challenge's scripts read:
shared by the March-era loader (curriculum/plugin.py) and the late records' (record_loaders.py)."""
from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Mapping

# The challenge's scripts read these two for their own progress; the loader reads them the same way
CHALLENGE_DEFAULTS = {"MAX_WALLCLOCK_SECONDS": 600.0, "ITERATIONS": 20000}


def read_budget(environ: Mapping[str, str]) -> tuple[float, int, list[str]]:
    """(MAX_WALLCLOCK_SECONDS, ITERATIONS, problems), as the challenge's scripts default them."""
    problems, values = [], {}
    for name, default in CHALLENGE_DEFAULTS.items():
        raw = (environ.get(name) or "").strip()
        values[name] = default
        if not raw:
            continue
        try:
            value = float(raw) if isinstance(default, float) else int(raw)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < (0 if isinstance(default, float) else 1):
            problems.append(f"{name}={raw!r}: must be " + ("a number of seconds >= 0 (0: no cap)"
                                                          if isinstance(default, float) else "a whole number >= 1"))
        else:
            values[name] = value
    return values["MAX_WALLCLOCK_SECONDS"], values["ITERATIONS"], problems


PACKAGE = Path(__file__).resolve().parent


def loaded_modules() -> list[Path]:
    """The files of this package that are imported now (this one among them, even when it runs as
    `python -m curriculum.plugin`): the code a user's artifact carries."""
    files = {Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    files.add(PACKAGE / "plugin.py")
    return sorted(p for p in files if p.is_relative_to(PACKAGE) and p.is_file())  # packed: __init__.py alone


def code_bytes() -> int:
    """Bytes of the imported modules of this package (add them to the script's `Code size:`)."""
    return sum(p.stat().st_size for p in loaded_modules())


def code_sha256() -> str:
    h = hashlib.sha256()
    for path in loaded_modules():
        h.update(f"{path.relative_to(PACKAGE).as_posix()}\0".encode() + path.read_bytes())
    return h.hexdigest()
