"""curriculum/readers/shuffled.py: every slot once per pass in a seeded order, ranks disjoint,
a pass begun is an event, and the state a checkpoint keeps."""
from __future__ import annotations

import glob

import numpy as np

from curriculum.readers.shuffled import ShuffledRows


def test_a_pass_visits_every_slot_once_each_rank_its_own_and_the_next_pass_is_another_order(dataset):
    files = sorted(glob.glob(dataset["folders"]["embedded_code_sp1024"] + "/*train_*.bin"))
    readers = [ShuffledRows(files, 256, r, 2, seed=4) for r in (0, 1)]
    slots = readers[0].num_slots
    per_take = 50
    seen = [[], []]
    while readers[0].passes == 0 and sum(map(len, seen)) < slots - 2 * per_take:
        for r, reader in enumerate(readers):
            seen[r] += reader.take(per_take)[1].tolist()
    assert not set(seen[0]) & set(seen[1])  # disjoint ranks
    assert len(set(seen[0]) | set(seen[1])) == len(seen[0]) + len(seen[1])  # no slot twice in a pass
    first_order = readers[0].order.copy()
    while readers[0].passes == 0:
        readers[0].take(per_take)
    assert [str(e) for e in readers[0].new_events()] == ["wrap dataset:None pass:2"]
    assert not np.array_equal(readers[0].order, first_order)


def test_the_state_dict_restores_the_permutation_and_the_cursor(dataset):
    files = sorted(glob.glob(dataset["folders"]["embedded_code_sp1024"] + "/*train_*.bin"))
    reader = ShuffledRows(files, 128, 0, 1, seed=11)
    for _ in range(7):
        reader.take(16)
    saved = reader.state_dict()
    assert saved == dict(seq_len=128, passes=0, cursor=7 * 16)
    expected = reader.take(16)[0].copy()
    again = ShuffledRows(files, 128, 0, 1, seed=11)
    again.load_state_dict(saved)
    assert np.array_equal(again.take(16)[0], expected)
    assert reader.reshaped(saved, 64) == dict(seq_len=64, passes=0, cursor=0)  # other slots: a new permutation
    assert reader.reshaped(saved, 128) is saved
