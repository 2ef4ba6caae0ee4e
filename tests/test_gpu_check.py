"""tools/gpu_check.py on the CPU: the bundle is built and fits what may travel, the dry run
checks it and every run's settings, and the script refuses to run without CUDA."""
from __future__ import annotations

import pytest
import torch

from curriculum.shards import open_shard, shard_token_count
from tools import gpu_check


def test_the_bundle_is_built_checked_and_the_dry_run_names_every_step(dataset, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    size = gpu_check.prepare(bundle, wheel=False)
    # what travels, the wheel counted: the tree as it is, the bundle, and room for the tree to grow
    assert size + gpu_check.tree_bytes() + gpu_check.WHEEL_BYTES <= gpu_check.TRAVEL_LIMIT - gpu_check.GROWTH_BYTES
    shards = sorted((bundle / "data").glob("*train_*.bin"))
    assert len(shards) == gpu_check.TRAIN_SHARDS
    assert all(shard_token_count(s) >= gpu_check.MIN_SHARD_TOKENS for s in shards)
    assert not (tmp_path / "bundle.tmp").exists()
    out = capsys.readouterr().out
    assert "MiB travel of the 64 MiB allowed" in out
    assert gpu_check.dry_run(tmp_path / "out", bundle) == 2  # no wheel: the GPU machine could not install zstandard
    assert "no zstandard wheel" in capsys.readouterr().out
    (bundle / "wheels").mkdir()
    (bundle / "wheels" / "zstandard-0.25.0-cp312-cp312-manylinux2014_x86_64.whl").write_bytes(b"")
    assert gpu_check.dry_run(tmp_path / "out", bundle) == 0
    out = capsys.readouterr().out
    for arm in gpu_check.ARMS:
        assert f"run {arm}: train_gpt.py with" in out
    assert "CUDA-marked tests: " in out and "-m cuda" in out and out.strip().endswith("ready")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_check_refuses_and_says_what_works_here(tmp_path, capsys):
    assert gpu_check.main([str(tmp_path / "out"), "--bundle", str(tmp_path)]) == 2
    assert "no CUDA device here" in capsys.readouterr().err


def test_the_table_reports_each_arm_against_the_baseline():
    run = dict(steps=10, step_avg_ms=100.0, data=dict(data_wait_ms_per_step=0.5), peak_memory_mb=1000.0,
               recompiles_after_warmup=0, roundtrip_val_bpb=2.5)
    text = gpu_check.table(dict(baseline=run, fresh=run | dict(step_avg_ms=103.0), carry=dict(error="boom")))
    assert "1.030" in text and "carry      FAILED: boom" in text


def test_the_training_shards_are_cut_to_the_room_the_tree_leaves_and_refused_below_the_minimum(dataset, tmp_path, capsys):
    whole = sorted((gpu_check.ROOT / "data" / "datasets" / "embedded_mix_sp1024").glob("*train_*.bin"))
    full = shard_token_count(whole[0])
    # a tree that leaves room for under half of each shard (its bytes are two a token): the shards are their first
    # tokens, and no sidecar travels
    tree = gpu_check.TRAVEL_LIMIT - gpu_check.GROWTH_BYTES - gpu_check.WHEEL_BYTES - gpu_check.TRAIN_SHARDS * full
    size = gpu_check.prepare(tmp_path / "cut", wheel=False, tree=tree)
    assert size + tree + gpu_check.WHEEL_BYTES <= gpu_check.TRAVEL_LIMIT - gpu_check.GROWTH_BYTES
    shards = sorted((tmp_path / "cut" / "data").glob("*train_*.bin"))
    assert [s.name for s in shards] == [s.name for s in whole[:gpu_check.TRAIN_SHARDS]]
    tokens = shard_token_count(shards[0])
    assert gpu_check.MIN_SHARD_TOKENS <= tokens < full
    assert all((open_shard(s) == open_shard(w)[:tokens]).all() for s, w in zip(shards, whole))
    assert not list((tmp_path / "cut" / "data").glob("*.domains.npz"))
    assert "(cut to fit)" in capsys.readouterr().out
    (tmp_path / "cut" / "wheels").mkdir()  # the runs' settings still pass the trainer's checks on the cut shards
    (tmp_path / "cut" / "wheels" / "zstandard-0.25.0-cp312-cp312-manylinux2014_x86_64.whl").write_bytes(b"")
    assert gpu_check.dry_run(tmp_path / "out", tmp_path / "cut") == 0
    # a tree that leaves too little: refused, naming the tree's size, and nothing left behind
    with pytest.raises(gpu_check.CheckError, match=r"the tracked tree is 6[0-9]\.\d MiB.*under 1,048,576 tokens"):
        gpu_check.prepare(tmp_path / "none", wheel=False, tree=60 * 2**20)
    assert not (tmp_path / "none").exists() and not (tmp_path / "none.tmp").exists()
