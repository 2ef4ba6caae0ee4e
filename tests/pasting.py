"""The README's lines for a user's script, pasted where their comments say: shared by the tests
that paste them into a March-era script (test_plugin_in_a_script.py) and into a late record's
(test_late_record_script.py)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# each of our loaders, and the script's loader it replaces
REPLACES = {"CurriculumTokenLoader": "DistributedTokenLoader", "CurriculumDocumentLoader": "DocumentPackingLoader",
            "CurriculumSequenceLoader": "ShuffledSequenceLoader"}


def readme_lines(heading: str) -> list[str]:
    """The code lines of the README's first python block under `heading`, comments dropped."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].rstrip() for line in block.splitlines() if line.strip()]


def paste(script: str, lines: list[str], anchors: dict[str, str]) -> tuple[str, dict[str, int]]:
    """Each line where its comment says: an import after the script's imports, a loader over
    every construction of the loader it replaces, any other line after the script's line that
    holds `anchors[its start]`. Also how many constructions each loader replaced."""
    out, replaced = script.splitlines(), {}
    for code in lines:
        if code.startswith("from "):
            last_import = max(i for i, line in enumerate(out) if re.match(r"(import|from) \S+", line))
            out.insert(last_import + 1, code)
            continue
        ours = next((name for name in REPLACES if f"{name}(" in code and " = " in code), None)
        if ours is not None:
            hits = [i for i, line in enumerate(out) if re.match(rf"\s*\w+ = {REPLACES[ours]}\(", line)]
            for i in hits:
                out[i] = re.match(r"\s*", out[i]).group(0) + code
            replaced[ours] = len(hits)
            continue
        key = next(k for k in anchors if code.startswith(k))
        i = next(i for i, line in enumerate(out) if anchors[key] in line)
        out.insert(i + 1, re.match(r"\s*", out[i]).group(0) + code)
    return "\n".join(out) + "\n", replaced
