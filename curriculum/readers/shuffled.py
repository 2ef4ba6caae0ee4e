"""`DATA_ORDER=shuffled`: fixed slots of every shard in a seeded permutation per pass."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..order import locate_slots, slot_order, slots_per_shard
from ..shards import DataError, read_shard
from .base import DataEvent, ReaderBase, Taken


@dataclass(frozen=True)
class ShuffledState:
    seq_len: int
    passes: int = 0   # permutations finished
    cursor: int = 0   # slots of the current permutation taken


class ShuffledRows(ReaderBase):
    """Fixed slots of every shard in a seeded permutation per pass (curriculum/order.py); each
    micro-batch takes the next world_size x n slots and rank r the r-th n."""
    State = ShuffledState

    def __init__(self, files: list[Path], seq_len: int, rank: int, world_size: int, seed: int,
                 dataset: str | None = None, open_shard=read_shard):
        super().__init__(dataset)
        self.files, self.rank, self.world_size, self.seed = files, rank, world_size, seed
        self.shards = [open_shard(f) for f in files]  # open_shard: the bench compares a memory map
        self.lengths = [len(t) for t in self.shards]
        self.total_tokens = sum(self.lengths)
        self.shard_start = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.last_slots = np.zeros(0, dtype=np.int64)
        self.seq_len = None
        self._restore(ShuffledState(seq_len))

    def fits_in_pass(self, n: int) -> bool:
        return self.world_size * n <= self.num_slots - self.cursor

    def _state(self) -> ShuffledState:
        return ShuffledState(self.seq_len, self.passes, self.cursor)

    def _restore(self, state: ShuffledState) -> None:
        if state.seq_len != self.seq_len:  # another length cuts other slots
            self.seq_len, self.domain_offset = state.seq_len, (state.seq_len + 1) // 2
            per_shard = slots_per_shard(self.lengths, state.seq_len)
            self.first_slot = np.concatenate([[0], np.cumsum(per_shard)[:-1]]).astype(np.int64)
            self.num_slots = int(per_shard.sum())
            if self.num_slots < self.world_size:
                raise DataError(f"DATA_ORDER=shuffled: the training shards hold {self.num_slots} whole sequences of "
                                f"{state.seq_len + 1} tokens, fewer than the {self.world_size} ranks")
        self.passes, self.cursor = state.passes, state.cursor
        self.order = slot_order(self.num_slots, self.seed, self.passes)

    def reshaped(self, state: dict, seq_len: int) -> dict:
        """Another length cuts other slots: a new permutation of them begins (the pass count goes on)."""
        return state if seq_len == state["seq_len"] else dict(seq_len=seq_len, passes=state["passes"], cursor=0)

    def take(self, n: int) -> Taken:
        parts, need = [], self.world_size * n
        while need:
            if self.cursor == self.num_slots:  # a new pass begins only when a slot of it is read
                self.passes += 1
                self.order, self.cursor = slot_order(self.num_slots, self.seed, self.passes), 0
                self.events.append(DataEvent("wrap", self.dataset, self.passes + 1))
            k = min(need, self.num_slots - self.cursor)
            parts.append(self.order[self.cursor:self.cursor + k])
            self.cursor, need = self.cursor + k, need - k
        self.last_slots = np.concatenate(parts)[self.rank * n:(self.rank + 1) * n]
        shard, slot = locate_slots(self.last_slots, self.first_slot)
        L = self.seq_len
        rows = np.stack([self.shards[i][j * L:j * L + L + 1] for i, j in zip(shard.tolist(), slot.tolist())])
        return rows, self.shard_start[shard] + L * slot, None

    @property
    def tokens_consumed(self) -> int:
        return (self.passes * self.num_slots + self.cursor) * self.seq_len

    def where(self) -> str:
        shard, _ = locate_slots(self.last_slots, self.first_slot)
        return ", ".join(sorted({str(self.files[i]) for i in shard.tolist()}))
