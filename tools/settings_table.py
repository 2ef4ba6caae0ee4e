"""docs/settings.md's tables, written from the declaration (trainer/settings.py's GROUPS).

    python -m tools.settings_table          # print the tables
    python -m tools.settings_table --write  # replace them in docs/settings.md, between the markers

tests/test_settings_table.py fails when the page and the declaration disagree.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from curriculum.environment import PARSERS
from curriculum.shards import write_atomic
from trainer.settings import GROUPS

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "settings.md"
BEGIN, END = "<!-- settings: begin (python -m tools.settings_table --write) -->", "<!-- settings: end -->"


def only_with(st) -> str:
    """Where a setting acts at all: set elsewhere, it is refused (it would be ignored)."""
    if not st.only_with:
        return ""
    said = [f"`{c[:-2]}` set" if c.endswith("!=") else f"`{c.replace('*', '…')}`" for c in st.only_with]
    return "; only with " + " or ".join(said)


def tables() -> str:
    out = []
    for group, settings in GROUPS.items():
        out += [f"### {group}", "", "| name | default | allowed | meaning |", "|---|---|---|---|"]
        out += [f"| `{st.name}` | {st.shown()} | {st.rule() or PARSERS[st.kind][1]}{only_with(st)} | {st.meaning} |"
                for st in settings]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def page_tables(text: str) -> str:
    """What the page holds between the markers."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"{PAGE}: the markers {BEGIN!r} and {END!r} are missing")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write(path: Path) -> None:
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    write_atomic(path, f"{head}{BEGIN}\n{tables()}{END}{tail}".encode())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the tables in docs/settings.md")
    args = parser.parse_args(argv)
    if args.write:
        write(PAGE)
    else:
        sys.stdout.write(tables())
    return 0


if __name__ == "__main__":
    sys.exit(main())
