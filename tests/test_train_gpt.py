"""train_gpt.py: training, exact val_bpb, int6 export, distributed runs, compile, bad input."""
from __future__ import annotations

import glob
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

import train_gpt as tg
from curriculum.shards import HEADER_BYTES, open_shard
from tests.conftest import run_trainer, summary, trainer_env


def settings(dataset, tmp_path, **overrides):
    env = trainer_env(dataset, tmp_path, **overrides)
    return tg.read_settings(env)


def test_tiny_run_loss_falls_and_writes_both_logs(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path)
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    assert text.startswith(Path(tg.__file__).read_text()[:200])  # the script source comes first
    losses = [float(v) for v in re.findall(r"^step:\d+/30 train_loss:([\d.]+) train_time:\d+ms step_avg:[\d.]+ms$",
                                          text, re.M)]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    assert re.search(r"^step:30/30 val_loss:[\d.]+ val_bpb:[\d.]+ train_time:\d+ms step_avg:[\d.]+ms$", text, re.M)
    assert re.search(r"^final_int6_zstd_roundtrip val_loss:[\d.]+ val_bpb:[\d.]+ eval_time:\d+ms$", text, re.M)
    exact = re.search(r"^final_int6_zstd_roundtrip_exact val_loss:(\d+\.\d{8}) val_bpb:(\d+\.\d{8})$", text, re.M)
    assert re.search(r"^Total submission size int6\+zstd: \d+ bytes$", text, re.M)
    assert "swa:start step:" in text and "swa:applied snapshots:" in text
    s = summary(env)
    assert s["steps"] == 30 and s["tokens_seen"] == 30 * 2048
    assert s["roundtrip_val_bpb"] == pytest.approx(float(exact.group(2)), abs=1e-8)
    assert s["total_bytes"] == s["artifact_bytes"] + s["code_bytes"]
    assert s["artifact_bytes"] == (Path(env["LOG_DIR"]) / "run.int6.ptz").stat().st_size
    assert s["settings"]["NUM_LAYERS"] == 2 and s["curriculum"]["enabled"] is False
    assert s["val_tokens"] == 16384
    # the validation prefix is announced, never passed off as the whole split
    assert "validation 16,384 tokens (a prefix: VAL_MAX_TOKENS=16385)" in text


def test_counted_bytes_equal_utf8_length_of_decoded_documents(dataset):
    sp = spm.SentencePieceProcessor(model_file=dataset["tokenizer"])
    tokens = np.concatenate([np.asarray(open_shard(f)) for f in sorted(glob.glob(dataset["data_path"] + "/*val_*.bin"))])
    tables = tg.ByteTables.from_sentencepiece(dataset["tokenizer"], dataset["vocab_size"])
    t = torch.from_numpy(tokens.astype(np.int64))
    counted = int(tables.count(t[:-1], t[1:]).sum())
    starts = np.flatnonzero(tokens == 1).tolist() + [len(tokens)]
    docs = [tokens[a + 1:b].tolist() for a, b in zip(starts, starts[1:])]
    assert len(docs) > 100 and starts[0] == 0
    assert 3 not in tokens  # no unknown pieces (byte fallback covers every character)
    decoded = sum(len(text.encode("utf-8")) for text in sp.decode(docs))
    assert counted == decoded


def test_int6_error_is_within_half_a_step_per_row():
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different scales
    q, scale = tg.quantize_int6(w)
    assert q.dtype == torch.int8 and int(q.min()) >= -32 and int(q.max()) <= 31
    err = (tg.dequantize_int6(q, scale) - w).abs()
    step = scale.float()[:, None]
    # rounding to the nearest step: half a step, plus the fp16 rounding of the scale itself
    bound = 0.5 * step + w.abs() * 2.0 ** -11
    assert bool((err <= bound).all())
    assert float(err.max()) > 0  # it really quantises


def test_exported_artifact_scores_like_dequantised_weights(dataset, tmp_path):
    s = settings(dataset, tmp_path, VAL_MAX_TOKENS="8193")
    torch.manual_seed(0)
    model = tg.GPT(s)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    val = tg.load_validation_tokens(s.val_files, s.train_seq_len, s.val_max_tokens)
    tables = tg.ByteTables.from_sentencepiece(s.tokenizer_path, s.vocab_size)
    ref = model.state_dict()
    packed = tg.quantize_state(ref)
    model.load_state_dict(tg.dequantize_state(packed, ref))
    in_memory = tg.evaluate(model, s, val, tables, torch.device("cpu"))
    path = tmp_path / "m.ptz"
    tg.write_atomic(path, tg.serialize_artifact(packed))
    model2 = tg.GPT(s)
    model2.load_state_dict(tg.dequantize_state(tg.load_artifact(path.read_bytes()), ref))
    assert tg.evaluate(model2, s, val, tables, torch.device("cpu")) == in_memory
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind
    # matrices are int6, the embedding stays fp16
    assert isinstance(packed["blocks.0.attn.c_q.weight"], dict) and packed["tok_emb.weight"].dtype == torch.float16


