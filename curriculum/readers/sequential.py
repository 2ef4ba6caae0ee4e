"""`DATA_ORDER=sequential`: the challenge's order, each micro-batch the next span of the stream."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..shards import read_shard, shard_token_count
from .base import DataEvent, ReaderBase, Taken


@dataclass(frozen=True)
class StreamState:
    seq_len: int
    shard_index: int = 0
    position: int = 0   # within the current shard
    offset: int = 0     # tokens taken since the start, across shards and wrap-arounds
    wraps: int = 0      # times the stream went from the last shard back to the first


class TokenStream:
    """The training shards, in order, as one endless stream of tokens (it wraps around)."""

    def __init__(self, files: list[Path]):
        if not files:
            raise ValueError("TokenStream: no training shards")
        self.files = list(files)
        self.shard_index = 0
        self.tokens = read_shard(self.files[0])
        self.position = self.offset = self.wraps = 0

    def take(self, n: int) -> np.ndarray:
        parts, left, empty_shards = [], n, 0
        while left > 0:
            available = len(self.tokens) - self.position
            if available == 0:
                empty_shards += 1
                if empty_shards > len(self.files):
                    raise ValueError("TokenStream: every training shard is empty")
                self.shard_index = (self.shard_index + 1) % len(self.files)
                self.wraps += self.shard_index == 0
                self.tokens, self.position = read_shard(self.files[self.shard_index]), 0
                continue
            k = min(available, left)
            parts.append(self.tokens[self.position:self.position + k])
            self.position += k
            left -= k
            empty_shards = 0
        self.offset += n
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def seek(self, shard_index: int, position: int, offset: int, wraps: int) -> None:
        if shard_index != self.shard_index:
            self.tokens = read_shard(self.files[shard_index])
        self.shard_index, self.position, self.offset, self.wraps = shard_index, position, offset, wraps


class SequentialRows(ReaderBase):
    """The challenge's order: each micro-batch takes the next world_size x (n x seq_len + 1)
    tokens of the stream and rank r the r-th part, cut into n rows that overlap by one token
    (a row's last target is the next row's first input)."""
    State = StreamState

    def __init__(self, files: list[Path], seq_len: int, rank: int, world_size: int, dataset: str | None = None):
        super().__init__(dataset)
        self.stream, self.seq_len, self.rank, self.world_size = TokenStream(files), seq_len, rank, world_size
        self.domain_offset = (seq_len + 1) // 2
        self.total_tokens = sum(shard_token_count(f) for f in files)

    def fits_in_pass(self, n: int) -> bool:
        """Whether n more rows per rank come before the stream starts over."""
        left = self.total_tokens * (self.stream.wraps + 1) - self.stream.offset
        return self.world_size * (n * self.seq_len + 1) <= left

    def take(self, n: int) -> Taken:
        span = n * self.seq_len + 1
        start, wraps = self.stream.offset + self.rank * span, self.stream.wraps
        local = self.stream.take(self.world_size * span)[self.rank * span:(self.rank + 1) * span]
        self.events += [DataEvent("wrap", self.dataset, w + 1) for w in range(wraps + 1, self.stream.wraps + 1)]
        rows = np.lib.stride_tricks.sliding_window_view(local, self.seq_len + 1)[::self.seq_len]
        return rows, start + self.seq_len * np.arange(n, dtype=np.int64), None

    @property
    def tokens_consumed(self) -> int:
        return self.stream.offset

    def where(self) -> str:
        return f"{self.stream.files[self.stream.shard_index]} or the shard before it"

    def _state(self) -> StreamState:
        st = self.stream
        return StreamState(self.seq_len, st.shard_index, st.position, st.offset, st.wraps)

    def _restore(self, state: StreamState) -> None:
        self.stream.seek(state.shard_index, state.position, state.offset, state.wraps)
        self.seq_len, self.domain_offset = state.seq_len, (state.seq_len + 1) // 2
