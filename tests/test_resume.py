"""train_gpt.py's CHECKPOINT_EVERY and RESUME: a run killed with SIGKILL after a checkpoint and
resumed ends with the uninterrupted run's per-step losses and artifact bytes."""
from __future__ import annotations

import hashlib
import re
import signal
import time
from pathlib import Path

import pytest

import preloaded
from tests.conftest import ROOT, run_trainer, summary, trainer_env
from tools import loglines

STEP_LOSS = re.compile(r"^step:(\d+)/\d+ train_loss:([\d.]+) ", re.M)


def losses(text: str) -> dict[int, str]:
    """Each step's logged train loss, as printed (4 decimals), the last line of a step winning."""
    return {int(step): loss for step, loss in STEP_LOSS.findall(text)}


def artifact_sha256(env: dict) -> str:
    return hashlib.sha256((Path(env["LOG_DIR"]) / f"{env['RUN_ID']}.int6.ptz").read_bytes()).hexdigest()


def killed_after_a_checkpoint(env: dict, nproc: int) -> None:
    """Start the run, SIGKILL it (every rank of it) as soon as its log names a checkpoint."""
    log = Path(env["LOG_DIR"]) / f"{env['RUN_ID']}.txt"
    job = preloaded.start(env, ROOT, script=ROOT / "train_gpt.py", nproc=nproc)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None:
        if log.exists() and loglines.parse("checkpoint", log.read_text()):
            job.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    job.wait()
    assert job.returncode == -signal.SIGKILL, f"the run was not killed mid-way: {job.result().stderr[-2000:]}"
    assert not loglines.parse("final_exact", log.read_text())


# The shuffled order's state is resumed in the two-rank case, the curriculum off in the phases
# file's second phase: each case a different state to carry over, none twice.
CASES = {
    "one rank, phases (carry, then the curriculum off at a shorter seq_len), shuffled": (0, dict(DATA_ORDER="shuffled")),
    "one rank, fresh pool, sequential": (0, dict(CURRICULUM="1", CURRICULUM_POOL="fresh")),
    "two ranks (gloo), carry pool, shuffled": (2, dict(CURRICULUM="1", CURRICULUM_POOL="carry", DATA_ORDER="shuffled")),
    "one rank, packed documents, carry pool": (0, dict(CURRICULUM="1", CURRICULUM_POOL="carry", DATA_LAYOUT="packed",
                                                        ATTENTION_MASK="document")),
}


def phases_file(tmp_path: Path, dataset: dict) -> str:
    path = tmp_path / "phases.toml"
    path.write_text(f'''
[datasets.docs]
files = "{dataset["folders"]["embedded_docs_sp1024"]}/*train_*.bin"
[datasets.code]
files = "{dataset["folders"]["embedded_code_sp1024"]}/*train_*.bin"
[[phase]]
name = "carry"
steps = 10
mixture = {{ docs = 0.6, code = 0.4 }}
curriculum = true
pool = "carry"
[[phase]]
name = "short"
seq_len = 32
mixture = {{ docs = 0.3, code = 0.7 }}
''')
    return str(path)


