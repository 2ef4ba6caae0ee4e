"""trainer/settings.py's checks against the files: no run trains on a split it scores, by name
or by content."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

import train_gpt as tg
from curriculum.shards import open_shard, write_shard
from tests.conftest import trainer_env
from trainer.settings import same_shards


def shard_of(path, n: int, seed: int = 0):
    write_shard(path, np.random.default_rng(seed).integers(0, 1024, n).astype(np.uint16))


def test_same_shards_pairs_a_file_with_itself_or_its_copy_only(tmp_path):
    a, b, c = (tmp_path / f"{x}.bin" for x in "abc")
    shard_of(a, 4_000, seed=1)
    shard_of(b, 4_000, seed=2)  # the same size, other tokens
    c.write_bytes(a.read_bytes())
    link = tmp_path / "link.bin"
    link.symlink_to(a)
    assert same_shards([b], [a]) == []
    assert same_shards([a, b], [c]) == [(a, c)]
    assert same_shards([link], [a, b]) == [(link, a)]


def overlap_errors(dataset, tmp_path, **overrides) -> list[str]:
    s = tg.parse_settings(trainer_env(dataset, tmp_path, **overrides))[0]
    return [e for e in tg.check_settings(s) if "a split it is scored on" in e]


def test_a_copy_of_the_validation_shard_among_the_training_shards_is_refused_by_its_content(dataset, tmp_path):
    val = sorted(Path(dataset["data_path"]).glob("*val_*.bin"))[0]
    train = sorted(Path(dataset["data_path"]).glob("*train_*.bin"))[:2]
    folder = tmp_path / "train"
    folder.mkdir()
    for f in train:
        (folder / f.name).symlink_to(f)
    assert overlap_errors(dataset, tmp_path, TRAIN_FILES=f"{folder}/*.bin") == []
    shutil.copy(val, folder / "renamed_train_000009.bin")  # another name, the same bytes
    errors = overlap_errors(dataset, tmp_path, TRAIN_FILES=f"{folder}/*.bin")
    assert len(errors) == 1 and f"renamed_train_000009.bin (a copy of {val})" in errors[0], errors
    # one token changed: no longer the split it scores
    tokens = open_shard(val).copy()
    tokens[len(tokens) // 2] ^= 1
    write_shard(folder / "renamed_train_000009.bin", tokens)
    assert overlap_errors(dataset, tmp_path, TRAIN_FILES=f"{folder}/*.bin") == []


def test_a_mix_dataset_holding_the_validation_shard_is_refused(dataset, tmp_path):
    data = dataset["data_path"]
    errors = overlap_errors(dataset, tmp_path, MIX="natural", MIX_DATASETS=f"a={data}/*train_000000.bin,b={data}/*val_*.bin")
    assert len(errors) == 1 and errors[0].startswith("MIX_DATASETS=") and "which VAL_FILES=" in errors[0], errors
