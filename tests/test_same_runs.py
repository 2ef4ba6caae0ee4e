"""tools/same_runs.py: digests of real runs that two processes agree on, and a comparison that
names the configuration and the part that changed."""
from __future__ import annotations

import json

from tools import same_runs


def test_the_same_code_gives_the_same_digests_and_a_changed_one_is_named(dataset, tmp_path, capsys):
    first = tmp_path / "first.json"
    assert same_runs.main([str(first), "--only", "plugin"]) == 0
    digests = json.loads(first.read_text())
    assert set(digests) == {"plugin"} and len(digests["plugin"]["batches"]) == 16
    assert same_runs.main([str(tmp_path / "again.json"), "--only", "plugin", "--compare", str(first)]) == 0
    assert "same: every digest equal" in capsys.readouterr().out
    digests["plugin"]["batches"] = "0" * 16  # as if another commit drew other batches
    other = tmp_path / "other.json"
    other.write_text(json.dumps(digests))
    assert same_runs.main([str(tmp_path / "third.json"), "--only", "plugin", "--compare", str(other)]) == 1
    out = capsys.readouterr().out
    assert "differs: plugin batches: 0000000000000000 -> " in out and "1 parts differ" in out
