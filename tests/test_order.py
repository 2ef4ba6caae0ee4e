"""curriculum/order.py"""
from __future__ import annotations

import numpy as np

from curriculum.order import locate_slots, slot_order, slots_per_shard


def test_slots_per_shard_counts_whole_overlapping_slots():
    assert slots_per_shard([0, 1, 64, 65, 129, 130], 64).tolist() == [0, 0, 0, 1, 2, 2]


def test_each_pass_is_a_permutation_fixed_by_seed_and_pass():
    a = slot_order(1000, 7, 0)
    assert sorted(a.tolist()) == list(range(1000))
    assert np.array_equal(a, slot_order(1000, 7, 0))
    assert not np.array_equal(a, slot_order(1000, 7, 1)) and not np.array_equal(a, slot_order(1000, 8, 0))


def test_locate_slots_inverts_the_cumulative_numbering():
    per_shard = np.asarray([3, 0, 2, 4])
    first = np.concatenate([[0], np.cumsum(per_shard)[:-1]])
    shard, slot = locate_slots(np.arange(9), first)
    assert list(zip(shard.tolist(), slot.tolist())) == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1),
                                                        (3, 0), (3, 1), (3, 2), (3, 3)]
