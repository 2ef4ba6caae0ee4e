"""The index's signals against independent, straightforward implementations, on real text."""
from __future__ import annotations

import glob
import math
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
import zstandard

from curriculum.scores import SCORES
from curriculum.shards import open_shard
from curriculum.signals import (ByteTable, compression_ratio, compute_signals, lexical_diversity, readability,
                                token_signal)


@pytest.fixture(scope="module")
def real_rows(dataset):
    """400 rows of 129 tokens from each domain's first training shard (prose, docs, code)."""
    parts = []
    for name, folder in sorted(dataset["folders"].items()):
        if "_mix_" in name:
            continue
        tokens = np.asarray(open_shard(sorted(glob.glob(str(Path(folder) / "*train_*.bin")))[0]))
        starts = np.linspace(0, len(tokens) - 130, 400).astype(np.int64)
        parts.append(np.stack([tokens[s:s + 129] for s in starts]))
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def sp(dataset):
    return spm.SentencePieceProcessor(model_file=dataset["tokenizer"])


@pytest.fixture(scope="module")
def table(dataset):
    return ByteTable.from_sentencepiece(dataset["tokenizer"], dataset["vocab_size"])


def test_the_byte_table_decodes_as_sentencepiece_does(real_rows, sp, table):
    ours = table.decode(real_rows)
    same = sum(o.lstrip(b" ") == sp.decode(r.tolist()).encode("utf-8").lstrip(b" ") for o, r in zip(ours, real_rows))
    # sentencepiece replaces bytes that are not UTF-8 (a row cut inside a character) and drops the
    # first word mark; every other row must be byte for byte the same
    assert same >= 0.97 * len(real_rows)
    assert all(len(o) > 0 for o in ours)


def test_the_token_signals_in_bulk_equal_the_online_scores(real_rows):
    t = torch.from_numpy(real_rows.astype(np.int64))
    surprisal = torch.rand(1024, generator=torch.Generator().manual_seed(0)) * 10
    for name in ("unigram_entropy", "distinct_ratio", "repeat_bigram_rate", "random", "unigram_rarity"):
        kwargs = dict(surprisal=surprisal) if name == "unigram_rarity" else {}
        online = SCORES[name](t, 1024, **kwargs).numpy()
        np.testing.assert_allclose(token_signal(name, real_rows, 1024, surprisal), online, rtol=1e-6, atol=1e-6,
                                   err_msg=name)


def _words(text: bytes) -> list[bytes]:
    return text.split()


def naive_mattr(words: list, window: int) -> float:
    if not words:
        return 0.0
    if len(words) <= window:
        return len(set(words)) / len(words)
    ratios = [len(set(words[i:i + window])) / window for i in range(len(words) - window + 1)]
    return sum(ratios) / len(ratios)


def naive_grade(text: bytes) -> float:
    words = text.split()
    if not words:
        return 0.0
    syllables = 0
    for w in words:
        runs, inside = 0, False
        for ch in w.decode("latin-1"):
            vowel = ch in "aeiouyAEIOUY"
            runs += vowel and not inside
            inside = vowel
        syllables += max(runs, 1)
    sentences, i = 0, 0
    while i < len(text):
        if text[i:i + 1] in (b".", b"!", b"?"):
            sentences += 1
            while i < len(text) and text[i:i + 1] in (b".", b"!", b"?"):
                i += 1
        else:
            i += 1
    return 0.39 * len(words) / max(sentences, 1) + 11.8 * syllables / len(words) - 15.59


def test_lexical_diversity_is_mattr_by_brute_force(real_rows, table):
    texts = table.decode(real_rows)
    for window in (5, 50):
        expected = np.asarray([naive_mattr(_words(t), window) for t in texts])
        np.testing.assert_allclose(lexical_diversity(texts, window), expected, rtol=1e-5, atol=1e-6)


def test_mattr_by_hand():
    texts = [b"a b a b", b"a a a a", b"x", b"", b"a b c"]
    np.testing.assert_allclose(lexical_diversity(texts, 2), [1.0, 0.5, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(lexical_diversity([b"a b a c"], 3), [(2 / 3 + 1.0) / 2])


def test_readability_is_the_flesch_kincaid_grade_by_brute_force(real_rows, table):
    texts = table.decode(real_rows)
    np.testing.assert_allclose(readability(texts), [naive_grade(t) for t in texts], rtol=1e-5, atol=1e-4)
    # by hand: 4 words, 1 sentence, syllables the(1) cat(1) sat(1) rhythm(1: "y") -> 0.39*4 + 11.8 - 15.59
    assert readability([b"The cat sat rhythm."])[0] == pytest.approx(0.39 * 4 + 11.8 * 4 / 4 - 15.59, abs=1e-5)


def test_compression_ratio_is_zstds_size_over_the_texts(real_rows, sp, table):
    ours = compression_ratio(table.decode(real_rows))
    plain = np.asarray([len(zstandard.compress(t.encode("utf-8"), 3)) / max(len(t.encode("utf-8")), 1)
                        for t in sp.decode([r.tolist() for r in real_rows])])
    # the same compressor on the same text; only the frame header (a few bytes) and the first space differ
    assert np.abs(ours - plain).max() < 0.05
    assert np.corrcoef(ours, plain)[0, 1] > 0.99
    # higher = harder: repeated text compresses, varied text does not
    assert compression_ratio([b"abc " * 100])[0] < 0.1 < compression_ratio([bytes(range(32, 127)) * 2])[0]


def test_code_compresses_best_and_prose_is_the_most_varied(dataset, real_rows, table):
    """The signals tell the corpus's domains apart in the expected directions (rows 0-399 code,
    400-799 docs, 800-1199 prose: the folders in name order)."""
    scores = compute_signals(["compression_ratio", "lexical_diversity"], real_rows, 1024, table)
    code, docs, prose = (scores["compression_ratio"][i * 400:(i + 1) * 400].mean() for i in range(3))
    assert code < prose
    code, docs, prose = (scores["lexical_diversity"][i * 400:(i + 1) * 400].mean() for i in range(3))
    assert code < prose
    assert all(math.isfinite(v) for s in scores.values() for v in s)


def test_every_signal_and_score_works_at_vocab_8192_and_tells_rows_apart(dataset_8192):
    """The late records' vocabulary: every row score (the loop's) and every index signal, on real
    rows of the embedded corpus tokenized with its own 8192-token tokenizer."""
    from curriculum.config import SIGNALS
    from curriculum.scores import unigram_surprisal
    from curriculum.shards import unigram_counts
    files = sorted(glob.glob(dataset_8192["data_path"] + "/*train_*.bin"))
    tokens = np.asarray(open_shard(files[0]))
    assert int(tokens.max()) >= 1024  # ids a 1024-entry table could not hold
    rows = tokens[:64 * 129].reshape(64, 129).astype(np.int64)
    surprisal = unigram_surprisal(torch.from_numpy(unigram_counts(files, 8192)[0]))
    table = ByteTable.from_sentencepiece(dataset_8192["tokenizer"], 8192)
    names = [n for n in SIGNALS if n not in ("proxy_loss",)]
    signals = compute_signals(names, rows, 8192, table, surprisal)
    for name in names:
        assert signals[name].shape == (64,) and np.isfinite(signals[name]).all(), name
        assert len(np.unique(signals[name])) > 32, name  # the rows differ, and the signal says so
    for name, score in SCORES.items():
        kwargs = dict(surprisal=surprisal) if name == "unigram_rarity" else {}
        assert torch.equal(score(torch.from_numpy(rows), 8192, **kwargs), score(torch.from_numpy(rows), 8192, **kwargs))
