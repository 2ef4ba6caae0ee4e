"""curriculum/pack.py: minified modules do what the originals do, and the packed package serves them."""
from __future__ import annotations

import pytest

from curriculum.pack import minify, packed_init, write_folder

SOURCE = '''"""A module docstring."""
from __future__ import annotations
from dataclasses import dataclass, fields


@dataclass
class Window:
    """Kept as a class, its docstring dropped."""
    start: int  # a field: its annotation is what makes it one
    width: float = 0.5


def widths(windows: list[Window], scale: float = 2.0) -> list[float]:
    """Each window's width, scaled."""
    out = []
    for w in windows:
        if w.width > 0:
            # a comment, gone
            out.append(w.width * scale)
    return out


def only_a_docstring():
    """Nothing else."""
'''


def test_minify_drops_what_does_nothing_and_keeps_what_runs():
    text = minify(SOURCE)
    assert '"""' not in text and "#" not in text and "-> list" not in text and "scale: float" not in text
    assert "start: int" in text and "\n  " in text and "\n    " not in text  # one space a level
    a, b = {}, {}
    exec(compile(SOURCE, "original", "exec"), a)
    exec(compile(text, "minified", "exec"), b)
    ws = [b["Window"](1, 0.25), b["Window"](2, 0.0)]
    assert b["widths"](ws) == a["widths"]([a["Window"](1, 0.25), a["Window"](2, 0.0)]) == [0.5]
    assert [f.name for f in b["fields"](b["Window"])] == ["start", "width"]
    assert b["only_a_docstring"]() is None


def test_packing_needs_the_packages_init(tmp_path):
    (tmp_path / "loader.py").write_text("X = 1\n")
    with pytest.raises(ValueError, match="__init__.py"):
        packed_init([tmp_path / "loader.py"])


def test_a_folder_is_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out" / "submission"
    written = write_folder(target, {"train_gpt.py": "x = 1\n", "curriculum/__init__.py": "y = 2\n"})
    assert written == [target / "train_gpt.py", target / "curriculum" / "__init__.py"]
    assert (target / "curriculum" / "__init__.py").read_text() == "y = 2\n" and target.stat().st_mode & 0o777 == 0o755
    with pytest.raises(FileExistsError, match="exists"):
        write_folder(target, {"a.py": ""})
    broken = tmp_path / "out" / "broken"
    with pytest.raises(UnicodeEncodeError):  # the second file cannot be written: nothing of the folder stays
        write_folder(broken, {"a.py": "ok\n", "b.py": "\udc80"})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["submission"]
    deep = tmp_path / "new" / "deeper" / "broken"  # folders made for it are removed with it
    with pytest.raises(UnicodeEncodeError):
        write_folder(deep, {"a.py": "ok\n", "b.py": "\udc80"})
    assert not (tmp_path / "new").exists()
