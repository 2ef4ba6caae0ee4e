"""The late records' document stream (`DATA_LAYOUT=packed`): the shards in sorted order, wrapping
to the first after the last; a shard opened is entered at its first BOS; each batch takes
`world_size` spans of N + 1 tokens and rank r the r-th, and a shard that cannot hold the whole
batch's spans is left for the next. Not a row reader: it hands out spans and their documents'
starts (curriculum/documents.py cuts and packs them), with the same state idiom."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..shards import BOS_ID, DataError, read_shard, shard_token_count


@dataclass(frozen=True)
class DocumentState:
    shard_index: int = 0
    cursor: int = 0
    wraps: int = 0


class DocumentStream:
    """The shards as the records' document-packing loader reads them (see the module's text)."""

    def __init__(self, files: list[Path], rank: int, world_size: int):
        self.files, self.rank, self.world_size = list(files), rank, world_size
        self.lengths = [shard_token_count(f) for f in self.files]
        self.wraps = 0
        self._open(0)

    def _open(self, index: int) -> None:
        self.shard_index = index
        self.tokens = np.asarray(read_shard(self.files[index]))
        self.bos = np.flatnonzero(self.tokens == BOS_ID)
        if not len(self.bos):
            raise DataError(f"{self.files[index]}: no BOS (id {BOS_ID}): documents cannot be found")
        self.cursor = int(self.bos[0])

    def state_dict(self) -> dict:
        return dataclasses.asdict(DocumentState(self.shard_index, self.cursor, self.wraps))

    def load_state_dict(self, state: dict) -> None:
        state = DocumentState(**state)
        if state.shard_index != self.shard_index:
            self._open(state.shard_index)
        self.cursor, self.wraps = state.cursor, state.wraps

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's next span of n + 1 tokens, and the BOS positions among its first n (relative)."""
        span = n + 1
        whole = span * self.world_size
        tried = 0
        while self.cursor + whole > len(self.tokens):
            tried += 1
            if tried > len(self.files):
                raise DataError(f"no training shard holds {whole:,} tokens after its first BOS ({self.world_size} "
                                f"ranks x {span:,}); the largest holds {max(self.lengths):,} tokens")
            following = (self.shard_index + 1) % len(self.files)
            self.wraps += following == 0
            self._open(following)
        start = self.cursor + self.rank * span
        lo, hi = np.searchsorted(self.bos, [start, start + n], side="left")
        self.cursor += whole
        return self.tokens[start:start + span], self.bos[lo:hi] - start

    def where(self) -> str:
        return str(self.files[self.shard_index])
