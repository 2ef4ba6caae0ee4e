"""tools/loglines.py: every pattern against the committed logs of real runs of each kind."""
from __future__ import annotations

from pathlib import Path

import pytest

from tools import loglines, plots
from tools.envfile import ROOT

RECORD = ROOT / "records" / "track_cpu_embedded" / "2026-11-22_CurriculumControls_CPU" / "logs" / "1_step_matched_shuffled"
KINDS = {"baseline": "baseline-seed1337", "fresh": "v-seed1337", "carry": "v_carry-seed1337",
         "phases": "seq_len_warmup-seed1337"}


def lines_starting(text: str, prefix: str, containing: str = "") -> list[str]:
    """The straightforward count the patterns must agree with."""
    return [line for line in text.splitlines() if line.startswith(prefix) and containing in line]


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_line_of_a_real_log_is_read_whatever_the_arm(kind):
    text = (RECORD / f"{KINDS[kind]}.txt").read_text()
    train = loglines.parse("train", text)
    assert len(train) == len(lines_starting(text, "step:", " train_loss:")) > 10
    assert [int(t["step"]) for t in train] == sorted(int(t["step"]) for t in train)
    assert len(loglines.parse("val", text)) == len(lines_starting(text, "step:", " val_loss:")) >= 1
    curriculum = loglines.parse("curriculum", text)
    assert len(curriculum) == len(lines_starting(text, "curriculum step:"))
    assert (len(curriculum) > 0) == (kind in ("fresh", "carry"))
    if kind == "carry":  # the line the plots used to miss: carry writes its waits before data_wait_ms
        assert all(c["wait_mean"] is not None for c in curriculum)
        assert len(plots.curriculum_curve(type("Run", (), dict(log_text=text)))) == len(curriculum)
    final = loglines.parse("final_exact", text)
    assert len(final) == 1 and float(final[0]["bpb"]) > 0


def test_a_resumed_log_counts_from_its_last_resume_line():
    text = ("step:5/9 train_loss:4.0000 train_time:50ms step_avg:10.00ms\ncheckpoint: step:5 logs/r.ckpt\n"
            "step:6/9 train_loss:3.9000 train_time:60ms step_avg:10.00ms\n"
            "resume: from logs/r.ckpt at step:5 tokens:10,240 train_time:50ms (log lines ...)\n"
            "step:6/9 train_loss:3.9000 train_time:61ms step_avg:10.17ms\n")
    assert loglines.parse("checkpoint", text) == [dict(step="5", path="logs/r.ckpt")]
    assert loglines.parse("resume", text)[0]["tokens"] == "10,240"
    assert [t["ms"] for t in loglines.parse("train", loglines.after_last_resume(text))] == ["61"]
