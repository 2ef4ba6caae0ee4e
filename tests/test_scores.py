"""curriculum/scores.py"""
from __future__ import annotations

import glob
import math
from collections import Counter

import numpy as np
import pytest
import torch

from curriculum import SCORES, open_shard, unigram_entropy


def entropy_by_counting(row) -> float:
    n = len(row)
    return -sum(c / n * math.log2(c / n) for c in Counter(row).values())


def test_matches_counting_on_random_rows():
    g = torch.Generator().manual_seed(0)
    for vocab, length in ((7, 5), (1024, 129), (50, 2049)):
        tokens = torch.randint(0, vocab, (16, length), generator=g)
        got = unigram_entropy(tokens, vocab)
        want = [entropy_by_counting(r) for r in tokens.tolist()]
        assert got.shape == (16,) and got.dtype == torch.float32
        assert got.tolist() == pytest.approx(want, abs=1e-5)


def test_matches_counting_on_real_text_rows(dataset):
    val = np.asarray(open_shard(sorted(glob.glob(dataset["data_path"] + "/*val_*.bin"))[0]))
    rows = torch.from_numpy(val[:64 * 257].astype(np.int64)).view(64, 257)
    got = unigram_entropy(rows, dataset["vocab_size"]).tolist()
    assert got == pytest.approx([entropy_by_counting(r) for r in rows.tolist()], abs=1e-5)
    assert max(got) - min(got) > 0.5  # real text varies in difficulty


def test_constant_row_is_zero_and_all_distinct_row_is_log2_length():
    assert unigram_entropy(torch.full((1, 300), 5), 8).tolist() == [0.0]
    assert math.copysign(1.0, unigram_entropy(torch.full((1, 3), 1), 4).item()) == 1.0  # +0.0, not -0.0
    for t in (1, 2, 17, 1000):
        assert unigram_entropy(torch.arange(t).view(1, t), 1000).item() == pytest.approx(math.log2(t), abs=1e-6)


def test_equal_histograms_tie_exactly():
    a = torch.tensor([[1, 2, 2, 3, 3, 3], [3, 2, 3, 1, 3, 2], [4, 4, 5, 6, 5, 6]])
    h = unigram_entropy(a, 8)
    assert h[0].item() == h[1].item() and h[1].item() != h[2].item()


def test_rejects_non_matrix_and_is_registered():
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        unigram_entropy(torch.arange(5), 8)
    assert SCORES["unigram_entropy"] is unigram_entropy
