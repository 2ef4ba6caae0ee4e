"""tools/: the CPU configuration, the env-file reader, the bench."""
from __future__ import annotations

import pytest

import train_gpt as tg
from conftest import TINY
from tools import bench
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


def test_paired_bench_alternates_both_arms_on_one_model(dataset):
    env = dict(TINY, DATA_PATH=dataset["data_path"], TOKENIZER_PATH=dataset["tokenizer"], VOCAB_SIZE="1024")
    out = bench.bench_paired_steps(bench.cpu_settings(env), 4)
    assert out["pairs"] == 4 and out["baseline_ms"] > 0 and out["curriculum_ms"] > 0
    # 7 steps per arm (3 to warm up); the curriculum reads twice the sequences it keeps
    accum = int(TINY["GRAD_ACCUM_STEPS"])
    keep = int(TINY["TRAIN_BATCH_TOKENS"]) // (accum * int(TINY["TRAIN_SEQ_LEN"]))
    assert out["sequences_read"] == dict(baseline=7 * accum * keep, curriculum=7 * accum * 2 * keep)
    low, high = out["ratio_ci95"]
    assert low <= out["ratio"] <= high


def test_every_shell_script_parses():
    import subprocess
    scripts = sorted(ROOT.glob("tools/*.sh")) + sorted(ROOT.glob("data/*.sh")) + [ROOT / ".ci" / "run"]
    for script in scripts:
        out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, f"{script}: {out.stderr}"
