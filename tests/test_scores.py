"""curriculum/scores.py"""
from __future__ import annotations

import glob
import math
from collections import Counter

import numpy as np
import pytest
import torch

from curriculum import SCORES, open_shard, select_window, unigram_counts, unigram_entropy
from curriculum.scores import (NEEDS_UNIGRAM_COUNTS, distinct_ratio, random_score, repeat_bigram_rate, unigram_rarity,
                               unigram_surprisal)


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


def real_rows(dataset, rows: int, length: int) -> torch.Tensor:
    train = np.asarray(open_shard(sorted(glob.glob(dataset["data_path"] + "/*train_*.bin"))[0]))
    return torch.from_numpy(train[:rows * length].astype(np.int64)).view(rows, length)


def test_distinct_ratio_and_repeat_bigram_rate_match_python_loops_on_real_text(dataset):
    rows = real_rows(dataset, 48, 257)
    want_distinct, want_repeat = [], []
    for row in rows.tolist():
        want_distinct.append(len(set(row)) / len(row))
        seen, repeats = set(), 0
        for bigram in zip(row, row[1:]):
            repeats += bigram in seen
            seen.add(bigram)
        want_repeat.append(1 - repeats / (len(row) - 1))
    assert distinct_ratio(rows, 1024).tolist() == pytest.approx(want_distinct, abs=1e-6)
    assert repeat_bigram_rate(rows, 1024).tolist() == pytest.approx(want_repeat, abs=1e-6)
    assert max(want_repeat) - min(want_repeat) > 0.1  # real text varies
    repetitive, varied = torch.tensor([[5, 6] * 50]), torch.arange(100).view(1, 100)
    for score in (distinct_ratio, repeat_bigram_rate, unigram_entropy):  # higher is harder
        assert score(repetitive, 128).item() < score(varied, 128).item()


def test_the_random_control_keeps_a_subset_like_the_pool_and_is_deterministic(dataset):
    rows = real_rows(dataset, 64 * 60, 257)
    pools = rows.view(60, 64, 257)
    kept, pooled, by_entropy = [], [], []
    for pool in pools:
        h = unigram_entropy(pool, 1024)
        r = random_score(pool, 1024)
        assert torch.equal(r, random_score(pool.clone(), 1024)) and bool(((r >= 0) & (r < 1)).all())
        kept.append(h[select_window(r, 32, 0.9)])  # where the V would aim: the hard end
        by_entropy.append(h[select_window(h, 32, 0.9)])
        pooled.append(h)
    pool_mean = torch.cat(pooled).mean().item()
    # 1,920 kept rows of real text, entropy std about 0.5 bits: the standard error is about 0.012
    assert abs(torch.cat(kept).mean().item() - pool_mean) < 0.05
    assert torch.cat(by_entropy).mean().item() - pool_mean > 0.2  # the tolerance can tell selection apart


def test_every_score_is_registered_and_returns_one_float_per_row(dataset):
    rows = real_rows(dataset, 8, 65)
    assert set(SCORES) == {"unigram_entropy", "distinct_ratio", "repeat_bigram_rate", "unigram_rarity", "random"}
    surprisal = unigram_surprisal(torch.ones(1024))
    for name, score in SCORES.items():
        extra = dict(surprisal=surprisal) if name in NEEDS_UNIGRAM_COUNTS else {}
        out = score(rows, 1024, **extra)
        assert out.shape == (8,) and out.dtype == torch.float32, name
        with pytest.raises(ValueError, match=r"\[B, T\]"):
            score(torch.arange(5), 1024, **extra)


def test_unigram_rarity_matches_the_mean_surprisal_counted_in_python(dataset):
    train = sorted(glob.glob(dataset["data_path"] + "/*train_*.bin"))
    counts, counted = unigram_counts(train[:1], 1024)
    first = np.asarray(open_shard(train[0]))
    by_python = Counter(first.tolist())
    assert counted == len(first) and counts.tolist() == [by_python.get(t, 0) for t in range(1024)]
    total = sum(counts.tolist())
    bits = [math.log2((total + 1024) / (c + 1)) for c in counts.tolist()]  # add-one smoothing
    rows = real_rows(dataset, 16, 129)
    got = unigram_rarity(rows, 1024, surprisal=unigram_surprisal(torch.from_numpy(counts)))
    assert got.tolist() == pytest.approx([sum(bits[t] for t in r) / len(r) for r in rows.tolist()], abs=1e-4)
    assert max(got.tolist()) - min(got.tolist()) > 0.3  # real rows differ in how common their tokens are
    with pytest.raises(ValueError, match="surprisal table of 1024"):
        unigram_rarity(rows, 1024)


def test_unigram_counts_sample_equally_spaced_pieces_beyond_the_limit(dataset):
    train = sorted(glob.glob(dataset["data_path"] + "/*train_*.bin"))[:2]
    full, n_full = unigram_counts(train, 1024)
    sample, n_sample = unigram_counts(train, 1024, max_tokens=1 << 20, chunk=1 << 16)
    assert n_full == sum(len(open_shard(f)) for f in train) and int(sample.sum()) == n_sample < n_full
    assert n_sample == pytest.approx(1 << 20, rel=0.1)
    p, q = full / full.sum(), sample / sample.sum()
    assert 0.5 * np.abs(p - q).sum() < 0.05  # a 1M-token sample of 8M is close in total variation
