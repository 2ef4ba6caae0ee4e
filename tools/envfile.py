"""Read a KEY=VALUE configuration file (configs/*.env) into a dict."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_env_file(path: str | Path) -> dict[str, str]:
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        out[key.strip()] = value.strip()
    return out


def main(argv: list[str]) -> int:
    """`python -m tools.envfile FILE COMMAND...`: run COMMAND with FILE's settings under the
    environment's (a variable already set wins, as everywhere in this project)."""
    import os
    import subprocess
    import sys
    if len(argv) < 2:
        print("usage: python -m tools.envfile FILE COMMAND...", file=sys.stderr)
        return 2
    return subprocess.call(argv[1:], env=read_env_file(argv[0]) | dict(os.environ))


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
