"""tools/turns.py: separate trainer processes that take turns step by step, its controls, its ratios."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import trainer_env
from curriculum import open_shard
from tools import turns


def ring_env(dataset, tmp_path, **overrides) -> dict:
    return trainer_env(dataset, tmp_path, **(dict(ITERATIONS="8", TRAIN_LOG_EVERY="1", SWA_ENABLED="0") | overrides))


def step_losses(workdir: Path, run_id: str) -> list[str]:
    return re.findall(r"^step:\d+/\d+ train_loss:([\d.]+) ", (workdir / f"{run_id}.txt").read_text(), re.M)


@pytest.mark.long
def test_the_processes_of_a_ring_never_step_at_once_and_replay_trains_on_the_recorded_batches(dataset, tmp_path):
    env = ring_env(dataset, tmp_path)
    recorded = tmp_path / "fresh.npy"
    fresh = dict(CURRICULUM="1", CURRICULUM_POOL="fresh")
    turns.run_single(turns.Arm("record", fresh, (f"record={recorded}",)), env, tmp_path / "record")
    arms = [turns.Arm("baseline", dict(CURRICULUM="0")), turns.Arm("fresh", fresh, ("profile=5-6",)),
            turns.Arm("replay", dict(CURRICULUM="0"), (f"replay={recorded}",))]
    ring = turns.run_ring(arms, env, tmp_path / "ring", tag="t")
    intervals = sorted((a, b, name) for name, run in ring.items() for a, b in run["turns"]["steps_at"])
    assert len(intervals) == 3 * 8
    for (a0, b0, n0), (a1, b1, n1) in zip(intervals, intervals[1:]):
        assert b0 <= a1, f"{n0} and {n1} stepped at the same time"
        assert n0 != n1, "a process took two steps in a row"
    # the replay arm is a baseline process fed the fresh arm's batches: it trains exactly as fresh did
    losses = {name: step_losses(tmp_path / "ring", run["run_id"]) for name, run in ring.items()}
    assert len(losses["fresh"]) == 8 and losses["replay"] == losses["fresh"] != losses["baseline"]
    # the arms' names, settings and variants differ in length; their environments do not
    assert len({run["turns"]["environment_bytes"] for run in ring.values()}) == 1
    assert ring["replay"]["summary"]["curriculum"]["enabled"] is False
    profile = ring["fresh"]["turns"]["profile"]
    assert profile and any(row["op"] == "aten::mm" for row in profile)
    difference = turns.profile_difference([ring], "baseline", "fresh") if ring["baseline"]["turns"]["profile"] else None
    assert difference is None  # only the profiled arm has a table


def test_pool_only_trains_on_each_pools_first_rows_and_ftz_and_atomic_kernels_are_set(dataset, tmp_path):
    env = ring_env(dataset, tmp_path, ITERATIONS="4")
    recorded = tmp_path / "pool_only.npy"
    out = turns.run_single(turns.Arm("pool", dict(CURRICULUM="1", CURRICULUM_POOL="fresh"),
                                     ("pool_only", "ftz", "atomic_kernels", "bf16_attention", f"record={recorded}")),
                          env, tmp_path / "p")
    assert out["flush_denormal"] is True
    log = (tmp_path / "p" / "pool.txt").read_text().splitlines()
    kernels = [line for line in log if line.startswith("kernels:")]
    assert kernels == ["kernels: inductor's own, deterministic mode off (Hooks.repeatable_kernels=False)"]
    assert [line for line in log if line.startswith("attention:")] == [
        "attention: PyTorch's CPU kernel, in fp32 for training steps under bf16 autocast; Hooks.attention_fp32=False: "
        "training steps attend in bf16 instead"]
    data = json.loads((tmp_path / "p" / "pool.json").read_text())["data"]
    assert data["kept_score_mean"] > 0  # the selection still ran: its statistics are there
    batches = np.load(recorded)  # [micro-batches, x/y, rows, seq_len]
    seq_len, rows = int(env["TRAIN_SEQ_LEN"]), batches.shape[2]
    stream = np.concatenate([np.asarray(open_shard(f)) for f in sorted(Path(dataset["data_path"]).glob("*train_*.bin"))[:2]])
    span = 2 * rows * seq_len + 1  # a 2x pool of the sequential stream per micro-batch
    # warm-up micro-batches come first in the stream: the timed loop's loader starts afresh at 0
    for k in range(len(batches)):
        start = k * span
        expected = np.stack([stream[start + j * seq_len:start + j * seq_len + seq_len + 1] for j in range(rows)])
        assert np.array_equal(batches[k, 0], expected[:, :-1]) and np.array_equal(batches[k, 1], expected[:, 1:])


def test_a_failing_arm_breaks_the_ring_with_its_message_and_no_hang(dataset, tmp_path):
    env = ring_env(dataset, tmp_path)
    arms = [turns.Arm("baseline"), turns.Arm("broken", dict(CURRICULUM="1"), ("replay=" + str(tmp_path / "none.npy"),))]
    with pytest.raises(turns.RingError, match=r"broken.*failed|none\.npy"):
        turns.run_ring(arms, env, tmp_path / "ring", tag="b", timeout_s=300)


def test_ratios_pool_blocks_of_rounds_and_the_rule_for_costs_nothing():
    rng = np.random.default_rng(0)
    base = 100 + 10 * np.sin(np.arange(43) / 5)  # drift that both arms share
    noise = np.exp(rng.normal(0, 0.01, 43))
    rings = [dict(baseline=dict(turns=dict(steps_ms=base.tolist())), slow=dict(turns=dict(steps_ms=(1.05 * base * noise).tolist())))]
    out = turns.ratios_in_turns(rings, "baseline", skip=3, block=10)
    logs = np.log(1.05 * noise[3:])
    blocks = logs.reshape(4, 10).mean(axis=1)
    assert out["slow"]["blocks"] == 4 and out["slow"]["ratio"] == pytest.approx(math.exp(blocks.mean()))
    half = 3.182446305284263 * blocks.std(ddof=1) / 2  # t(0.975, 3 degrees of freedom) x the standard error
    assert out["slow"]["ratio_ci95"] == pytest.approx([math.exp(blocks.mean() - half), math.exp(blocks.mean() + half)])
    assert not turns.costs_nothing(out["slow"])
    assert turns.costs_nothing(dict(ratio=1.0, ratio_ci95=[0.99, 1.015]))
    assert not turns.costs_nothing(dict(ratio=1.0, ratio_ci95=[0.97, 1.01]))
    assert not turns.costs_nothing(dict(ratio=1.01, ratio_ci95=[1.005, 1.015]))  # excludes 1.00


def test_environments_are_padded_to_one_size_and_keep_every_setting():
    envs = [dict(RUN_ID="r-0-baseline", DATA_ORDER="shuffled"), dict(RUN_ID="r-1-baseline_again", DATA_ORDER="curriculum"),
            dict(RUN_ID="é", TURNS_VARIANTS="profile=55-59")]
    padded = turns.equal_sizes(envs)
    assert len({turns.environment_bytes(e) for e in padded}) == 1
    assert [{k: v for k, v in e.items() if k != "TURNS_PAD"} for e in padded] == envs
    assert min(len(e["TURNS_PAD"]) for e in padded) == 0  # the longest is not padded
    assert turns.environment_bytes(dict(A="é")) == len("A=é".encode()) + 1


def test_unknown_variants_are_named():
    with pytest.raises(ValueError, match="'warp' is not one of"):
        turns.parse_variants("ftz,warp=3")
    assert turns.parse_variants("ftz, replay=/x.npy") == {"ftz": "", "replay": "/x.npy"}


def test_two_baselines_make_one_reference_their_geometric_mean_per_round():
    a, b = np.full(13, 100.0), np.full(13, 121.0)
    rings = [dict(a=dict(turns=dict(steps_ms=a.tolist())), b=dict(turns=dict(steps_ms=b.tolist())),
                  arm=dict(turns=dict(steps_ms=(a * 1.1).tolist())))]
    out = turns.ratios_in_turns(rings, ("a", "b"), skip=3, block=5)
    assert out["arm"]["ratio"] == pytest.approx(110.0 / 110.0) and out["a"]["ratio"] == out["b"]["ratio"] == 1.0
    assert turns.ratios_in_turns(rings, "a", skip=3, block=5)["b"]["ratio"] == pytest.approx(1.21)


def test_each_ring_has_its_own_seeded_order_so_neighbours_change():
    arms = [turns.Arm(name) for name in "abcdef"]
    orders = [[a.name for a in turns.ring_order(arms, k)] for k in range(3)]
    assert all(sorted(o) == list("abcdef") for o in orders)
    assert orders == [[a.name for a in turns.ring_order(arms, k)] for k in range(3)]  # seeded
    follows = [{(o[i - 1], o[i]) for i in range(len(o))} for o in orders]
    assert follows[0] != follows[1] != follows[2]


def test_the_two_baselines_are_launched_in_turn_so_launch_order_cancels_out_of_the_a_a_control():
    arms = [turns.Arm(name) for name in ("fresh", "baseline", "carry", "baseline_again", "random")]
    orders = [[a.name for a in turns.ring_order(arms, k)] for k in range(12)]
    first = [o.index("baseline") < o.index("baseline_again") for o in orders]
    assert first == [k % 2 == 0 for k in range(12)]
    # beside the pair's turn, each ring keeps its own shuffle: the other arms take every position
    assert {o.index("fresh") for o in orders} == set(range(5))
    assert orders == [[a.name for a in turns.ring_order(arms, k)] for k in range(12)]  # seeded


def test_a_ring_s_processes_start_laid_out_alike_and_the_rings_interval_counts_each_process():
    import subprocess
    import sys
    where = "import numpy as np; a = np.zeros(1 << 20); print(hex(a.ctypes.data), hex(id(a)))"
    fixed = {subprocess.run([sys.executable, "-c", where], preexec_fn=turns.fixed_layout, capture_output=True,
                            text=True, check=True).stdout for _ in range(3)}
    assert len(fixed) == 1  # the same addresses in every process of one program
    # two rings whose processes differ by +-2% give a wide interval over rings, however steady each is inside
    steady = [100.0] * 40
    rings = [dict(baseline=dict(turns=dict(steps_ms=steady)), arm=dict(turns=dict(steps_ms=[100.0 * f] * 40)))
             for f in (1.02, 0.98, 1.03)]
    r = turns.ratios_in_turns(rings, "baseline", block=5)["arm"]
    assert r["ratio_ci95"][1] - r["ratio_ci95"][0] < 0.03 and r["ring_ci95"][1] - r["ring_ci95"][0] > 0.05
    assert not turns.costs_nothing(r)
