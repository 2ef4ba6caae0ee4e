"""curriculum/readers/documents.py: the late records' document stream: spans entered at a
shard's first BOS, one per rank in order, a shard too short for the batch left for the next,
wraps counted, and its state going on where it stood."""
from __future__ import annotations

import numpy as np
import pytest

from curriculum.readers.documents import DocumentStream
from curriculum.shards import BOS_ID, DataError, write_shard


def shard(path, docs: list[int], offset: int = 0):
    """Documents of the given lengths, each BOS then its tokens; `offset` tokens before the first BOS."""
    parts = [np.full(offset, 7)] + [np.concatenate([[BOS_ID], 100 + np.arange(n - 1)]) for n in docs]
    write_shard(path, np.concatenate(parts))
    return path


def test_spans_begin_at_the_first_bos_and_the_ranks_take_theirs_in_order(tmp_path):
    files = [shard(tmp_path / "a_train_000000.bin", [10, 20, 30, 40], offset=5)]
    ranks = [DocumentStream(files, r, 2) for r in range(2)]
    tokens = np.concatenate([np.full(5, 7)] + [np.concatenate([[BOS_ID], 100 + np.arange(n - 1)]) for n in (10, 20, 30, 40)])
    for r, stream in enumerate(ranks):
        span, starts = stream.take(24)
        begin = 5 + r * 25
        assert np.array_equal(span, tokens[begin:begin + 25])
        assert np.array_equal(starts, np.flatnonzero(tokens[begin:begin + 24] == BOS_ID))
    assert ranks[0].cursor == ranks[1].cursor == 5 + 50


def test_a_shard_too_short_for_the_batch_is_left_and_the_last_wraps_to_the_first(tmp_path):
    files = [shard(tmp_path / "a_train_000000.bin", [30, 30]), shard(tmp_path / "b_train_000001.bin", [8]),
             shard(tmp_path / "c_train_000002.bin", [40, 40])]
    stream = DocumentStream(files, 0, 1)
    stream.take(40)
    assert stream.shard_index == 0
    stream.take(40)  # 20 tokens are left in a, b holds 8: on to c
    assert stream.shard_index == 2 and stream.wraps == 0
    stream.take(40)  # 39 tokens are left in c: back to the first shard, one wrap
    assert stream.shard_index == 0 and stream.wraps == 1


def test_a_saved_state_goes_on_exactly_and_no_shard_that_holds_the_batch_is_named(tmp_path):
    files = [shard(tmp_path / f"s_train_{i:06d}.bin", [25] * 8) for i in range(3)]
    stream = DocumentStream(files, 1, 2)
    for _ in range(4):
        stream.take(30)
    saved = stream.state_dict()
    ahead = [stream.take(30) for _ in range(5)]
    again = DocumentStream(files, 1, 2)
    again.load_state_dict(saved)
    for (span, starts), (span2, starts2) in zip(ahead, [again.take(30) for _ in range(5)]):
        assert np.array_equal(span, span2) and np.array_equal(starts, starts2)
    with pytest.raises(DataError, match="no training shard holds 402 tokens after its first BOS"):
        DocumentStream(files, 0, 2).take(200)
