"""curriculum/shards.py"""
from __future__ import annotations

import numpy as np
import pytest

from curriculum import ShardFormatError, open_shard, shard_token_count, write_shard


def test_round_trip(tmp_path):
    tokens = np.array([1, 0, 65535, 1023, 7] * 100, dtype=np.uint16)
    path = tmp_path / "x_train_000000.bin"
    write_shard(path, tokens)
    assert path.stat().st_size == 1024 + 2 * tokens.size
    assert shard_token_count(path) == tokens.size
    got = open_shard(path)
    assert isinstance(got, np.memmap) and np.array_equal(got, tokens)
    header = np.fromfile(path, dtype="<i4", count=3)
    assert header.tolist() == [20240520, 1, tokens.size]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_rejects_out_of_range_tokens_without_writing(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        write_shard(tmp_path / "x.bin", np.array([70000]))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("edit, message", [
    (lambda b: b[:100], "shorter than the 1024-byte header"),
    (lambda b: (1).to_bytes(4, "little") + b[4:], "magic 1 is not 20240520"),
    (lambda b: b[:4] + (2).to_bytes(4, "little") + b[8:], "version 2 is not 1"),
    (lambda b: b + b"\x00\x00", "but the file has 1226 bytes"),
])
def test_corrupt_shards_are_rejected_with_the_file_named(tmp_path, edit, message):
    path = tmp_path / "c_val_000000.bin"
    write_shard(path, np.arange(100, dtype=np.uint16))
    path.write_bytes(edit(path.read_bytes()))
    with pytest.raises(ShardFormatError, match=message) as err:
        open_shard(path)
    assert str(path) in str(err.value)


def test_a_write_that_fails_leaves_no_hidden_temporary(tmp_path, monkeypatch):
    import os
    from curriculum.shards import write_atomic

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left") as err:
        write_atomic(tmp_path / "run.json", b"{}")
    assert err.value.filename == str(tmp_path / "run.json")  # the file meant, not the hidden temporary
    assert list(tmp_path.iterdir()) == []