@pytest.mark.parametrize("case", list(CASES))
def test_a_killed_run_resumed_from_its_checkpoint_ends_bit_for_bit_as_the_uninterrupted_one(dataset, tmp_path, case):
    nproc, overrides = CASES[case]
    if "phases" in case:
        overrides = overrides | dict(CURRICULUM_PHASES=phases_file(tmp_path, dataset))
    common = dict(ITERATIONS="24", WARMDOWN_ITERS="10", SWA_EVERY="3", CHECKPOINT_EVERY="5", **overrides)
    if nproc:
        common["GRAD_ACCUM_STEPS"] = "1"
    whole = trainer_env(dataset, tmp_path, RUN_ID="whole", **common)
    out = run_trainer(whole, nproc=nproc)
    assert out.returncode == 0, out.stderr[-3000:]

    piece = trainer_env(dataset, tmp_path, RUN_ID="piece", **common)
    killed_after_a_checkpoint(piece, nproc)
    checkpoint = Path(piece["LOG_DIR"]) / "piece.ckpt"
    resumed = dict(piece, RESUME=str(checkpoint))
    out = run_trainer(resumed, nproc=nproc)
    assert out.returncode == 0, out.stderr[-3000:]

    text = (Path(piece["LOG_DIR"]) / "piece.txt").read_text()
    at = loglines.parse("resume", text)
    assert len(at) == 1, "the log does not say where the run resumed"
    start = int(at[0]["step"])
    assert start >= 5 and start % 5 == 0 and start < 24
    expected = losses((Path(whole["LOG_DIR"]) / "whole.txt").read_text())
    after = losses(loglines.after_last_resume(text))
    assert sorted(after) == list(range(start + 1, 25))
    assert after == {k: v for k, v in expected.items() if k > start}
    assert artifact_sha256(resumed) == artifact_sha256(whole)
    a, b = summary(whole), summary(resumed)
    assert b["steps"] == a["steps"] == 24 and b["tokens_seen"] == a["tokens_seen"]
    assert b["data"]["tokens_read"] == a["data"]["tokens_read"]
    assert b["roundtrip_val_bpb"] == a["roundtrip_val_bpb"]
    if "phases" in case:
        assert [(p["name"], p["steps"], p["trained"]) for p in b["phases"]] == \
            [(p["name"], p["steps"], p["trained"]) for p in a["phases"]]


def test_a_checkpoint_of_other_settings_or_no_checkpoint_is_refused_before_training(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, ITERATIONS="6", CHECKPOINT_EVERY="3", RUN_ID="first")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    checkpoint = Path(env["LOG_DIR"]) / "first.ckpt"
    other = trainer_env(dataset, tmp_path, ITERATIONS="6", MATRIX_LR="0.01", SEED="5", RUN_ID="second",
                        RESUME=str(checkpoint))
    out = run_trainer(other)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "the checkpoint is of another run" in out.stderr
    assert "MATRIX_LR: checkpoint 0.04, this run 0.01" in out.stderr and "SEED: checkpoint 1337, this run 5" in out.stderr
    assert "step:1/" not in (Path(env["LOG_DIR"]) / "second.txt").read_text()

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    out = run_trainer(trainer_env(dataset, tmp_path, RESUME=str(junk), RUN_ID="third"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "not a checkpoint of this trainer" in out.stderr
    out = run_trainer(trainer_env(dataset, tmp_path, RESUME=str(tmp_path / "missing.ckpt"), RUN_ID="fourth"))
    assert out.returncode == 2 and "RESUME=" in out.stderr and "no such file" in out.stderr


def test_a_damaged_checkpoint_is_named_before_anything_is_loaded_and_stale_temporaries_go(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, ITERATIONS="6", CHECKPOINT_EVERY="3", RUN_ID="first")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    checkpoint = Path(env["LOG_DIR"]) / "first.ckpt"
    blob = checkpoint.read_bytes()
    middle = len(blob) // 2
    changed = tmp_path / "changed.ckpt"
    changed.write_bytes(blob[:middle] + bytes([blob[middle] ^ 0xFF]) + blob[middle + 1:])
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(blob[:middle])
    for damaged in (changed, cut):
        out = run_trainer(trainer_env(dataset, tmp_path, ITERATIONS="6", RESUME=str(damaged), RUN_ID=damaged.stem,
                                      OVERWRITE="1"))
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert f"RESUME='{damaged}': the checkpoint is damaged" in out.stderr
    # a run killed while writing its checkpoint left a temporary beside it: its resume removes it
    stale = checkpoint.with_name(f".{checkpoint.name}.tmp12345")
    stale.write_bytes(blob[:100])
    again = trainer_env(dataset, tmp_path, ITERATIONS="6", CHECKPOINT_EVERY="3", RUN_ID="first", RESUME=str(checkpoint))
    out = run_trainer(again)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not stale.exists()
    assert f"resume: removed {stale}" in (Path(env["LOG_DIR"]) / "first.txt").read_text()
