"""Selection: which `keep` sequences of a scored pool a step trains on. Pure functions."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def window_start(pool_size: int, keep: int, percentile: float) -> int:
    """First rank of the `keep`-wide window centred on rank percentile * (pool_size - 1).

    It depends only on sizes and the percentile, never on the scores, so the host computes it
    without waiting for the device."""
    if not 1 <= keep <= pool_size:
        raise ValueError(f"select_window: keep={keep} must be in [1, {pool_size}] (the pool size)")
    if not 0.0 <= percentile <= 1.0:
        raise ValueError(f"select_window: percentile={percentile} must be in [0, 1]")
    centre = percentile * (pool_size - 1)
    start = math.floor(centre - (keep - 1) / 2 + 0.5)
    return min(max(start, 0), pool_size - keep)


def select_window(scores: Tensor, keep: int, percentile: float) -> Tensor:
    """Indices into `scores` of the `keep` sequences whose ascending rank (ties broken by
    index) is centred on `percentile`, in ascending rank order."""
    return split_window(scores, keep, percentile)[0]


def split_window(scores: Tensor, keep: int, percentile: float) -> tuple[Tensor, Tensor]:
    """`select_window`'s indices, and the others (the ranks below the window, then those above):
    the pool's sequences kept now and those left over. The split point is a host number, so
    nothing waits for the device."""
    if scores.dim() != 1:
        raise ValueError(f"select_window: scores must be 1-D, got shape {tuple(scores.shape)}")
    start = window_start(scores.numel(), keep, percentile)
    order = torch.sort(scores, stable=True).indices
    return order[start:start + keep], torch.cat([order[:start], order[start + keep:]])
