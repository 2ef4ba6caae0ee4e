"""tools/gpu_check.py on the CPU: the bundle is built and fits what may travel, the dry run
checks it and every run's settings, and the script refuses to run without CUDA."""
from __future__ import annotations

import pytest
import torch

from tools import gpu_check


def test_the_bundle_is_built_checked_and_the_dry_run_names_every_step(dataset, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    size = gpu_check.prepare(bundle, wheel=False)
    assert 0 < size < gpu_check.TRAVEL_LIMIT
    assert len(list((bundle / "data").glob("*train_*.bin"))) == gpu_check.TRAIN_SHARDS
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
