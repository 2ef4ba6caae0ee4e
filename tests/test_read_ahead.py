"""curriculum/read_ahead.py: blocks read ahead on a thread of their own, each with the reader's
state after it, and what goes wrong there raised in the loop that takes them."""
from __future__ import annotations

import glob
import threading

import numpy as np
import pytest

from curriculum.read_ahead import ReadAhead
from curriculum.readers.sequential import SequentialRows
from curriculum.shards import DataError


def reader(dataset) -> SequentialRows:
    return SequentialRows(sorted(glob.glob(dataset["data_path"] + "/*train_*.bin")), 32, 0, 1)


def test_blocks_come_in_order_and_each_one_s_state_resumes_right_after_it(dataset):
    rows = reader(dataset)
    ahead = ReadAhead(rows, rows.state_dict(), first=4, then=4, vocab_size=1024, domain_index=None, domains=0,
                      pin=False)
    try:
        blocks = [ahead.get() for _ in range(3)]
    finally:
        ahead.close(wait=True)
    assert [b.positions[0] for b in blocks] == [0, 4 * 32 + 1, 2 * (4 * 32 + 1)]
    again = reader(dataset)
    again.load_state_dict(blocks[1].state_after)
    assert np.array_equal(again.take(4)[0], blocks[2].tokens.numpy())
    assert ahead.cpu_ms > 0 and not ahead._thread.is_alive()


def test_a_token_beyond_the_vocabulary_is_raised_in_the_loop_not_lost_in_the_thread(dataset):
    rows = reader(dataset)
    ahead = ReadAhead(rows, rows.state_dict(), first=4, then=4, vocab_size=2, domain_index=None, domains=0, pin=False)
    try:
        with pytest.raises(DataError, match="but VOCAB_SIZE=2"):
            ahead.get()
    finally:
        ahead.close(wait=True)
    assert "batch-read-ahead" not in [t.name for t in threading.enumerate()]
