"""The pool a micro-batch chooses from, on the device: `fresh` or `carry`.

`fresh` (the default) scores every sequence read for this micro-batch, keeps the schedule's
window and drops the rest. `carry` keeps the rest waiting on the device: the next pool is the
waiting sequences plus exactly `keep` fresh ones, so the stream is read at the baseline's rate
and every sequence is trained on once, or is still waiting when the run ends. A waiting
sequence keeps its score (a pure function of its tokens) and the micro-batch it was read in.
Only device work and host numbers: nothing here waits for the device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .selection import split_window


@dataclass
class Pooled:
    """Sequences on the device with what travels with them (None: not tracked)."""
    rows: Tensor               # [n, seq_len + 1] tokens
    scores: Tensor             # [n] difficulty
    read_at: Tensor | None     # [n] int64: the micro-batch each was read in (carry only)
    domains: Tensor | None     # [n] int64 domain ids, when the shards have sidecars

    def take(self, index: Tensor) -> "Pooled":
        return Pooled(*(None if t is None else t.index_select(0, index) for t in self._fields()))

    def join(self, later: "Pooled") -> "Pooled":
        return Pooled(*(None if a is None else torch.cat([a, b]) for a, b in zip(self._fields(), later._fields())))

    def _fields(self) -> tuple:
        return self.rows, self.scores, self.read_at, self.domains


POOLS = ("fresh", "carry")


class Pool:
    def __init__(self, kind: str, keep: int):
        if kind not in POOLS:
            raise ValueError(f"Pool: kind {kind!r} must be one of {', '.join(POOLS)}")
        self.kind, self.keep = kind, keep
        self.waiting: Pooled | None = None

    def fresh_needed(self, pool_size: int) -> int:
        """Sequences to read for the next micro-batch: the whole pool, or with `carry` once the
        waiting set is full, exactly `keep`."""
        return pool_size if self.waiting is None else self.keep

    def choose(self, fresh: Pooled, percentile: float) -> tuple[Pooled, Pooled]:
        """(the kept window, the whole pool it was chosen from). The kept rows stay in pool
        order, so a pool no larger than the batch gives exactly the baseline's batch."""
        pool = fresh if self.waiting is None else self.waiting.join(fresh)
        kept, rest = split_window(pool.scores, self.keep, percentile)
        kept = torch.sort(kept).values
        if self.kind == "carry":
            self.waiting = pool.take(rest)
        return pool.take(kept), pool
