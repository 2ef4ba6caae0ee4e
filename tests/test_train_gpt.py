"""train_gpt.py: training, exact val_bpb, int6 export, distributed runs, compile, bad input."""
from __future__ import annotations

import glob
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

import train_gpt as tg
from curriculum.shards import open_shard, shard_token_count, write_shard
from tests.conftest import run_trainer, summary, trainer_env
from tools import launch


def settings(dataset, tmp_path, **overrides):
    env = trainer_env(dataset, tmp_path, **overrides)
    return tg.read_settings(env)


def test_tiny_run_loss_falls_and_writes_both_logs(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, VAL_DOMAINS="1")
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
    # the code counted is what the run imported: not the parts of curriculum/ its settings do not use
    root = Path(tg.__file__).parent
    unused = {"index.py", "index_build.py", "blend.py", "mixing.py", "phases.py", "signals.py", "plugin.py", "pack.py", "artifact.py",
              "documents.py", "packed_source.py", "record_loaders.py", "sequences.py"}
    readers = ("__init__.py", "base.py", "sequential.py")  # the default order's reader, not the others
    used = [root / "train_gpt.py", *(root / "trainer").glob("*.py"),
            *(p for p in (root / "curriculum").glob("*.py") if p.name not in unused),
            *(root / "curriculum" / "readers" / name for name in readers)]
    assert s["code_bytes"] == sum(p.stat().st_size for p in used)
    assert s["settings"]["NUM_LAYERS"] == 2 and s["curriculum"]["enabled"] is False
    assert s["val_tokens"] == 16384
    # the validation prefix is announced, never passed off as the whole split
    assert "validation 16,384 tokens (a prefix: VAL_MAX_TOKENS=16385)" in text
    # VAL_DOMAINS: the split's domains from the same passes, their tokens and losses adding up to the split's
    sets = s["val_sets"]
    assert sets and set(sets) <= {"code", "docs", "prose"} and sum(v["tokens"] for v in sets.values()) == 16384
    for key in ("val_loss", "roundtrip_val_loss"):
        assert sum(v["tokens"] * v[key] for v in sets.values()) / 16384 == pytest.approx(s[key], abs=1e-9)
    assert len(re.findall(r"^val_set:\w+ tokens:\d+ val_loss:", text, re.M)) == len(sets)


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


def scored_model(s):
    """A model with every weight moved off its initial value (zero-initialised ones too), the
    validation tokens and the byte tables: something to evaluate."""
    torch.manual_seed(0)
    model = tg.GPT(s)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    val = tg.load_validation_tokens(s.val_files, s.train_seq_len, s.val_max_tokens)
    return model, val, tg.ByteTables.from_sentencepiece(s.tokenizer_path, s.vocab_size)


def test_exported_artifact_scores_like_dequantised_weights(dataset, tmp_path):
    s = settings(dataset, tmp_path, VAL_MAX_TOKENS="8193")
    model, val, tables = scored_model(s)
    ref = model.state_dict()
    packed = tg.quantize_state(ref)
    model.load_state_dict(tg.dequantize_state(packed, ref))
    in_memory = tg.evaluate(model, s, val, tables, torch.device("cpu"), False)
    path = tmp_path / "m.ptz"
    tg.write_atomic(path, tg.serialize_artifact(packed))
    model2 = tg.GPT(s)
    model2.load_state_dict(tg.dequantize_state(tg.load_artifact(path.read_bytes()), ref))
    assert tg.evaluate(model2, s, val, tables, torch.device("cpu"), False) == in_memory
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


def test_the_schedules_as_fractions_of_the_progress_hold_at_any_step_time(dataset, tmp_path):
    s = settings(dataset, tmp_path, MAX_WALLCLOCK_SECONDS="100", WARMDOWN_ITERS="100000", WARMDOWN_FRAC="0.4",
                 MUON_MOMENTUM_WARMUP_FRAC="0.2", SWA_EVERY_FRAC="0.1")
    for step_ms in (10.0, 1000.0):  # a fast machine and one 100x slower: the same warmdown
        assert tg.warmdown_fraction(s, 10, 10 * step_ms) == 0.4
        assert tg.lr_multiplier(0.8, tg.warmdown_fraction(s, 10, 10 * step_ms)) == pytest.approx(0.5)
    assert tg.momentum_warmed(s, 3, 0.1) == pytest.approx(0.5) and tg.momentum_warmed(s, 99999, 0.3) == 1.0
    assert [tg.swa_slot(s, k, p) for k, p in [(1, 0.05), (2, 0.099), (3, 0.1), (4, 0.25)]] == [0, 0, 1, 2]
    steps = settings(dataset, tmp_path, SWA_EVERY="5", MUON_MOMENTUM_WARMUP_STEPS="10")  # the step-based settings
    assert [tg.swa_slot(steps, k, 0.9) for k in (4, 5, 9, 10)] == [0, 1, 1, 2]
    assert tg.momentum_warmed(steps, 5, 0.9) == pytest.approx(0.5)
    with pytest.raises(tg.SettingsError, match=r"WARMDOWN_FRAC='1.5'.*\n.*SWA_EVERY_FRAC='-1'"):
        settings(dataset, tmp_path, WARMDOWN_FRAC="1.5", SWA_EVERY_FRAC="-1")


@pytest.mark.parametrize("order", ["sequential", "shuffled"])
def test_torchrun_two_ranks_train_on_disjoint_tokens(dataset, tmp_path, order):
    env = trainer_env(dataset, tmp_path, ITERATIONS="6", GRAD_ACCUM_STEPS="1", SWA_ENABLED="0", DATA_ORDER=order)
    out = run_trainer(env, nproc=2, torchrun=order == "sequential")  # once as a user launches it
    assert out.returncode == 0, out.stderr[-3000:]
    s = summary(env)
    assert s["world_size"] == 2 and s["steps"] == 6
    rows, length = s["data"]["rank_first_rows"], s["data"]["row_tokens"]
    assert len(rows) == 2 and all(len(r) == 6 for r in rows)
    starts = [{p for micro in rank for p in micro} for rank in rows]
    assert len(starts[0]) == len(starts[1]) == 6 * 16 and not starts[0] & starts[1]  # no row read twice
    if order == "sequential":  # spans of the stream, so not even one token is shared
        tokens = [{t for micro in rank for p in micro for t in range(p, p + length)} for rank in rows]
        assert len(tokens[0]) == len(tokens[1]) == 6 * (16 * 64 + 1) and not tokens[0] & tokens[1]
    assert s["data"]["micro_batches"] == 6 and s["data"]["data_order"] == order
    assert "final_int6_zstd_roundtrip_exact" in (Path(env["LOG_DIR"]) / "run.txt").read_text()


