"""tools/: the CPU configuration, the env-file reader, the bench."""
from __future__ import annotations

import dataclasses
import re

import pytest

import train_gpt as tg
from conftest import TINY
from tools import bench, turns
from tools.envfile import ROOT, read_env_file


def test_cpu_config_is_a_valid_trainer_configuration():
    env = read_env_file(ROOT / "configs" / "cpu.env")
    env = {k: (str(ROOT / v) if k in ("DATA_PATH", "TOKENIZER_PATH") else v) for k, v in env.items()}
    s = tg.read_settings(env)
    assert s.train_batch_tokens % (s.train_seq_len * s.grad_accum_steps) == 0
    assert s.max_wallclock_seconds > 0 and s.curriculum.enabled is False  # make run switches it on


def test_env_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "x.env"
    bad.write_text("# comment\nA=1\nnot a setting\n")
    with pytest.raises(ValueError, match=r"x.env:3: expected KEY=VALUE"):
        read_env_file(bad)
    bad.write_text("A = 1\n\nB=two words\n")
    assert read_env_file(bad) == {"A": "1", "B": "two words"}


def tiny_settings(dataset) -> tg.Settings:
    env = dict(TINY, DATA_PATH=dataset["data_path"], TOKENIZER_PATH=dataset["tokenizer"], VOCAB_SIZE="1024")
    return bench.cpu_settings(env)


def test_the_mixers_own_work_is_timed_over_its_updates(dataset):
    """The in-process figure beside the rings' mix_adaptive ratio: every update point after the
    first applies the rule (the first has no window reduced before it)."""
    from curriculum.config import MixConfig
    work = bench.bench_mix_work(tiny_settings(dataset), micro_batches=80, repeats=2)
    assert work["updates"] == 80 // MixConfig().update_every - 1
    assert work["us_per_micro_batch"] > 0


def test_the_packed_batches_bench_counts_pieces_and_boundaries_against_the_buckets(dataset):
    rows = bench.bench_packed_batches(tiny_settings(dataset), batches=4)
    assert [r["arm"] for r in rows] == ["off", "V, fresh 2x"] * 2
    for r in rows:  # a piece is at most the row length: at least N / seq_len of them, one boundary more
        n, seq_len = (int(v) for v in re.search(r"\[1, (\d+)\], pieces <= (\d+)", r["shapes"]).groups())
        assert r["pieces_per_batch"] >= n / seq_len and r["boundaries_max"] >= n // seq_len + 1
        assert 0 <= r["batches_over_256"] <= 4


def test_paired_bench_takes_turns_between_the_arms_on_one_model(dataset):
    out = bench.bench_paired_steps(tiny_settings(dataset), 4)
    assert out["pairs"] == 4 and all(out["median_ms"][arm] > 0 for arm in bench.ARMS)
    # 7 steps per arm (3 to warm up); fresh reads twice the sequences it keeps, carry one extra pool's worth
    accum = int(TINY["GRAD_ACCUM_STEPS"])
    keep = int(TINY["TRAIN_BATCH_TOKENS"]) // (accum * int(TINY["TRAIN_SEQ_LEN"]))
    assert out["sequences_read"] == dict(baseline=7 * accum * keep, fresh=7 * accum * 2 * keep,
                                         carry=7 * accum * keep + keep)
    for r in out["against_baseline"].values():
        assert r["ratio_ci95"][0] <= r["ratio"] <= r["ratio_ci95"][1]


def test_step_breakdown_splits_each_step_into_its_parts(dataset):
    parts = bench.bench_step_breakdown(tiny_settings(dataset), blocks=2, steps_per_block=2)
    for arm in bench.ARMS:
        p = parts[arm]
        if arm != "baseline":
            r = p["step_vs_baseline"]
            assert r["ratio_ci95"][0] <= r["ratio"] <= r["ratio_ci95"][1]
        assert p["step_ms"] == pytest.approx(p["batch_ms"] + p["rest_ms"]) and p["batch_ms"] > 0 and p["rest_ms"] > 0
        assert p["reader_cpu_ms"] > 0


def test_documents_per_batch_counts_more_documents_for_bigger_or_shuffled_batches(dataset):
    rows = {(r["order"], r["rows"]): r for r in bench.bench_documents_per_batch(tiny_settings(dataset), batches=100)}
    assert rows[("sequential", "2x pool")]["median"] >= rows[("sequential", "baseline batch")]["median"]
    # shuffled rows are 16 slots anywhere among 31.8M tokens: each its own document, almost always
    assert rows[("shuffled", "baseline batch")]["median"] >= 15 > rows[("sequential", "baseline batch")]["median"]


