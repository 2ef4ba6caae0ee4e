"""Difficulty scores: pure functions from a batch of token rows to one number per row.

A score takes integer tokens of shape [B, T] and the vocabulary size and returns a float
tensor [B] on the tokens' device, higher meaning harder. It must not synchronise with the
host: it runs in the training loop, queued on the device ahead of the forward pass.
To add a signal, write the function and register it in SCORES.
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


def unigram_entropy(tokens: Tensor, vocab_size: int) -> Tensor:
    """Each row's Shannon entropy H = -sum p log2 p, in bits, over its token frequencies.

    Counting is a scatter-add into a [B, vocab_size] table, so every row is scored at once
    with no host synchronisation; counts are integers, exact for any T. A count c of a row of
    length T contributes (c/T) log2(T/c), and c takes only T + 1 values, so the terms are
    looked up in a table of T + 1 entries instead of taking B x vocab_size logarithms. The
    terms are computed in float64 where the device has it and summed in vocabulary order, so
    equal histograms give bit-identical scores and ties stay ties.
    """
    if tokens.dim() != 2:
        raise ValueError(f"unigram_entropy: tokens must have shape [B, T], got {tuple(tokens.shape)}")
    rows, length = tokens.shape
    device = tokens.device
    counts = torch.zeros(rows * vocab_size, dtype=torch.int32, device=device)
    ones = torch.ones(1, dtype=torch.int32, device=device).expand(rows, length)
    counts.view(rows, vocab_size).scatter_add_(1, tokens.long(), ones)
    # index_select, not table[counts]: advanced indexing is several times slower on CPU
    terms = _entropy_terms(length, device).index_select(0, counts).view(rows, vocab_size)
    return terms.sum(dim=1).float()


ScoreFn = Callable[[Tensor, int], Tensor]
SCORES: dict[str, ScoreFn] = {
    "unigram_entropy": unigram_entropy,
}
