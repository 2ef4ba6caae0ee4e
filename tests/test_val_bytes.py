"""VAL_BYTES_FILES: val_bpb over the late records' per-token byte sidecars instead of the
tokenizer's counts; VAL_FILES skips `_bytes_` files as their loader does."""
from __future__ import annotations

import glob
import re
import shutil
from pathlib import Path

import numpy as np
import torch

import train_gpt as tg
from curriculum.shards import open_shard, write_shard
from tests.conftest import run_trainer, trainer_env


def sidecar_of_our_tokenizer(dataset: dict) -> np.ndarray:
    """Each validation token's bytes as the tokenizer counts them (the token before it decides
    the leading space); the first token, never a target, 0."""
    tokens = np.concatenate([np.asarray(open_shard(f)) for f in sorted(glob.glob(dataset["data_path"] + "/*val_*.bin"))])
    tables = tg.ByteTables.from_sentencepiece(dataset["tokenizer"], dataset["vocab_size"])
    t = torch.from_numpy(tokens.astype(np.int64))
    counts = tables.count(t[:-1], t[1:]).numpy()
    return np.concatenate([[0], counts]).astype(np.uint16)


def final_line(env: dict) -> str:
    return re.search(r"^final_int6_zstd_roundtrip_exact .*$", (Path(env["LOG_DIR"]) / "run.txt").read_text(), re.M).group(0)


def test_a_sidecar_of_the_tokenizers_own_counts_gives_the_same_val_bpb_to_the_last_digit(dataset, tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    for f in glob.glob(dataset["data_path"] + "/*val_*"):
        shutil.copy(f, folder)
    write_shard(folder / "fineweb_val_bytes_000000.bin", sidecar_of_our_tokenizer(dataset))  # VAL_FILES matches it too
    plain = trainer_env(dataset, tmp_path / "plain", ITERATIONS="6", VAL_FILES=str(folder / "*val_*.bin"))
    assert run_trainer(plain).returncode == 0
    sided = trainer_env(dataset, tmp_path / "sided", ITERATIONS="6", VAL_FILES=str(folder / "*val_*.bin"),
                        VAL_BYTES_FILES=str(folder / "*_bytes_*.bin"))
    out = run_trainer(sided)
    assert out.returncode == 0, out.stderr[-2000:]
    assert final_line(plain) == final_line(sided)
    assert "val_bpb: bytes from VAL_BYTES_FILES=" in (Path(sided["LOG_DIR"]) / "run.txt").read_text()


def test_a_sidecar_counted_otherwise_moves_val_bpb_by_its_bytes(dataset, tmp_path):
    sidecar = sidecar_of_our_tokenizer(dataset)
    write_shard(tmp_path / "doubled_bytes_000000.bin", sidecar * 2)
    plain = trainer_env(dataset, tmp_path / "plain", ITERATIONS="3")
    doubled = trainer_env(dataset, tmp_path / "doubled", ITERATIONS="3", VAL_BYTES_FILES=str(tmp_path / "doubled_*.bin"))
    assert run_trainer(plain).returncode == 0 and run_trainer(doubled).returncode == 0
    bpb = [float(re.search(r"val_bpb:(\S+)", final_line(env)).group(1)) for env in (plain, doubled)]
    assert abs(bpb[1] - bpb[0] / 2) < 1e-6


def test_a_sidecar_of_the_wrong_length_or_format_is_one_error_before_training(dataset, tmp_path):
    write_shard(tmp_path / "short_bytes_000000.bin", sidecar_of_our_tokenizer(dataset)[:-5])
    (tmp_path / "broken_bytes_000000.bin").write_bytes(b"not a shard")
    for pattern, expected in (("short_*.bin", "byte counts for the"), ("broken_*.bin", "VAL_BYTES_FILES: ")):
        env = trainer_env(dataset, tmp_path / pattern[:5], VAL_BYTES_FILES=str(tmp_path / pattern))
        out = run_trainer(env)
        assert out.returncode == 2 and expected in out.stderr and "step:" not in out.stdout, out.stderr[-2000:]