def test_every_shell_script_parses():
    import subprocess
    scripts = sorted(ROOT.glob("tools/*.sh")) + sorted(ROOT.glob("data/*.sh")) + [ROOT / ".ci" / "run"]
    for script in scripts:
        out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, f"{script}: {out.stderr}"


@pytest.mark.long
def test_mix_replay_trains_on_the_batches_the_adaptive_mixer_chose(dataset, tmp_path):
    """The split of the mixer's cost rests on this: mix_replay, a MIX=stratified process, trains
    on exactly mix_adaptive's batches (recorded in an untimed run of mix_adaptive, compiled and
    warmed up as in the ring), so the two differ only in the mixer's own work."""
    from test_mixing import three_domains
    from test_turns import ring_env, step_losses
    env = ring_env(dataset, tmp_path, ITERATIONS="6")
    arms = {a.name: dataclasses.replace(a, env=a.env | dict(MIX_DATASETS=three_domains(dataset)) | (
        dict(MIX_UPDATE_EVERY="2") if a.env.get("MIX") == "adaptive" else {}))
            for a in bench.COST_ARMS + bench.DECOMPOSITION_ARMS if a.name in ("mix_adaptive", "mix_replay")}
    assert bench.replay_sources(list(arms.values())) == ["mix_adaptive"]
    recorded = {"mix_adaptive": bench.record_batches(arms["mix_adaptive"], env, tmp_path)}
    ring = turns.run_ring([bench.with_paths(a, 6, recorded) for a in arms.values()], env, tmp_path / "ring", tag="m")
    losses = {name: step_losses(tmp_path / "ring", run["run_id"]) for name, run in ring.items()}
    assert len(losses["mix_adaptive"]) == 6 and losses["mix_replay"] == losses["mix_adaptive"]
    adaptive, replay = (ring[name]["summary"]["data"]["mix"] for name in ("mix_adaptive", "mix_replay"))
    assert adaptive["final_weights"] != adaptive["start_weights"]  # the mixer moved: its batches are its own
    assert replay["mode"] == "stratified" and "updates" not in replay  # no mixer of its own


def test_ring_arms_bring_the_references_own_baselines_and_replayed_sources_and_refuse_unknown_names(capsys):
    names = [a.name for a in bench.ring_arms(False, ("mix_replay",))]
    assert sorted(names) == sorted(["baseline", "baseline_again", "mix_stratified", "mix_adaptive", "mix_replay"])
    assert [a.name for a in bench.ring_arms(False)] == [a.name for a in bench.COST_ARMS]
    with pytest.raises(SystemExit):
        bench.main(["--cost-only", "--cost-arms", "mix_adaptive,mix_replya"])
    assert "--cost-arms: mix_replya not among" in capsys.readouterr().err


def test_the_attention_kernel_is_timed_forward_and_backward_in_both_precisions(dataset):
    kernel = bench.bench_attention_kernel(tiny_settings(dataset), calls=2)
    assert kernel["shape"] == [16, 4, 2, 64, 16]  # TINY: 2048 tokens / 2 micro-batches / 64, 64 / 4 heads
    assert set(kernel["ms"]) == {"bfloat16", "float32"}
    assert all(ms["forward_ms"] > 0 and ms["backward_ms"] > 0 for ms in kernel["ms"].values())


def test_kept_rings_pool_only_under_the_same_key_and_older_rings_still_read(tmp_path, capsys):
    import json
    key = dict(arms=["baseline", "baseline_again", "fresh"], steps=40, cpu="CPU: here", layout="random",
               order=turns.ORDER_SCHEME)
    ring = dict(baseline=dict(turns=dict(steps_ms=[100.0] * 40)))
    (tmp_path / "ring000.json").write_text(json.dumps(dict(key=key, ring=ring)))
    assert len(bench.kept_rings(tmp_path, key, adding=True)) == 1
    # a ring kept before the pair was launched in turn: no "order" in its key, so the arms were shuffled alone
    (tmp_path / "ring001.json").write_text(json.dumps(dict(key={k: v for k, v in key.items() if k != "order"}, ring=ring)))
    with pytest.raises(SystemExit, match=r"ring001.json was measured with .*shuffled.*\(order differ\): use another --rings-dir"):
        bench.kept_rings(tmp_path, key, adding=True)
    # read alone, to rebuild a committed table, another machine or order scheme is no error
    assert len(bench.kept_rings(tmp_path, key | dict(cpu="CPU: elsewhere"), adding=False)) == 2
    assert "2 rings read from" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"\(steps differ\)"):
        bench.kept_rings(tmp_path, key | dict(steps=20), adding=False)