def test_a_carry_run_logs_its_waits_and_its_counts_add_up(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, CURRICULUM="1", CURRICULUM_POOL="carry", ITERATIONS="12",
                      CURRICULUM_LOG_EVERY="4", MAX_WALLCLOCK_SECONDS="60", EXPECTED_STEP_MS="100")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    lines = re.findall(r"^curriculum step:\d+ .* pool_score_mean:[\d.]+ wait_mean:([\d.]+) wait_max:(\d+) "
                       r"data_wait_ms:[\d.]+ read_mix:\S+ kept_mix:\S+$", text, re.M)
    assert len(lines) == 3 and all(float(mean) <= int(top) for mean, top in lines)
    d = summary(env)["data"]
    keep = 2048 // (2 * 64)  # sequences per micro-batch: 16
    assert d["pool"] == "carry" and d["micro_batches"] == 24 and d["sequences_trained"] == 24 * keep
    assert d["sequences_read"] == d["sequences_trained"] + d["sequences_waiting"] and d["sequences_waiting"] == keep
    assert d["sequences_discarded"] == 0 and sum(d["trained_domain_counts"]) == 24 * keep
    assert f"{d['sequences_waiting']:,} still waiting" in text
    # the data budget: from EXPECTED_STEP_MS at the start (the cap allows 600 steps, ITERATIONS 12), then measured
    assert re.search(r"^data: budget at EXPECTED_STEP_MS=100 under the 60 s cap: ~12 steps read ~24,576 tokens, "
                     r"0\.00 passes over the 31,801,185 the shards hold; 24,576 trained on$", text, re.M)
    assert re.search(r"^data: budget at the \d+ ms/step of the first 10 steps under the 60 s cap: ~12 steps", text, re.M)


@pytest.mark.parametrize("run_id", ["../escape", "a/b", ".hidden", ""])
def test_a_run_id_that_would_leave_log_dir_is_refused(dataset, tmp_path, run_id):
    env = trainer_env(dataset, tmp_path)
    env["RUN_ID"] = run_id
    if not run_id:  # empty means the default: a fresh time-stamped name, which is fine
        assert tg.check_settings(tg.parse_settings(env)[0]) == []
        return
    with pytest.raises(tg.SettingsError, match=r"RUN_ID=.*: must be a plain file name"):
        tg.read_settings(env)


def test_bad_settings_are_all_reported_at_once_without_traceback(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, NUM_HEADS="5", TRAIN_BATCH_TOKENS="1000", DEVICE="tpu",
                      VOCAB_SIZE="2048", CURRICULUM_SCHEDULE="zigzag", CURRICULUM_OVERSAMPLE="0.5",
                      SEED="abc", TRAIN_FILES=str(tmp_path / "nothing_*.bin"), DATA_ORDER="random",
                      CURRICULUM_POOL="stale")
    out = run_trainer(env)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    for expected in ("NUM_HEADS=5: must divide MODEL_DIM=64", "TRAIN_BATCH_TOKENS=1000: must be a multiple",
                     "DEVICE='tpu': must be one of auto, cpu, cuda", "VOCAB_SIZE=2048: the tokenizer",
                     "CURRICULUM_SCHEDULE='zigzag'", "CURRICULUM_OVERSAMPLE=0.5", "SEED='abc': must be an integer",
                     "TRAIN_FILES=", "no shard matches", "DATA_ORDER='random': must be one of sequential, shuffled",
                     "CURRICULUM_POOL='stale': must be one of fresh, carry"):
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


# ------------------------------------------------------------------------- the record's techniques


def test_smear_gate_blends_each_position_with_the_previous_one():
    gate = tg.SmearGate(2)
    with torch.no_grad():
        gate.gate.copy_(torch.tensor([0.0, math.log(3.0)]))  # g = 0.5 and 0.75
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 8.0]]])
    expected = torch.tensor([[[0.5 * 1, 0.25 * 2], [0.5 * 3 + 0.5 * 1, 0.25 * 4 + 0.75 * 2],
                              [0.5 * 5 + 0.5 * 3, 0.25 * 8 + 0.75 * 4]]])
    assert torch.allclose(gate(x), expected)
    assert torch.equal(tg.SmearGate(2)(x), 0.5 * x + 0.5 * torch.nn.functional.pad(x[:, :-1], (0, 0, 1, 0)))


def test_bigram_rows_follow_the_records_int32_hash():
    tokens = np.array([[5, 7, 1023, 65000, 65535, 0]])
    prev, cur = tokens[0, :-1].astype(np.int32), tokens[0, 1:].astype(np.int32)
    with np.errstate(over="ignore"):  # int32 wraps, as in the record
        mixed = np.bitwise_xor(np.int32(36313) * cur, np.int32(27191) * prev)
    expected = [4095] + [int(v) % 4095 for v in mixed]  # Python's % of a negative int is >= 0, like torch's
    assert tg.bigram_rows(torch.from_numpy(tokens), 4096)[0].tolist() == expected
    assert expected[1] == (36313 * 7 ^ 27191 * 5) % 4095  # no wrap for small ids


def test_bigram_hash_starts_at_zero_and_adds_its_projected_row():
    bigram = tg.BigramHash(16, 4, 6)
    idx = torch.tensor([[3, 9, 2]])
    assert not bigram(idx).any()  # zero table, zero projection: the model starts without it
    with torch.no_grad():
        bigram.table.weight.copy_(torch.arange(64.0).view(16, 4))
        bigram.proj.weight.copy_(torch.arange(24.0).view(6, 4) / 10)
    rows = tg.bigram_rows(idx, 16)[0]
    expected = 0.05 * torch.stack([bigram.proj.weight @ bigram.table.weight[r] for r in rows])
    assert torch.allclose(bigram(idx)[0], expected)


def test_orthogonal_init_of_block_matrices_and_scaled_projections():
    s = tg.parse_settings(dict(NUM_LAYERS="2", MODEL_DIM="128", NUM_HEADS="4", NUM_KV_HEADS="2"))[0]
    torch.manual_seed(0)
    model = tg.GPT(s)
    for name, w in model.named_parameters():
        if name.endswith(("c_q.weight", "c_k.weight", "c_v.weight", "fc.weight")):
            small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            assert torch.allclose(small, torch.eye(small.shape[0]), atol=1e-5), name
        if name.endswith("proj.weight"):
            assert not w.any(), name  # zero-initialised output projections stay zero
    probe = torch.nn.ModuleDict(dict(out_proj=torch.nn.Linear(64, 64, bias=False), small=torch.nn.Linear(8, 8)))
    before_small = probe["small"].weight.clone()
    tg.orthogonal_init(probe, num_layers=8)
    singular = torch.linalg.svdvals(probe["out_proj"].weight)
    assert torch.allclose(singular, torch.full((64,), 1 / math.sqrt(16)), atol=1e-5)
    assert torch.equal(probe["small"].weight, before_small)  # under 64 x 64: left as it was


