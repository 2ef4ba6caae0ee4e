"""curriculum/readers/sequential.py and the readers' one state idiom (readers/base.py): the
challenge's order over real shards, state_dict/load_state_dict, and a new length."""
from __future__ import annotations

import glob

import numpy as np

from curriculum.readers import open_reader
from curriculum.readers.sequential import SequentialRows
from curriculum.shards import open_shard


def shards(dataset) -> list[str]:
    return sorted(glob.glob(dataset["folders"]["embedded_docs_sp1024"] + "/*train_*.bin"))


def test_ranks_read_disjoint_spans_of_the_stream_that_overlap_by_one_token(dataset):
    files = shards(dataset)
    stream = np.asarray(open_shard(files[0]))
    ranks = [SequentialRows(files, 32, r, 2) for r in (0, 1)]
    taken = [reader.take(4) for reader in ranks]
    span = 4 * 32 + 1
    for r, (rows, positions, datasets) in enumerate(taken):
        assert datasets is None and rows.shape == (4, 33)
        assert np.array_equal(rows[0], stream[r * span:r * span + 33])
        assert np.array_equal(rows[1][0], rows[0][-1])  # a row's last target is the next row's first input
        assert positions.tolist() == [r * span + 32 * k for k in range(4)]


def test_a_reader_restored_from_its_state_dict_goes_on_with_the_same_rows(dataset):
    files = shards(dataset)
    reader = open_reader(files, None, 32, 0, 1, "sequential", 0)
    for _ in range(5):
        reader.take(8)
    saved = reader.state_dict()
    assert saved == dict(seq_len=32, shard_index=0, position=5 * (8 * 32 + 1), offset=5 * (8 * 32 + 1), wraps=0)
    expected = [reader.take(8)[0].copy() for _ in range(3)]
    again = open_reader(files, None, 32, 0, 1, "sequential", 0)
    again.load_state_dict(saved)
    assert all(np.array_equal(again.take(8)[0], rows) for rows in expected)


def test_a_new_length_goes_on_where_the_stream_stands(dataset):
    files = shards(dataset)
    reader = SequentialRows(files, 32, 0, 1)
    reader.take(3)
    state = reader.reshaped(reader.state_dict(), 64)
    assert state["seq_len"] == 64 and state["offset"] == 3 * 32 + 1
    reader.load_state_dict(state)
    rows, positions, _ = reader.take(2)
    assert rows.shape == (2, 65) and positions[0] == 3 * 32 + 1 and reader.domain_offset == 32
