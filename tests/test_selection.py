"""curriculum/selection.py"""
from __future__ import annotations

import pytest
import torch

from curriculum import select_window, window_start


def ranks_of(scores, idx):
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return [order.index(i) for i in idx.tolist()]


def test_both_ends_and_middle():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4])  # ranks: 4 0 7 2 5 1 6 3
    assert select_window(scores, 3, 0.0).tolist() == [1, 5, 3]
    assert select_window(scores, 3, 1.0).tolist() == [4, 6, 2]
    mid = select_window(scores, 4, 0.5)
    assert ranks_of(scores.tolist(), mid) == [2, 3, 4, 5]   # centre 3.5: start floor(3.5 - 1.5 + 0.5) = 2
    assert ranks_of(scores.tolist(), select_window(scores, 1, 0.5)) == [4]  # floor(3.5 + 0.5) = 4


def test_window_start_formula_and_clamping():
    assert window_start(10, 4, 0.0) == 0 and window_start(10, 4, 1.0) == 6
    assert window_start(10, 4, 0.5) == 3      # c = 4.5, 4.5 - 1.5 + 0.5 = 3.5 -> 3
    assert window_start(101, 50, 0.45) == 21  # c = 45, 45 - 24.5 + 0.5 = 21
    assert window_start(7, 7, 0.3) == 0


def test_keep_all_returns_every_index_in_rank_order():
    scores = torch.tensor([3.0, 1.0, 2.0])
    assert select_window(scores, 3, 0.7).tolist() == [1, 2, 0]


def test_ties_are_broken_by_index():
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    assert select_window(scores, 2, 0.0).tolist() == [1, 3]
    assert select_window(scores, 3, 1.0).tolist() == [0, 2, 4]
    assert select_window(scores, 2, 1.0).tolist() == [2, 4]


@pytest.mark.parametrize("keep, percentile, message", [
    (0, 0.5, "keep=0"), (6, 0.5, "keep=6"), (2, -0.1, "percentile=-0.1"), (2, 1.5, "percentile=1.5"),
])
def test_invalid_arguments(keep, percentile, message):
    with pytest.raises(ValueError, match=message):
        select_window(torch.zeros(5), keep, percentile)
