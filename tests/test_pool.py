"""curriculum/pool.py: fresh drops the rest, carry keeps it waiting on the device."""
from __future__ import annotations

import pytest
import torch

from curriculum.pool import Pool, Pooled


def pooled(scores: list[float], first_id: int, micro: int, carry: bool) -> Pooled:
    n = len(scores)
    rows = torch.arange(first_id, first_id + n).unsqueeze(1).repeat(1, 3)  # row i: its id, three times
    return Pooled(rows, torch.tensor(scores), torch.full((n,), micro) if carry else None, torch.arange(n) % 2)


def test_fresh_keeps_the_window_and_forgets_the_rest():
    pool = Pool("fresh", 2)
    kept, whole = pool.choose(pooled([0.4, 0.1, 0.3, 0.2], 0, 1, False), 0.0)
    assert kept.rows[:, 0].tolist() == [1, 3] and whole.rows.size(0) == 4 and pool.waiting is None
    kept, _ = pool.choose(pooled([0.9, 0.8, 0.7, 0.6], 4, 2, False), 0.0)
    assert kept.rows[:, 0].tolist() == [6, 7]  # in pool order


def test_carry_keeps_the_rest_waiting_with_its_scores_domains_and_age():
    pool = Pool("carry", 2)
    kept, whole = pool.choose(pooled([0.4, 0.1, 0.3, 0.2], 0, 1, True), 1.0)  # the hardest two: ids 0, 2
    assert kept.rows[:, 0].tolist() == [0, 2] and whole.rows.size(0) == 4
    w = pool.waiting
    assert w.rows[:, 0].tolist() == [1, 3] and w.scores.tolist() == pytest.approx([0.1, 0.2])
    assert w.read_at.tolist() == [1, 1] and w.domains.tolist() == [1, 1]
    kept, whole = pool.choose(pooled([0.05, 0.15], 4, 2, True), 0.0)  # the easiest two of 1, 3, 4, 5
    assert whole.rows[:, 0].tolist() == [1, 3, 4, 5]
    assert kept.rows[:, 0].tolist() == [1, 4] and (2 - kept.read_at).tolist() == [1, 0]
    assert pool.waiting.rows[:, 0].tolist() == [5, 3]


def test_an_unknown_pool_is_refused():
    with pytest.raises(ValueError, match="'stale'.*fresh, carry"):
        Pool("stale", 2)