def parameter_formula(v, d, layers, heads, kv_heads, mlp, bigram_rows, bigram_dim, tied=True) -> int:
    kv = kv_heads * d // heads
    block = d * d + 2 * d * kv + d * d + heads + 2 * mlp * d * d + 2 * d + 2 * d
    skips = min(layers // 2, layers - layers // 2) * d
    bigram = bigram_rows * bigram_dim + bigram_dim * d + 1 if bigram_rows else 0
    return v * d + layers * block + skips + bigram + d + (0 if tied else v * d)


@pytest.mark.parametrize("env", [dict(NUM_LAYERS="3", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="2",
                                      BIGRAM_VOCAB_SIZE="512", BIGRAM_DIM="16"),
                                 dict(NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1",
                                      BIGRAM_VOCAB_SIZE="0", TIE_EMBEDDINGS="0"),
                                 {}])
def test_parameter_count_matches_an_independent_formula(env):
    s = tg.parse_settings(env)[0]
    count = sum(p.numel() for p in tg.GPT(s).parameters())
    assert count == parameter_formula(s.vocab_size, s.model_dim, s.num_layers, s.num_heads, s.num_kv_heads,
                                      s.mlp_mult, s.bigram_vocab_size, s.bigram_dim, s.tie_embeddings)
    if not env:  # the defaults: the record's 22.37M
        assert round(count / 1e6, 2) == 22.37


def brute_force_bpb(model, val: torch.Tensor, tables, seq: int, stride: int, keep=lambda j: True) -> tuple[float, float]:
    """Each target token on its own: find the window that scores it and take that one position's
    loss; only the targets j (1-based) that `keep` keeps."""
    kept = [j for j in range(1, val.numel()) if keep(j)]
    n = len(kept)
    loss_sum = bytes_sum = 0.0
    for j in kept:  # target index
        start = 0 if j <= seq else -(-(j - seq) // stride) * stride
        x = val[start:start + seq].long()[None]
        y = val[start + 1:start + seq + 1].long()[None]
        with torch.no_grad():
            loss_sum += float(model(x, y)[0, j - start - 1])
        bytes_sum += float(tables.count(val[j - 1:j].long(), val[j:j + 1].long()))
    return loss_sum / n, loss_sum / n / math.log(2) * n / bytes_sum


@pytest.mark.parametrize("stride", [16, 64])
def test_sliding_window_evaluation_equals_a_per_token_brute_force(dataset, tmp_path, stride):
    s = settings(dataset, tmp_path, EVAL_STRIDE=str(stride), EVAL_BATCH_SEQS="3", VAL_MAX_TOKENS=str(64 * 5 + 1))
    model, val, tables = scored_model(s)
    loss, bpb = tg.evaluate(model, s, val, tables, torch.device("cpu"), False)
    ref_loss, ref_bpb = brute_force_bpb(model, val, tables, s.train_seq_len, stride)
    assert loss == pytest.approx(ref_loss, abs=1e-6) and bpb == pytest.approx(ref_bpb, abs=1e-6)
    if stride == s.train_seq_len:  # non-overlapping: the mean loss of whole windows
        windows = (val.numel() - 1) // s.train_seq_len
        x = val[:windows * s.train_seq_len].long().view(windows, -1)
        y = val[1:windows * s.train_seq_len + 1].long().view(windows, -1)
        with torch.no_grad():
            assert loss == pytest.approx(float(model(x, y).double().mean()), abs=1e-6)


def test_one_pass_scores_each_group_of_targets_as_a_brute_force_over_that_group(dataset, tmp_path):
    s = settings(dataset, tmp_path, EVAL_STRIDE="16", EVAL_BATCH_SEQS="3", VAL_MAX_TOKENS=str(64 * 5 + 1))
    model, val, tables = scored_model(s)
    groups = (torch.arange(val.numel() - 1) // 50) % 3  # runs of 50 targets, as documents would be
    sums = tg.score_windows(model, s, val, tables, torch.device("cpu"), False, groups=groups, n_groups=3)
    assert tg.loss_and_bpb(sums[:, 0]) == tg.evaluate(model, s, val, tables, torch.device("cpu"), False)
    assert torch.allclose(sums[:, 1:].sum(dim=1), sums[:, 0])
    for g in range(3):
        ref = brute_force_bpb(model, val, tables, s.train_seq_len, 16, keep=lambda j: int(groups[j - 1]) == g)
        assert tg.loss_and_bpb(sums[:, 1 + g]) == pytest.approx(ref, abs=1e-6)


def test_the_validation_domains_count_each_domains_own_validation_tokens(dataset):
    pattern = dataset["data_path"] + "/*val_*.bin"
    total = sum(shard_token_count(f) for f in glob.glob(pattern))
    domains, names = tg.load_validation_domains(pattern, total - 1)
    assert names == ("code", "docs", "prose") and domains.numel() == total - 1
    counts = torch.bincount(domains, minlength=3).tolist()
    for g, name in enumerate(names):  # the mix's validation split is the union of the domains' splits
        own = sum(shard_token_count(f) for f in glob.glob(dataset["folders"][f"embedded_{name}_sp1024"] + "/*val_*.bin"))
        assert counts[g] == own - (g == int(domains[0]))  # token 0, no target, is of the first document's domain
    bos = tg.load_validation_tokens(pattern, 1, 0)[1:] == 1  # every document begins with BOS ...
    changes = torch.nonzero(domains[1:] != domains[:-1]).flatten() + 1
    assert bool(bos[changes].all())  # ... so a target's domain changes only where a document begins


def test_int6_edge_rows_come_back_finite_and_within_half_a_step():
    w = torch.stack([torch.zeros(64), torch.linspace(-1e-6, 1e-6, 64), torch.linspace(-6e4, 6e4, 64),
                     torch.linspace(-3e-5, 2e-5, 64)])
    q, scale = tg.quantize_int6(w)
    back = tg.dequantize_int6(q, scale)
    assert bool(torch.isfinite(back).all()) and bool((scale.float() > 0).all())
    assert not back[0].any()
    assert back[1].abs().max() > 0  # the tiny row is not flattened to zeros
    err = (back - w).abs()
    assert bool((err <= 0.5 * scale.float()[:, None] + w.abs() * 2.0 ** -10).all())


def test_fp16_patterns_keep_the_named_matrices_out_of_int6():
    s = tg.parse_settings(dict(NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="4", BIGRAM_VOCAB_SIZE="0"))[0]
    state = tg.GPT(s).state_dict()
    packed = tg.quantize_state(state, ("blocks.1.attn.c_k",))
    assert packed["blocks.1.attn.c_k.weight"].dtype == torch.float16
    assert torch.equal(packed["blocks.1.attn.c_k.weight"], state["blocks.1.attn.c_k.weight"].half())
    assert isinstance(packed["blocks.0.attn.c_k.weight"], dict)  # the other blocks' keys stay int6
    restored = tg.dequantize_state(tg.load_artifact(tg.serialize_artifact(packed)), state)
    assert torch.equal(restored["blocks.1.attn.c_k.weight"], state["blocks.1.attn.c_k.weight"].half().float())


def test_weight_decay_is_adamw_and_muon_has_its_own(dataset, tmp_path):
    s = settings(dataset, tmp_path, WEIGHT_DECAY="0.02", MUON_WEIGHT_DECAY="0.07")
    adam, muon = tg.build_optimizers(tg.GPT(s), s, lambda f: f)
    assert {g["weight_decay"] for g in adam.param_groups} == {0.02}
    assert {g["weight_decay"] for g in muon.param_groups} == {0.07}
    assert tg.parse_settings({})[0].weight_decay == 0.01 and tg.parse_settings({})[0].muon_weight_decay == 0.04


def test_muon_allocates_its_buffers_once(dataset, tmp_path):
    s = settings(dataset, tmp_path)
    model = tg.GPT(s)
    _, muon = tg.build_optimizers(model, s, lambda f: f)
    matrix = muon.param_groups[0]["params"][0]
    pointers = []
    for _ in range(3):
        for p in muon.param_groups[0]["params"]:
            p.grad = torch.randn_like(p)
        muon.step()
        pointers.append((muon.state[matrix]["momentum_buffer"].data_ptr(), muon.param_groups[0]["flat_updates"].data_ptr()))
    assert pointers[0] == pointers[1] == pointers[2]


@pytest.mark.parametrize("choice, native, expected", [("off", True, False), ("bf16", False, True),
                                                       ("auto", True, True), ("auto", False, False)])
def test_cpu_autocast_uses_bf16_only_where_asked_or_native(monkeypatch, choice, native, expected):
    monkeypatch.setattr(tg, "cpu_has_native_bf16", lambda: native)
    s = tg.parse_settings(dict(CPU_AUTOCAST=choice))[0]
    assert tg.use_bf16(s, torch.device("cpu")) is expected


def test_on_a_cpu_the_compiled_embedding_backward_repeats_bit_for_bit():
    """The kernel that made two compiled runs of one SEED differ: inductor's fused embedding
    backward, whose threads add into shared rows with atomics (without repeatable_kernels, six
    such backward passes gave six different gradients on the 2-core EPYC). Few distinct ids and
    terms of very different sizes, so that any change in the order of the additions shows."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert "deterministic" in tg.repeatable_kernels(torch.device("cpu"))
        emb = torch.nn.Embedding(64, 256)
        backward = torch.compile(lambda idx, w: (emb(idx) * w).sum())
        g = torch.Generator().manual_seed(0)
        idx = torch.randint(0, 8, (64, 512), generator=g)
        w = torch.randn(64, 512, 256, generator=g) * torch.logspace(-3, 3, 512).view(1, 512, 1)
        grads = set()
        for _ in range(6):
            emb.weight.grad = None
            backward(idx, w).backward()
            grads.add(emb.weight.grad.numpy().tobytes())
        assert len(grads) == 1
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------- bad input found while training or by size


def shards_folder(dataset, tmp_path, train_tokens) -> Path:
    """The real validation shards beside one training shard holding `train_tokens` (a numpy array)."""
    folder = tmp_path / "shards"
    folder.mkdir()
    for f in glob.glob(dataset["data_path"] + "/*val_*.bin"):
        shutil.copy(f, folder)
    write_shard(folder / "small_train_000000.bin", train_tokens)
    return folder


def real_train_prefix(dataset, n: int) -> np.ndarray:
    return np.asarray(open_shard(sorted(glob.glob(dataset["data_path"] + "/*train_*.bin"))[0])[:n])


def test_bad_inputs_that_ended_in_tracebacks_are_clear_errors(dataset, tmp_path):
    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("")
    empty = shards_folder(dataset, tmp_path, np.zeros(0, dtype=np.uint16))
    env = trainer_env(dataset, tmp_path, CURRICULUM="1", CURRICULUM_OVERSAMPLE="1e12", LOG_DIR=str(not_a_folder),
                      DATA_PATH=str(empty))
    out = run_trainer(env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"LOG_DIR='{not_a_folder}': is a file" in out.stderr
    assert "every training shard is empty" in out.stderr
    env = trainer_env(dataset, tmp_path, CURRICULUM="1", CURRICULUM_OVERSAMPLE="1e12")
    out = run_trainer(env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "CURRICULUM_OVERSAMPLE=1e+12 with TRAIN_BATCH_TOKENS=2048: one micro-batch would read" in out.stderr


def test_a_token_id_beyond_the_vocabulary_in_training_data_ends_in_one_line(dataset, tmp_path):
    tokens = real_train_prefix(dataset, 20_000).copy()
    tokens[5_000] = 1500
    env = trainer_env(dataset, tmp_path, DATA_PATH=str(shards_folder(dataset, tmp_path, tokens)), WARMUP_STEPS="0")
    out = run_trainer(env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "holds token id 1500" in out.stderr and "VOCAB_SIZE=1024" in out.stderr


def test_the_log_says_when_the_training_stream_wraps(dataset, tmp_path):
    # 2 micro-batches of 16 x 65 tokens per step: a 5,000-token shard wraps after about 2.4 steps
    env = trainer_env(dataset, tmp_path, DATA_PATH=str(shards_folder(dataset, tmp_path, real_train_prefix(dataset, 5000))),
                      ITERATIONS="6", WARMUP_STEPS="0")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-2000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    wraps = re.findall(r"^data: wrap step:(\d+) pass:(\d+) ", text, re.M)
    span = 16 * 64 + 1
    first_wrap_micro = 5000 // span + 1  # the first micro-batch read after the stream's end
    assert wraps[0] == (str(-(-first_wrap_micro // 2)), "2") and [p for _, p in wraps] == ["2", "3"]
    assert summary(env)["data"]["stream_wraps"] == 2 and "holding 5,000 tokens" in text


def test_a_tiny_run_with_the_records_features_logs_what_it_chose(dataset, tmp_path):
    # A cap far beyond 12 steps, a warmdown far beyond the cap: the warning needs step 10 inside
    # the budget and must not depend on how busy the machine is (above 1.1 ms/step it fires)
    env = trainer_env(dataset, tmp_path, EVAL_STRIDE="16", MAX_WALLCLOCK_SECONDS="120", WARMDOWN_ITERS="100000",
                      ITERATIONS="12", TRAIN_LOG_EVERY="0", CPU_AUTOCAST="off")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-2000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    assert re.search(r"^WARNING: at \d+ ms/step, WARMDOWN_ITERS=100000 spans \d+% of the 120 s budget: the warmdown "
                     r"starts before 10% of it", text, re.M)
    assert "precision: fp32 (CPU_AUTOCAST=off" in text and "attention: PyTorch's CPU kernel" in text
    assert re.search(r"^model: [\d,]+ parameters, .* bigram 4096x128$", text, re.M)
    assert "==================================== curriculum/loader.py\n" in text  # its source is logged too
    s = summary(env)
    assert s["eval_stride"] == 16 and s["parameters"] > 0 and math.isfinite(s["roundtrip_val_bpb"])
    assert re.search(r"^final_int6_zstd_roundtrip_exact val_loss:[\d.]+ val_bpb:[\d.]+$", text, re.M)


def test_settings_that_would_exhaust_memory_or_disk_are_refused(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, TRAIN_BATCH_TOKENS=str(2048 * 100_000), EVAL_BATCH_SEQS="1000000")
    out = run_trainer(env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "TRAIN_BATCH_TOKENS=204800000: one micro-batch would read" in out.stderr
    assert "EVAL_BATCH_SEQS=1000000: one evaluation pass would hold 244.1 GiB of logits" in out.stderr


def test_log_dir_must_be_a_writable_folder_or_creatable(tmp_path, monkeypatch):
    nested = tmp_path / "a_file" / "logs"
    assert tg.check_log_dir(str(nested)) == []  # made when the run starts
    (tmp_path / "a_file").write_text("")
    assert tg.check_log_dir(str(nested)) == [f"LOG_DIR='{nested}': {tmp_path / 'a_file'} is a file, so the folder "
                                             f"cannot be made"]
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user without write permission sees it
    assert tg.check_log_dir(str(tmp_path / "new")) == [f"LOG_DIR='{tmp_path / 'new'}': {tmp_path} is not writable "
                                                       f"by this user"]


# ----------------------------------------------------------------------------- phases (CURRICULUM_PHASES)

def phases_file(tmp_path, text: str) -> str:
    path = tmp_path / "phases.toml"
    path.write_text(text)
    return str(path)


def train_losses(env) -> list[str]:
    return re.findall(r"^step:\d+/\d+ train_loss:(\S+)", (Path(env["LOG_DIR"]) / "run.txt").read_text(), re.M)


@pytest.mark.long
def test_compiled_a_seq_len_phase_change_and_the_curriculum_compile_nothing_after_the_warmup(dataset, tmp_path):
    """The compiled path on a CPU: a shorter first phase, then the curriculum's device-side
    scoring and selection at the full length; one run for both, compilation being the cost."""
    mix = dataset["data_path"] + "/*train_*.bin"
    path = phases_file(tmp_path, f'''
[datasets.mix]
files = "{mix}"
[[phase]]
name = "short"
steps = 4
seq_len = 32
mixture = {{ mix = 1.0 }}
[[phase]]
name = "full"
mixture = {{ mix = 1.0 }}
curriculum = true
''')
    # the smallest model that still compiles every kind of graph: every block matrix one square shape,
    # so that Muon's compiled step is built once; no BigramHash (a cold compile: 137 s with TINY's shapes)
    env = trainer_env(dataset, tmp_path, TORCH_COMPILE="1", ITERATIONS="8", CURRICULUM_PHASES=path, SWA_ENABLED="0",
                      CURRICULUM_LOG_EVERY="2", TRAIN_LOG_EVERY="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="2",
                      MLP_MULT="1", BIGRAM_VOCAB_SIZE="0")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    assert "compile 1" in text and "kernels: deterministic" in text
    assert re.search(r"^phase:1/2 name:short step:0 tokens:0 seq_len:32 batch_tokens:2048 mixture:mix=1.00 curriculum:0 "
                     r"ends:steps=4$", text, re.M)
    assert re.search(r"^phase:2/2 name:full step:4 tokens:8,192 seq_len:64 batch_tokens:2048", text, re.M)
    assert len(re.findall(r"^curriculum step:\d+ progress:[\d.]+ target:[\d.]+ kept_score_mean:[\d.]+ "
                          r"kept_score_min:[\d.]+ kept_score_max:[\d.]+ pool_score_mean:[\d.]+ data_wait_ms:[\d.]+ "
                          r"read_mix:mix=1.000 kept_mix:mix=1.000 phase:2/2", text, re.M)) == 2  # steps 6 and 8
    s = summary(env)
    assert s["recompiles_after_warmup"] == 0 and s["tokens_seen"] == 8 * 2048
    assert [(p["name"], p["steps"], p["tokens"], p["seq_len"]) for p in s["phases"]] == [
        ("short", 4, 8192, 32), ("full", 4, 8192, 64)]
    # every row trained on is counted in its phase: 2048 tokens a step over 32- then 64-token rows
    assert s["phases"][0]["trained"] == {"mix": 4 * 2048 // 32} and s["phases"][1]["trained"] == {"mix": 4 * 2048 // 64}
    assert s["phases"][1]["read"] == {"mix": 2 * 4 * 2048 // 64}  # the 2x pool of the curriculum's phase
    assert math.isfinite(s["roundtrip_val_bpb"])


def test_phases_end_by_tokens_and_epochs_and_the_token_target_ends_the_run(dataset, tmp_path):
    small = shards_folder(dataset, tmp_path, real_train_prefix(dataset, 10_000))
    mix = dataset["data_path"] + "/*train_*.bin"
    path = phases_file(tmp_path, f'''
[datasets.mix]
files = "{mix}"
[datasets.small]
files = "{small}/small_train_*.bin"
[[phase]]
name = "two steps"
tokens = 4096
mixture = {{ mix = 1.0 }}
[[phase]]
name = "one epoch of small"
epochs = 1
epochs_of = "small"
mixture = {{ small = 1.0 }}
[[phase]]
name = "rest"
mixture = {{ mix = 0.5, small = 0.5 }}
''')
    env = trainer_env(dataset, tmp_path, ITERATIONS="30", CURRICULUM_PHASES=path, TRAIN_TOKENS=str(10 * 2048),
                      SWA_ENABLED="0", WARMUP_STEPS="3")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    # 4096 tokens = 2 steps; one epoch of 10,000 tokens at 2048 a step = ceil(4.88) = 5 steps
    assert [int(m) for m in re.findall(r"^phase:\d/3 name:.* step:(\d+) ", text, re.M)] == [0, 2, 7]
    assert "ends:steps=5" in text and re.search(r"^stopping: TRAIN_TOKENS=20,480 reached, 20,480 tokens at step 10$",
                                                text, re.M)
    assert "data: wrap dataset:small pass:2" in text  # 5 steps of 2 x 1025 tokens read 10,250 of 10,000
    s = summary(env)
    assert s["steps"] == 10 and [p["steps"] for p in s["phases"]] == [2, 5, 3]
    assert s["phases"][2]["trained"] == {"mix": 48, "small": 48}  # 3 steps x 32 rows, blended half and half


def test_when_every_dataset_is_used_up_training_ends_cleanly_and_exports(dataset, tmp_path):
    small = shards_folder(dataset, tmp_path, real_train_prefix(dataset, 3000))
    path = phases_file(tmp_path, f'''
[datasets.small]
files = "{small}/small_train_*.bin"
on_exhaust = "drop"
[[phase]]
mixture = {{ small = 1.0 }}
''')
    env = trainer_env(dataset, tmp_path, CURRICULUM_PHASES=path, WARMUP_STEPS="0")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    # a step reads 2 x 1025 tokens: step 1 fits in 3000, step 2 does not
    assert re.search(r"^data: every dataset of the phase's mixture is used up \(on_exhaust = \"drop\": small\); "
                     r"training ends at step 1$", text, re.M)
    assert re.search(r"^stopping: the training data is used up, step:1/30$", text, re.M)
    assert "final_int6_zstd_roundtrip_exact" in text and summary(env)["steps"] == 1


def test_the_one_phase_v_file_trains_exactly_like_curriculum_1(dataset, tmp_path):
    runs = []
    for name, extra in (("plain", dict(CURRICULUM="1")),
                        ("phases", dict(CURRICULUM_PHASES="configs/phases/v_filter_one_phase.toml"))):
        env = trainer_env(dataset, tmp_path / name, ITERATIONS="6", **extra)
        out = run_trainer(env)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(train_losses(env))
    assert runs[0] == runs[1] and len(runs[0]) == 6


def test_every_example_phases_file_is_valid(dataset):
    from curriculum import CurriculumConfig
    from curriculum.phases import load_phases
    for path in sorted(Path(tg.HERE, "configs", "phases").glob("*.toml")):
        plan, errors = load_phases(path, CurriculumConfig())
        assert errors == [] and plan.phases, path


def test_a_phases_file_naming_missing_shards_is_refused_before_training(dataset, tmp_path):
    path = phases_file(tmp_path, '[datasets.gone]\nfiles = "/nowhere/*.bin"\n[[phase]]\nmixture = { gone = 1.0 }\n'
                                 'batch_tokens = 1000\n')
    env = trainer_env(dataset, tmp_path, CURRICULUM_PHASES=path)
    out = run_trainer(env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "dataset gone: files='/nowhere/*.bin': no shard matches" in out.stderr
    assert "phase 1 (phase1): batch_tokens=1000: must be a multiple" in out.stderr
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "c_train_000000.bin").write_bytes(b"not a shard")
    path = phases_file(tmp_path, f'[datasets.bad]\nfiles = "{corrupt}/*.bin"\n[[phase]]\nmixture = {{ bad = 1.0 }}\n')
    settings_errors = tg.check_settings(tg.parse_settings(trainer_env(dataset, tmp_path, CURRICULUM_PHASES=path))[0])
    assert any(e.startswith("CURRICULUM_PHASES: dataset bad: ") and "c_train_000000.bin" in e and "header" in e
               for e in settings_errors), settings_errors


@pytest.mark.parametrize("example, boundaries", [("seq_len_warmup_cpu", [0, 2]), ("anneal_code_to_prose", [0, 2, 4])])
def test_the_cpu_examples_train_through_their_phases_at_the_right_progress(dataset, tmp_path, example, boundaries):
    # without a cap progress is step / 6: 0.333 >= 0.3 (and >= 0.33) at step 2, 0.667 >= 0.66 at step 4
    env = trainer_env(dataset, tmp_path, ITERATIONS="6", CURRICULUM_PHASES=f"configs/phases/{example}.toml")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    assert [int(m) for m in re.findall(r"^phase:\d/\d name:\S+ step:(\d+) ", text, re.M)] == boundaries
    phases = summary(env)["phases"]
    assert sum(p["steps"] for p in phases) == 6
    if example == "anneal_code_to_prose":  # 16 rows a micro-batch, 2 a step: the blend's counts within one row
        weights = [dict(code=0.6, docs=0.2, prose=0.2), dict(code=0.34, docs=0.33, prose=0.33),
                   dict(code=0.2, docs=0.2, prose=0.6)]
        for p, ws in zip(phases, weights):
            assert all(abs(p["trained"][d] - w * p["steps"] * 32) < 1 for d, w in ws.items()), p


FAULTS_PER_BLOCK = '''
import resource, sys
import torch
import train_gpt as tg
line = tg.keep_freed_memory(sys.argv[1])
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # 64 MiB blocks, above glibc's largest mmap threshold, as a step's biggest tensors are
    torch.ones(2**24).sum()
per_block = []
for _ in range(10):
    before = faults()
    torch.ones(2**24).sum()
    per_block.append(faults() - before)
print(line)
print(sorted(per_block)[5])  # the median block: one block the kernel reclaimed under another test's load is not the rule
'''


def test_cpu_malloc_keep_reuses_freed_blocks_where_glibc_would_fault_them_in_again():
    import subprocess
    import sys
    out = {}
    for choice in ("system", "keep"):
        done = subprocess.run([sys.executable, "-c", FAULTS_PER_BLOCK, choice], capture_output=True, text=True,
                              cwd=Path(tg.__file__).parent)
        assert done.returncode == 0, done.stderr[-2000:]
        line, faults = done.stdout.strip().splitlines()
        if "not glibc" in line:
            pytest.skip(line)
        out[choice] = (line, float(faults))
    assert out["system"][1] > 10_000  # 16,384 pages of 4 KiB, zeroed by the kernel, every time
    assert out["keep"][1] < 100 and "keeps freed memory" in out["keep"][0]


# ------------------------------------------------------------------------- ATTENTION_MASK=document


def documents_model(mask: str, kernel: str = "per_document") -> "tg.GPT":
    s = tg.parse_settings(dict(NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", BIGRAM_VOCAB_SIZE="512",
                               ATTENTION_MASK=mask))[0]
    torch.manual_seed(0)
    model = tg.GPT(s, kernel)
    with torch.no_grad():  # away from the zero-initialised start, so that every path carries signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


# every document kernel this machine has (trainer/attention.py); flash_varlen needs CUDA (tests/test_cuda.py)
CPU_KERNELS = ["per_document", "dense", "flex"]


# compiled, the kernels are exercised on a packed stream below; rows differ only in where the starts come from
@pytest.mark.parametrize("kernel,compiled", [(k, False) for k in CPU_KERNELS]
                         + [pytest.param("per_document", True, marks=pytest.mark.long)],
                         ids=[f"eager-{k}" for k in CPU_KERNELS] + ["compiled-per_document"])
def test_a_document_sees_nothing_of_the_documents_before_it_in_its_row(compiled, kernel):
    model = documents_model("document", kernel)
    run = torch.compile(model, dynamic=False) if compiled else model
    idx = torch.randint(3, 1000, (2, 48), generator=torch.Generator().manual_seed(1))
    idx[:, 0] = tg.BOS_ID
    idx[0, 20] = idx[0, 33] = idx[1, 10] = tg.BOS_ID  # row 0: documents at 0, 20, 33; row 1: at 0, 10
    targets = torch.randint(3, 1000, (2, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = run(idx, targets)
        for row, position, first_later in ((0, 5, 20), (0, 19, 20), (0, 25, 33), (1, 9, 10)):
            changed = idx.clone()
            changed[row, position] = 7 if idx[row, position] != 7 else 8
            after = run(changed, targets)
            assert torch.equal(after[row, first_later:], before[row, first_later:]), (row, position)
            assert not torch.equal(after[row, :first_later], before[row, :first_later])  # the document itself changed
            assert torch.equal(after[1 - row], before[1 - row])
    causal = documents_model("causal")
    with torch.no_grad():  # the causal model does carry the earlier document into the later one
        assert not torch.equal(causal(changed, targets)[1, 10:], causal(idx, targets)[1, 10:])


@pytest.mark.parametrize("kernel", CPU_KERNELS)
@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.long)], ids=["eager", "compiled"])
def test_in_a_packed_stream_a_piece_sees_nothing_of_the_pieces_before_it(compiled, kernel):
    """DATA_LAYOUT=packed: one [1, N] stream whose pieces cu_seqlens gives (a BOS inside a piece cuts nothing)."""
    model = documents_model("document", kernel)
    run = torch.compile(model, dynamic=False) if compiled else model
    idx = torch.randint(3, 1000, (1, 96), generator=torch.Generator().manual_seed(5))
    idx[0, 10] = tg.BOS_ID
    targets = torch.randint(3, 1000, (1, 96), generator=torch.Generator().manual_seed(6))
    starts = tg.starts_from_cu_seqlens(torch.tensor([0, 30, 50] + [96] * 5, dtype=torch.int32), 96)
    with torch.no_grad():
        before = run(idx, targets, starts=starts)
        for position, first_later in ((5, 30), (29, 30), (40, 50)):
            changed = idx.clone()
            changed[0, position] = 7 if idx[0, position] != 7 else 8
            after = run(changed, targets, starts=starts)
            assert torch.equal(after[0, first_later:], before[0, first_later:]), position
            assert not torch.equal(after[0, :first_later], before[0, :first_later])


@pytest.mark.long
def test_packed_batches_with_other_document_counts_compile_nothing_after_the_first():
    model = documents_model("document")
    run = torch.compile(model, dynamic=False)
    idx = torch.randint(3, 1000, (1, 96), generator=torch.Generator().manual_seed(7))
    loss = None
    for i, cut in enumerate(([0, 96], [0, 30, 50, 96], [0, 5, 10, 20, 40, 60, 80, 90, 96])):
        starts = tg.starts_from_cu_seqlens(torch.tensor(cut + [96] * (64 - len(cut)), dtype=torch.int32), 96)
        loss = run(idx, idx, starts=starts).mean()
        loss.backward()
        if i == 0:
            graphs = tg.compiled_graphs()
    assert tg.compiled_graphs() == graphs and torch.isfinite(loss)


def test_packed_documents_at_vocab_8192_train_on_the_cpu_with_the_curriculum(dataset_8192, tmp_path):
    """DATA_LAYOUT=packed ATTENTION_MASK=document VOCAB_SIZE=8192: the late records' layout and
    vocabulary, end to end, with the V selecting document pieces."""
    env = trainer_env(dataset_8192, tmp_path, DATA_LAYOUT="packed", ATTENTION_MASK="document", CURRICULUM="1",
                      CURRICULUM_LOG_EVERY="4", ITERATIONS="8", BIGRAM_VOCAB_SIZE="512")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    assert "vocab 8192" in text and "kernel per_document" in text and "documents begin at a packed stream's" in text
    assert re.search(r"^curriculum step:8 progress:0\.8750 target:\S+ kept_score_mean:\S+ .*pieces_per_batch:", text, re.M)
    data = summary(env)["data"]
    assert data["loader"] == "documents" and data["tokens_read"] == 2 * data["tokens_trained"]
    assert math.isfinite(summary(env)["roundtrip_val_bpb"])


def test_with_one_document_per_row_the_document_mask_is_the_causal_model():
    idx = torch.randint(3, 1000, (3, 64), generator=torch.Generator().manual_seed(3))
    idx[:, 0] = tg.BOS_ID
    targets = torch.randint(3, 1000, (3, 64), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        document, causal = documents_model("document")(idx, targets), documents_model("causal")(idx, targets)
    torch.testing.assert_close(document, causal, rtol=1e-5, atol=1e-5)
    idx[:, 0] = 5  # no BOS at all: the row is one document, the tokens before the first BOS
    with torch.no_grad():
        torch.testing.assert_close(documents_model("document")(idx, targets), documents_model("causal")(idx, targets),
                                   rtol=1e-5, atol=1e-5)


def test_a_run_with_documents_masked_and_aligned_trains_logs_its_cut_and_its_counts_add_up(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, ATTENTION_MASK="document", DATA_ALIGN="bos", DATA_ORDER="shuffled",
                      CURRICULUM="1", CURRICULUM_POOL="carry", DOC_MAX_TOKENS="40", ITERATIONS="12")
    out = run_trainer(env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    assert "attention: ATTENTION_MASK=document, kernel per_document" in text
    cut = re.search(r"^data: DATA_ALIGN=bos: ([\d,]+) rows of 65 tokens from ([\d,]+) documents \(([\d.]+) per row\), "
                    r"a pass holds ([\d,]+) of the ([\d,]+) tokens; skipped: ([\d,]+) past DOC_MAX_TOKENS=40, "
                    r"([\d,]+) past a row's end, ([\d,]+) at the shards' ends$", text, re.M)
    assert cut, "no packing line"
    rows, _, per_row, held, total, *skipped = (float(g.replace(",", "")) for g in cut.groups())
    assert held == rows * 65 and held + sum(skipped) == total and per_row >= 2  # 40-token cuts: 2+ documents a row
    data = summary(env)["data"]
    assert data["data_align"] == "bos" and data["tokens_skipped"] > 0
    assert data["tokens_read"] == data["sequences_read"] * 64
    assert data["sequences_read"] == data["sequences_trained"] + data["sequences_waiting"]  # carry: nothing discarded
    assert "tokens skipped by the alignment" in text and summary(env)["recompiles_after_warmup"] == 0


def running_until(env: dict, step: int):
    """A run of ITERATIONS=100000 started in the background, once its log has reached `step`."""
    import time
    import preloaded
    log = Path(env["LOG_DIR"]) / "run.txt"
    job = preloaded.start(env, preloaded.ROOT, script=preloaded.ROOT / "train_gpt.py")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None and not (log.exists() and f"step:{step}/" in log.read_text()):
        time.sleep(0.05)
    return job, log


@pytest.mark.parametrize("signum", [2, 15, 1], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_an_interrupted_run_ends_with_one_line_and_nothing_half_written(dataset, tmp_path, signum):
    job, log = running_until(trainer_env(dataset, tmp_path, ITERATIONS="100000", TRAIN_LOG_EVERY="1"), 3)
    try:
        job.send_signal(signum)
        job.wait(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()  # never left running (ITERATIONS=100000), whatever failed above
    err = job.result().stderr
    assert job.returncode == 130 and "Traceback" not in err and "interrupted" in err, err[-2000:]
    assert sorted(p.name for p in log.parent.iterdir()) == ["run.txt"]  # no artifact, no summary, no temporary, no lock
    assert log.read_text().splitlines()[-1].startswith("error: train_gpt.py: interrupted")  # the log says how it ended


def test_two_runs_of_one_run_id_at_once_cannot_share_its_log(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, ITERATIONS="100000", TRAIN_LOG_EVERY="1")
    first, log = running_until(env, 2)
    try:
        second = run_trainer(env | dict(OVERWRITE="1"))
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"RUN_ID='run': another run (pid {first.pids[0]}) is writing {log} now" in second.stderr
        assert "step:3/" in log.read_text() or first.poll() is None  # the first run's log is its own, still going
    finally:
        first.kill()
        first.wait()
    assert len(re.findall(r"^model: ", log.read_text(), re.M)) == 1  # one run's header, the first's


def test_a_diverged_run_stops_at_its_first_non_finite_loss_with_no_artifact(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, MATRIX_LR="1e30", SCALAR_LR="1e30", TIED_EMBED_LR="1e30", GRAD_CLIP_NORM="0",
                      ITERATIONS="30", TRAIN_LOG_EVERY="50")
    out = run_trainer(env)
    assert out.returncode == 4 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "the run diverged" in out.stderr
    s = summary(env)
    step = s["diverged_at_step"]
    assert 0 <= step < 30 and math.isnan(s["roundtrip_val_bpb"]) and "steps" not in s
    text = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    assert f"diverged: step:{step} the training loss is not finite at step {step}" in text
    assert not (Path(env["LOG_DIR"]) / "run.int6.ptz").exists()  # no artifact of a diverged run


@pytest.mark.parametrize("overrides, expected", [
    (dict(RANK="3", WORLD_SIZE="2"), "RANK=3: must be < WORLD_SIZE=2"),
    (dict(RANK="0", WORLD_SIZE="2", MASTER_ADDR="", MASTER_PORT=""), "needs MASTER_ADDR and MASTER_PORT (torchrun sets them"),
    (dict(SEED="-1"), "SEED='-1': must be in [0, 4294967295]"),
    (dict(SEED=str(2**64)), "must be in [0, 4294967295]"),
], ids=["rank beyond the world", "no rendezvous", "negative seed", "seed beyond 32 bits"])
def test_a_process_s_place_and_seed_are_named_by_every_rank(dataset, tmp_path, overrides, expected):
    env = trainer_env(dataset, tmp_path, **overrides)
    out = run_trainer(env)
    assert out.returncode == 2 and "Traceback" not in out.stderr and expected in out.stderr, out.stderr[-2000:]


def test_training_shards_that_are_the_validation_split_are_refused(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, TRAIN_FILES=dataset["data_path"] + "/*.bin")
    out = run_trainer(env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "which VAL_FILES=" in out.stderr and "must not train on a split it is scored on" in out.stderr


def test_a_run_id_whose_logs_exist_is_refused_unless_overwrite(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, ITERATIONS="2", WARMUP_STEPS="0")
    assert run_trainer(env).returncode == 0
    first = (Path(env["LOG_DIR"]) / "run.json").read_bytes()
    again = run_trainer(env)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "RUN_ID='run'" in again.stderr and "run.txt exists" in again.stderr and "OVERWRITE=1" in again.stderr
    assert (Path(env["LOG_DIR"]) / "run.json").read_bytes() == first  # nothing touched
    assert run_trainer(env | dict(OVERWRITE="1")).returncode == 0


def test_a_rank_that_stops_answering_ends_the_run_on_the_other_with_one_line(dataset, tmp_path):
    """Two ranks started by hand; rank 1 is stopped (SIGSTOP) mid-run: rank 0 gives up after
    COLLECTIVE_TIMEOUT with one line and exit status 3, instead of waiting until killed."""
    import signal
    import socket
    import time
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = trainer_env(dataset, tmp_path, ITERATIONS="100000", GRAD_ACCUM_STEPS="1", WARMUP_STEPS="0",
                      COLLECTIVE_TIMEOUT="5", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    ranks = [launch.start_trainer(env | dict(RANK=str(r), LOCAL_RANK=str(r)), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in range(2)]
    log = Path(env["LOG_DIR"]) / "run.txt"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (log.exists() and "step:3/" in log.read_text()):
            time.sleep(0.2)
        assert log.exists() and "step:3/" in log.read_text(), ranks[0].stderr.read()[-2000:] if ranks[0].poll() else ""
        ranks[1].send_signal(signal.SIGSTOP)
        t0 = time.time()
        _, err = ranks[0].communicate(timeout=90)
        waited = time.time() - t0
    finally:
        for p in ranks:
            p.kill()
            p.wait()
    assert ranks[0].returncode == 3, err[-2000:]
    assert "lost the other ranks: rank 1 stopped answering" in err and "COLLECTIVE_TIMEOUT=5" in err
    assert "Traceback" not in err
    assert waited < 60


def test_a_cpu_training_step_attends_in_fp32_under_bf16_autocast_and_evaluation_in_bf16():
    """PyTorch's CPU flash kernel is several times slower backward in bf16 than in fp32, so
    train_gpt.attend computes a training step's attention in fp32; forward-only passes keep bf16."""
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 16, 8, generator=gen).to(torch.bfloat16) for h in (4, 2, 2))
    fp32 = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    bf16 = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert not torch.equal(fp32.to(torch.bfloat16), bf16)  # the two paths are told apart
    with tg.autocast(torch.device("cpu"), True):
        trained = tg.attend(q.requires_grad_(), k, v, None, True)
        with torch.no_grad():
            evaluated = tg.attend(q, k, v, None, True)
    assert trained.dtype == evaluated.dtype == torch.bfloat16
    assert torch.equal(trained, fp32.to(torch.bfloat16)) and torch.equal(evaluated, bf16)
    trained.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.bfloat16
