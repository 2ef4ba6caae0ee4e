"""Blending: which dataset supplies each row of a micro-batch. Pure functions of numbers.

A smooth weighted round-robin over integer weights: every row, each dataset's credit grows by
its weight and the richest dataset (the first on ties) supplies the row and pays the total
weight back. The sequence is deterministic, the same on every rank, and the realised counts
stay within one row of weight x rows after any number of rows, so the proportions are exact
over every window up to two rows, not drifting as random draws would.
"""
from __future__ import annotations

SCALE = 1_000_000  # weights are compared as integers: no rounding drift, identical everywhere


def integer_weights(weights: list[float]) -> list[int]:
    """Weights as integers of the same proportions (zero stays zero)."""
    return [round(w * SCALE) for w in weights]


def blend(weights: list[int], credits: list[int], n: int) -> tuple[list[int], list[int]]:
    """The datasets of the next n rows, and the credits to continue from."""
    credits, total, picks = list(credits), sum(weights), []
    if total <= 0:
        raise ValueError("blend: every weight is zero")
    for _ in range(n):
        credits = [c + w for c, w in zip(credits, weights)]
        best = max(range(len(weights)), key=lambda i: (credits[i], -i))
        credits[best] -= total
        picks.append(best)
    return picks, credits


def renormalised(weights: list[float], dropped: set[int]) -> list[float]:
    """The weights with the dropped datasets removed and the rest scaled to sum to 1."""
    left = sum(w for i, w in enumerate(weights) if i not in dropped)
    return [0.0 if i in dropped or left == 0 else w / left for i, w in enumerate(weights)]
