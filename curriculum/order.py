"""The order in which fixed-length sequence slots of the training shards are visited.

`DATA_ORDER=shuffled` cuts every shard into slots of seq_len + 1 tokens (slot j of a shard
holds its tokens [j * seq_len, j * seq_len + seq_len + 1); a shard's last partial slot is never
read) and visits all of them once per pass, in a permutation seeded by (SEED, pass). Each
micro-batch takes the next world_size x n slots of the permutation and rank r keeps the r-th
n, so ranks are disjoint and no slot repeats within a pass. Pure functions of numbers.
"""
from __future__ import annotations

import numpy as np

DATA_ORDERS = ("sequential", "shuffled", "curriculum")  # curriculum: curriculum/readers/index_order.py


def slots_per_shard(lengths: list[int], seq_len: int) -> np.ndarray:
    """Whole slots of seq_len + 1 tokens (overlapping by one, like rows) in each shard."""
    return np.asarray([max(n - 1, 0) // seq_len for n in lengths], dtype=np.int64)


def slot_order(num_slots: int, seed: int, pass_index: int) -> np.ndarray:
    """Pass `pass_index`'s permutation of the slots: the same seed and pass, the same order."""
    return np.random.Generator(np.random.PCG64([seed, pass_index])).permutation(num_slots)


def locate_slots(slots: np.ndarray, first_slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard index, slot within that shard) of global slot numbers; `first_slot[i]` is the
    global number of shard i's first slot (a cumulative sum starting at 0)."""
    shard = np.searchsorted(first_slot, slots, side="right") - 1
    return shard, slots - first_slot[shard]


class ProgressFeed:
    """The progress each micro-batch was asked at, in order, for a reader `lag` micro-batches ahead."""

    def __init__(self, lag: int):
        self.lag, self.first, self.values = lag, 0, []

    def observe(self, micro_batch: int, progress: float) -> None:
        if micro_batch == self.first + len(self.values):
            self.values.append(float(progress))

    def at(self, micro_batch: int) -> float:
        """The progress of micro-batch `micro_batch - lag` (0 before there is one)."""
        k = micro_batch - self.lag
        if k < self.first:
            return self.values[0] if k >= 0 and self.values else 0.0
        return self.values[k - self.first] if k - self.first < len(self.values) else (self.values[-1] if self.values else 0.0)

    def state_dict(self) -> dict:
        keep = 4 * self.lag + 8
        return dict(first=self.first + max(len(self.values) - keep, 0), values=self.values[-keep:])

    def load_state_dict(self, state: dict) -> None:
        self.first, self.values = state["first"], list(state["values"])
