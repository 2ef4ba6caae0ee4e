"""Shuffled fixed-length sequences, the late records' calibration order (their GPTQ pass reads it).

Rank r reads the shards `sorted(glob)[r::world_size]` with one generator, PCG64(r). Each shard of
n tokens gets a phase in [0, min(seq_len - 1, n - seq_len - 1)] and a permutation of the
sequence starts `phase + k x seq_len`, used from the end of the list. Each row picks a shard with
probability proportional to the starts it has left and takes the seq_len + 1 tokens at its next
start; when every shard is used up, all are drawn again, shard by shard. The generator's calls
are exactly these, in this order: the same rank gives the same rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .shards import DataError, read_shard


class ShuffledSequences:
    def __init__(self, files: list[Path], rank: int, world_size: int, seq_len: int):
        self.files = list(files)[rank::world_size]
        if not self.files:
            raise DataError(f"{len(files)} training shards for {world_size} ranks: rank {rank} has none "
                            f"(the calibration order gives rank r the shards r, r + world_size, ...)")
        self.seq_len = seq_len
        self.shards = [read_shard(f) for f in self.files]
        self.rng = np.random.Generator(np.random.PCG64(rank))
        self.starts: list[list[int]] = [[] for _ in self.files]
        self._draw_all()

    def _draw(self, i: int) -> None:
        n, L = len(self.shards[i]), self.seq_len
        top = min(L - 1, max(0, n - L - 1))
        phase = int(self.rng.integers(top + 1)) if top > 0 else 0
        self.starts[i] = (phase + self.rng.permutation(max((n - 1 - phase) // L, 0)) * L).tolist()

    def _draw_all(self) -> None:
        for i in range(len(self.files)):
            self._draw(i)
        if not any(self.starts):
            raise DataError(f"no shard of this rank holds a sequence of {self.seq_len + 1} tokens")

    def take(self, rows: int) -> np.ndarray:
        """[rows, seq_len + 1] int64: the next rows in the calibration order."""
        out = np.empty((rows, self.seq_len + 1), dtype=np.int64)
        left = np.array([len(s) for s in self.starts], dtype=np.float64)
        for r in range(rows):
            if left.sum() <= 0:
                self._draw_all()
                left = np.array([len(s) for s in self.starts], dtype=np.float64)
            i = int(self.rng.choice(len(self.files), p=left / left.sum()))
            start = self.starts[i].pop()
            left[i] -= 1
            out[r] = self.shards[i][start:start + self.seq_len + 1]
        return out
