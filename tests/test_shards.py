"""curriculum/shards.py"""
from __future__ import annotations

import os

import numpy as np
import pytest

from curriculum import ShardFormatError, open_shard, shard_token_count, shards, write_shard


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


def shard_of(path, n: int, seed: int = 0):
    tokens = np.random.default_rng(seed).integers(0, 1024, n).astype(np.uint16)
    write_shard(path, tokens)
    return tokens


def test_the_content_hash_sees_a_changed_middle_whole_or_sampled(tmp_path):
    # small shards are hashed whole; one over WHOLE_HASH_BYTES is sampled, the exact middle among the samples
    for n in (50_000, (shards.WHOLE_HASH_BYTES // 2) + 1_000_003):
        path = tmp_path / f"s{n}.bin"
        tokens = shard_of(path, n)
        before = shards.shard_content_hash(path)
        copy = tmp_path / f"copy{n}.bin"
        copy.write_bytes(path.read_bytes())
        assert shards.shard_content_hash(copy) == before  # content, not name
        tokens[n // 2] ^= 1
        write_shard(path, tokens)
        assert path.stat().st_size == copy.stat().st_size and shards.shard_content_hash(path) != before


def test_a_shard_rewritten_at_its_size_under_a_reader_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "CHANGE_CHECK_SECONDS", 0.0)
    path = tmp_path / "s.bin"
    tokens = shard_of(path, 10_000)
    reader = shards.ShardTokens(path)
    assert np.array_equal(reader[0:100], tokens[:100])
    os.utime(path, ns=(1, 1))  # touched, the same content: still read
    assert np.array_equal(reader[100:200], tokens[100:200])
    with open(path, "r+b") as f:  # rewritten in place, as `cp` over it would
        f.seek(shards.HEADER_BYTES + 2 * 9_000)
        f.write(b"\x07\x00")
    with pytest.raises(shards.ShardChanged, match="s.bin: the shard's content changed while the run read it"):
        reader[200:300]


def test_the_content_watch_names_a_shard_changed_since_it_was_taken(tmp_path):
    paths = [tmp_path / f"s{i}.bin" for i in range(3)]
    kept = [shard_of(p, 5_000, seed=i) for i, p in enumerate(paths)]
    watch = shards.ContentWatch(paths)
    watch.check()
    kept[1][2_500] ^= 1
    write_shard(paths[1], kept[1])
    with pytest.raises(shards.DataError, match="s1.bin: the training shard's content changed during the run"):
        watch.check()