def test_lr_multiplier_follows_progress_like_the_baseline_warmdown(dataset, tmp_path):
    s = settings(dataset, tmp_path, ITERATIONS="100", WARMDOWN_ITERS="20")
    for step in (0, 50, 80, 90, 99):
        p = tg.training_progress(s, step, 0.0)
        baseline = 1.0 if step < 80 else (100 - step) / 20
        assert tg.lr_multiplier(p, tg.warmdown_fraction(s, step, 0.0)) == pytest.approx(baseline)
    capped = settings(dataset, tmp_path, MAX_WALLCLOCK_SECONDS="10", WARMDOWN_ITERS="20")
    # 100 steps at 50 ms: the warmdown is 20 x 50 ms = 1 s, so it starts at 9 s
    assert tg.lr_multiplier(tg.training_progress(capped, 100, 5000.0), tg.warmdown_fraction(capped, 100, 5000.0)) == 1.0
    assert tg.lr_multiplier(tg.training_progress(capped, 190, 9500.0),
                            tg.warmdown_fraction(capped, 190, 9500.0)) == pytest.approx(0.5, rel=0.06)


def test_torchrun_two_ranks_train_on_disjoint_tokens(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, ITERATIONS="6", GRAD_ACCUM_STEPS="1", SWA_ENABLED="0")
    out = run_trainer(env, nproc=2)
    assert out.returncode == 0, out.stderr[-3000:]
    s = summary(env)
    assert s["world_size"] == 2 and s["steps"] == 6
    spans = s["data"]["rank_first_spans"]
    assert len(spans) == 2 and all(len(r) == 6 for r in spans)
    a = [range(x, y) for x, y in spans[0]]
    b = [range(x, y) for x, y in spans[1]]
    assert all(not set(r0) & set(r1) for r0 in a for r1 in b)
    assert s["data"]["micro_batches"] == 6
    assert "final_int6_zstd_roundtrip_exact" in (Path(env["LOG_DIR"]) / "run.txt").read_text()


def test_compiled_path_runs_on_cpu_with_the_curriculum(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, TORCH_COMPILE="1", CURRICULUM="1", ITERATIONS="8",
                      CURRICULUM_LOG_EVERY="4", TRAIN_LOG_EVERY="4")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    assert "compile 1" in text
    assert len(re.findall(r"^curriculum step:\d+ progress:[\d.]+ target:[\d.]+ kept_score_mean:[\d.]+ "
                          r"kept_score_min:[\d.]+ kept_score_max:[\d.]+ pool_score_mean:[\d.]+ data_wait_ms:[\d.]+$",
                          text, re.M)) == 2
    s = summary(env)
    assert s["curriculum"]["enabled"] and s["data"]["sequences_read"] == 2 * s["data"]["sequences_kept"]
    assert math.isfinite(s["roundtrip_val_bpb"])


def test_bad_settings_are_all_reported_at_once_without_traceback(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, NUM_HEADS="5", TRAIN_BATCH_TOKENS="1000", DEVICE="tpu",
                      VOCAB_SIZE="2048", CURRICULUM_SCHEDULE="zigzag", CURRICULUM_OVERSAMPLE="0.5",
                      SEED="abc", TRAIN_FILES=str(tmp_path / "nothing_*.bin"))
    out = run_trainer(env)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    for expected in ("NUM_HEADS=5: must divide MODEL_DIM=64", "TRAIN_BATCH_TOKENS=1000: must be a multiple",
                     "DEVICE='tpu': must be one of auto, cpu, cuda", "VOCAB_SIZE=2048: the tokenizer",
                     "CURRICULUM_SCHEDULE='zigzag'", "CURRICULUM_OVERSAMPLE=0.5", "SEED='abc': must be an integer",
                     "TRAIN_FILES=", "no shard matches"):
        assert expected in out.stderr, expected
    assert not (tmp_path / "logs").exists()  # nothing written before the settings are valid


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:10], "shorter than the 1024-byte header"),
    (lambda b: b"\x00\x00\x00\x00" + b[4:], "magic 0 is not 20240520"),
    (lambda b: b[:4] + (7).to_bytes(4, "little") + b[8:], "version 7 is not 1"),
    (lambda b: b[:-2], "but the file has"),
])
def test_corrupt_shards_are_named_in_the_error(dataset, tmp_path, damage, message):
    shards = tmp_path / "shards"
    shards.mkdir()
    for f in glob.glob(dataset["data_path"] + "/*val_*.bin"):
        shutil.copy(f, shards)
    src = sorted(glob.glob(dataset["data_path"] + "/*train_*.bin"))[-1]
    bad = shards / "bad_train_000000.bin"
    bad.write_bytes(damage(Path(src).read_bytes()))
    env = trainer_env(dataset, tmp_path, DATA_PATH=str(shards))
    out = run_trainer(env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(bad) in out.stderr and message in out.stderr
