"""Difficulty scores: pure functions from a batch of token rows to one number per row.

A score takes integer tokens of shape [B, T] and the vocabulary size and returns a float
tensor [B] on the tokens' device, higher meaning harder. It must not synchronise with the
host: it runs in the training loop, queued on the device ahead of the forward pass.
To add a signal, write the function and register it in SCORES.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


def unigram_entropy(tokens: Tensor, vocab_size: int) -> Tensor:
    """Each row's Shannon entropy H = -sum p log2 p, in bits, over its token frequencies.

    Counting is a scatter-add into a [B, vocab_size] table, so every row is scored at once;
    counts are integers (exact for any T) and the entropy is taken in float64 where the
    device has it, so equal histograms give bit-identical scores and ties stay ties.
    """
    if tokens.dim() != 2:
        raise ValueError(f"unigram_entropy: tokens must have shape [B, T], got {tuple(tokens.shape)}")
    rows, length = tokens.shape
    counts = torch.zeros(rows, vocab_size, dtype=torch.int64, device=tokens.device)
    counts.scatter_add_(1, tokens.long(), torch.ones_like(tokens, dtype=torch.int64))
    wide = torch.float32 if tokens.device.type == "mps" else torch.float64
    p = counts.to(wide) / length
    # p * log(1/p) is >= 0 term by term (and exactly 0 for absent tokens), so a constant row
    # scores +0.0, not -0.0
    return (torch.special.xlogy(p, p.reciprocal()).sum(dim=1) / math.log(2)).float()


ScoreFn = Callable[[Tensor, int], Tensor]
SCORES: dict[str, ScoreFn] = {
    "unigram_entropy": unigram_entropy,
}
