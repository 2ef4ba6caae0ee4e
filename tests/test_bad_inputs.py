"""The probe (tools/bad_inputs.py): one fast case of each surface, so that none regresses; and
the probe's judge itself, which must tell each kind of failure apart."""
from __future__ import annotations

from pathlib import Path

import pytest

from tools import bad_inputs as probe


SAMPLE = ("NUM_HEADS=0", "an index order with no index", "a mix without datasets",
          "sidecar starts out of order", "a phase after until_progress = 1", "compare: a .json that is a folder",
          "experiment: a NaN budget", "index: every bad argument", "a diverged run", "RANK beyond WORLD_SIZE",
          "TRAIN_FILES matching the validation shard", "a sidecar without its shard's hash",
          "a shard edited at its size after its index", "index: --out in a missing folder",
          "a copy of the validation shard among the training shards", "a model beyond ulimit -v",
          "a phase beyond the memory check", "plugin: --copy-to on a full disk")


@pytest.mark.parametrize("name", SAMPLE)
def test_a_fast_case_of_each_surface_ends_in_a_clear_message(dataset, name):
    verdicts = probe.probe(fast_only=True, only=name, log=lambda line: None)
    assert [v.case.name for v in verdicts] == [name]
    assert verdicts[0].kind == "ok", verdicts[0].detail


def test_the_judge_tells_every_kind_apart(tmp_path):
    case = probe.Case("x", "test", None, ("named.bin",))
    judge = lambda rc, text: probe.judge(case, probe.Outcome(rc, text, 1.0), tmp_path).kind
    assert judge(2, "train_gpt.py: named.bin is broken") == "ok"
    assert judge(None, "") == "hang"
    assert judge(1, "Traceback (most recent call last):\n  ...\nValueError: x") == "traceback"
    assert judge(-7, "") == "crash"
    assert judge(0, "named.bin") == "silent"
    assert judge(2, "something is wrong") == "silent"
    (tmp_path / ".named.bin.tmp123").write_text("")
    assert judge(2, "named.bin") == "half-written"


def test_every_case_is_named_once():
    names = [c.name for c in probe.CASES]
    assert len(names) == len(set(names)) and len(names) >= 40
