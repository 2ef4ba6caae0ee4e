"""tools/submission.py: a folder that trains exactly as the repository does, counting less code."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import preloaded
from tests.conftest import ROOT, run_trainer, summary, trainer_env


def test_the_submission_trains_bit_for_bit_as_the_repository_and_counts_its_three_files(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, CURRICULUM="1", ITERATIONS="6", TRAIN_LOG_EVERY="1",
                      CURRICULUM_LOG_EVERY="2")
    out = tmp_path / "submission"
    made = preloaded.run(env, ROOT, module="tools.submission", args=(str(out),))
    assert made.returncode == 0, made.stderr[-3000:]
    files = [out / "train_gpt.py", out / "trainer" / "__init__.py", out / "curriculum" / "__init__.py"]
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(files)
    packed = sum(p.stat().st_size for p in files)
    assert f"{packed:>8,}  bytes of code in 3 files" in made.stdout
    runs = {}
    for where, run in (("tree", lambda e: run_trainer(e)),
                       ("submission", lambda e: preloaded.run(e, out, script=out / "train_gpt.py"))):
        e = env | dict(LOG_DIR=str(tmp_path / where))
        done = run(e)
        assert done.returncode == 0, done.stderr[-3000:]
        text = (Path(e["LOG_DIR"]) / "run.txt").read_text()
        runs[where] = dict(summary=summary(e), losses=re.findall(r"^step:\d+/6 train_loss:\S+", text, re.M),
                           curriculum=[re.sub(r" data_wait_ms:\S+", "", line)  # a time: the rest must agree
                                           for line in re.findall(r"^curriculum step:.*$", text, re.M)],
                           artifact=hashlib.sha256((Path(e["LOG_DIR"]) / "run.int6.ptz").read_bytes()).hexdigest())
    tree, sub = runs["tree"], runs["submission"]
    assert len(tree["losses"]) == 6 and tree["losses"] == sub["losses"]
    assert tree["curriculum"] and tree["curriculum"] == sub["curriculum"]
    assert tree["artifact"] == sub["artifact"]
    assert tree["summary"]["roundtrip_val_bpb"] == sub["summary"]["roundtrip_val_bpb"]
    assert sub["summary"]["code_bytes"] == packed < tree["summary"]["code_bytes"] / 2
    again = preloaded.run(env, ROOT, module="tools.submission", args=(str(out),))
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
