"""Difficulty scores: pure functions from a batch of token rows to one number per row.

A score takes integer tokens of shape [B, T] and the vocabulary size and returns a float
tensor [B] on the tokens' device, higher meaning harder. It must not synchronise with the
host: it runs in the training loop, queued on the device ahead of the forward pass.
To add a signal, write the function and register it in SCORES. A signal that needs the
training corpus's statistics takes them as a keyword and is listed in NEEDS_UNIGRAM_COUNTS; the
loader computes them once and binds them.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch import Tensor


@functools.lru_cache(maxsize=32)
def _entropy_terms(length: int, device: torch.device) -> Tensor:
    """p log2(1/p) for p = c / length, c = 0..length: a constant of the row length."""
    wide = torch.float32 if device.type == "mps" else torch.float64
    p = torch.arange(length + 1, dtype=wide, device=device) / length
    # >= 0 term by term and exactly 0 for absent tokens and for p = 1, so a constant row
    # scores +0.0, not -0.0
    return torch.special.xlogy(p, p.reciprocal()) / math.log(2)


def _check(name: str, tokens: Tensor) -> None:
    if tokens.dim() != 2:
        raise ValueError(f"{name}: tokens must have shape [B, T], got {tuple(tokens.shape)}")


def _token_counts(tokens: Tensor, vocab_size: int) -> Tensor:
    """[B, vocab_size] int32 counts of each token per row: one scatter-add, no loop over rows."""
    rows, length = tokens.shape
    counts = torch.zeros(rows, vocab_size, dtype=torch.int32, device=tokens.device)
    ones = torch.ones(1, dtype=torch.int32, device=tokens.device).expand(rows, length)
    return counts.scatter_add_(1, tokens.long(), ones)


def unigram_entropy(tokens: Tensor, vocab_size: int) -> Tensor:
    """Each row's Shannon entropy H = -sum p log2 p, in bits, over its token frequencies.

    Counting is a scatter-add into a [B, vocab_size] table, so every row is scored at once
    with no host synchronisation; counts are integers, exact for any T. A count c of a row of
    length T contributes (c/T) log2(T/c), and c takes only T + 1 values, so the terms are
    looked up in a table of T + 1 entries instead of taking B x vocab_size logarithms. The
    terms are computed in float64 where the device has it and summed in vocabulary order, so
    equal histograms give bit-identical scores and ties stay ties.
    """
    _check("unigram_entropy", tokens)
    rows, length = tokens.shape
    counts = _token_counts(tokens, vocab_size).view(-1)
    # index_select, not table[counts]: advanced indexing is several times slower on CPU
    terms = _entropy_terms(length, tokens.device).index_select(0, counts).view(rows, vocab_size)
    return terms.sum(dim=1).float()


def distinct_ratio(tokens: Tensor, vocab_size: int) -> Tensor:
    """Distinct tokens / row length: lexical diversity. A repetitive row scores low (easy)."""
    _check("distinct_ratio", tokens)
    return (_token_counts(tokens, vocab_size) > 0).sum(dim=1).float() / tokens.size(1)


def repeat_bigram_rate(tokens: Tensor, vocab_size: int) -> Tensor:
    """1 - the fraction of a row's bigrams that already occurred earlier in it: a cheap proxy
    for how compressible the row is (repetitive text is easy). A bigram occurred before
    exactly as many times as the row has bigrams beyond its distinct ones, so sorting each
    row's bigram ids and counting the changes gives it without a loop."""
    _check("repeat_bigram_rate", tokens)
    t = tokens.long()
    ids = torch.sort(t[:, :-1] * vocab_size + t[:, 1:], dim=1).values
    distinct = 1 + (ids[:, 1:] != ids[:, :-1]).sum(dim=1)
    return distinct.float() / ids.size(1)


@functools.lru_cache(maxsize=32)
def _random_weights(length: int, device: torch.device) -> Tensor:
    """Fixed odd multipliers, one per position, from a fixed seed: a constant of the row length."""
    g = torch.Generator().manual_seed(20240520)
    return (torch.randint(1, 2**31, (length,), generator=g) * 2 + 1).to(device)


def random_score(tokens: Tensor, vocab_size: int) -> Tensor:
    """A pseudo-random number in [0, 1) per row, a hash of its tokens: any schedule then keeps
    a uniformly random subset of the pool. The control arm that tells "the ordering helped"
    from "reading twice the data and dropping half helped". The same row always gets the same
    number, so the choice is deterministic."""
    _check("random_score", tokens)
    h = (tokens.long() * _random_weights(tokens.size(1), tokens.device)).sum(dim=1)  # int64 arithmetic wraps, deterministically
    h = h * -7046029254386353131  # an odd 64-bit constant: wraps, and mixes the high bits down
    h = h ^ (h >> 29)
    return (h & (2**40 - 1)).double().div(2**40).float()


def unigram_surprisal(counts: Tensor) -> Tensor:
    """-log2 p(token) for each token id, p estimated from corpus counts with add-one smoothing,
    so a token the corpus never showed is rare but not infinitely so."""
    counts = counts.double()
    return torch.log2((counts.sum() + counts.numel()) / (counts + 1.0)).float()


def unigram_rarity(tokens: Tensor, vocab_size: int, surprisal: Tensor | None = None) -> Tensor:
    """The mean surprisal of a row's tokens under the training corpus's unigram distribution, in
    bits per token ("vocabulary rarity"): rows of common tokens are easy. `surprisal` is
    `unigram_surprisal` of the corpus's counts, on the tokens' device."""
    _check("unigram_rarity", tokens)
    if surprisal is None or surprisal.numel() != vocab_size:
        raise ValueError(f"unigram_rarity: needs the corpus's surprisal table of {vocab_size} entries "
                         f"(curriculum.loader binds it)")
    rows, length = tokens.shape
    return surprisal.index_select(0, tokens.reshape(-1).long()).view(rows, length).mean(dim=1)


ScoreFn = Callable[[Tensor, int], Tensor]
SCORES: dict[str, ScoreFn] = {
    "unigram_entropy": unigram_entropy,
    "distinct_ratio": distinct_ratio,
    "repeat_bigram_rate": repeat_bigram_rate,
    "unigram_rarity": unigram_rarity,
    "random": random_score,
}
NEEDS_UNIGRAM_COUNTS = frozenset({"unigram_rarity"})
