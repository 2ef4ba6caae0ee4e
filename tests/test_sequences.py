"""curriculum/sequences.py: the late records' calibration order, shard by shard per rank, each
row a whole sequence at its shard's phase, every start used once before any is used again."""
from __future__ import annotations

import numpy as np
import pytest

from curriculum.sequences import ShuffledSequences
from curriculum.shards import DataError, write_shard

L = 16


@pytest.fixture
def shards(tmp_path):
    """Four shards whose tokens name their shard (the thousands) and place (the rest)."""
    paths = []
    for i, n in enumerate((1000, 1500, 700, 1200)):
        path = tmp_path / f"s_train_{i:06d}.bin"
        write_shard(path, (i * 10_000 + np.arange(n)) % 65536)
        paths.append(path)
    return paths


def where(row: np.ndarray) -> tuple[int, int]:
    return int(row[0]) // 10_000, int(row[0]) % 10_000


def test_a_rank_reads_its_own_shards_whole_sequences_each_start_once_per_pass(shards):
    seqs = ShuffledSequences(shards, rank=1, world_size=2, seq_len=L)
    starts_per_pass = sum(len(s) for s in seqs.starts)
    rows = seqs.take(starts_per_pass)
    places = [where(r) for r in rows]
    assert {shard for shard, _ in places} == {1, 3}  # rank 1 of 2: shards 1 and 3
    assert all(np.array_equal(r, r[0] + np.arange(L + 1)) for r in rows)  # contiguous spans
    assert len(set(places)) == len(places)  # no start twice within a pass
    phases = {shard: {p % L for s, p in places if s == shard} for shard in (1, 3)}
    assert all(len(p) == 1 for p in phases.values())  # one phase per shard
    more = seqs.take(5)  # a second pass: starts drawn again
    assert more.shape == (5, L + 1)


def test_the_same_rank_gives_the_same_rows_and_another_rank_other_rows(shards):
    a = ShuffledSequences(shards, 0, 2, L).take(40)
    assert np.array_equal(a, ShuffledSequences(shards, 0, 2, L).take(40))
    assert not set(map(where, a)) & set(map(where, ShuffledSequences(shards, 1, 2, L).take(40)))


def test_a_rank_without_shards_or_sequences_is_named(shards, tmp_path):
    with pytest.raises(DataError, match="4 training shards for 5 ranks: rank 4 has none"):
        ShuffledSequences(shards, 4, 5, L)
    short = tmp_path / "short_train_000000.bin"
    write_shard(short, np.arange(10))
    with pytest.raises(DataError, match="no shard of this rank holds a sequence of 17 tokens"):
        ShuffledSequences([short], 0, 1, L)
