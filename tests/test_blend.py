"""curriculum/blend.py"""
from __future__ import annotations

import pytest

from curriculum.blend import blend, integer_weights, renormalised


@pytest.mark.parametrize("weights", [[0.5, 0.3, 0.2], [0.7, 0.3], [0.1, 0.0, 0.9], [1 / 3, 1 / 3, 1 / 3]])
def test_realised_counts_stay_within_one_row_after_any_number_of_rows(weights):
    ints = integer_weights(weights)
    picks, _ = blend(ints, [0] * len(ints), 1000)
    for k in range(1, 1001):
        for i, w in enumerate(weights):
            assert abs(picks[:k].count(i) - w * k) < 1.0 + 1e-9, (k, i)
    for start in range(0, 900, 37):  # any window: within two rows
        window = picks[start:start + 100]
        assert all(abs(window.count(i) - 100 * w) < 2.0 for i, w in enumerate(weights))


def test_the_sequence_resumes_from_its_credits_and_ties_go_to_the_first():
    ints = integer_weights([0.5, 0.5])
    whole, _ = blend(ints, [0, 0], 10)
    first, credits = blend(ints, [0, 0], 4)
    rest, _ = blend(ints, credits, 6)
    assert first + rest == whole and whole[:2] == [0, 1]
    with pytest.raises(ValueError, match="every weight is zero"):
        blend([0, 0], [0, 0], 1)


def test_renormalising_after_a_drop():
    assert renormalised([0.5, 0.3, 0.2], {1}) == pytest.approx([0.5 / 0.7, 0.0, 0.2 / 0.7])
    assert renormalised([0.5, 0.5], {0, 1}) == [0.0, 0.0]
