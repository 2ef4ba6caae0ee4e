"""curriculum/artifact.py: the budget the challenge's scripts read, and the files of this package a
user's artifact carries: only those imported, counted in bytes and hashed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from curriculum.artifact import read_budget

ROOT = Path(__file__).resolve().parents[1]


def test_the_budget_defaults_as_the_challenge_s_scripts_and_every_bad_value_is_named():
    assert read_budget({}) == (600.0, 20000, [])
    assert read_budget({"MAX_WALLCLOCK_SECONDS": "0", "ITERATIONS": "7"}) == (0.0, 7, [])
    cap, steps, problems = read_budget({"MAX_WALLCLOCK_SECONDS": "nan", "ITERATIONS": "0"})
    assert (cap, steps) == (600.0, 20000) and problems == [
        "MAX_WALLCLOCK_SECONDS='nan': must be a number of seconds >= 0 (0: no cap)",
        "ITERATIONS='0': must be a whole number >= 1"]


def test_the_artifact_carries_the_imported_files_only_and_counts_them():
    probe = ("import curriculum.plugin, curriculum.artifact as a, json; "
             "print(json.dumps([[str(p.relative_to(a.PACKAGE)) for p in a.loaded_modules()], a.code_bytes(), "
             "a.code_sha256()]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    import json
    names, size, sha = json.loads(out)
    assert {"__init__.py", "plugin.py", "artifact.py"} <= set(names)
    assert "index_build.py" not in names and "mixing.py" not in names  # never imported by a default run
    assert size == sum((ROOT / "curriculum" / n).stat().st_size for n in names) and len(sha) == 64
