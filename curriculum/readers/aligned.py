"""`DATA_ALIGN=bos`: rows that each begin at a document's BOS (`RowTable`), in table order or a
seeded permutation per pass."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..order import slot_order
from ..shards import BOS_ID, DataError, read_shard
from .base import DataEvent, ReaderBase, Taken


@dataclass(frozen=True)
class RowTable:
    """`DATA_ALIGN=bos`: rows of seq_len + 1 tokens that each begin at a document's BOS. A row
    holds that document and the next ones in stream order, each cut to `doc_max` tokens, and
    ends at seq_len + 1 tokens, cutting its last document there; the next row begins at the next
    document. So no document is in two rows, and every token not in a row is counted: past a
    document's cut, past a row's end, or at a shard's ends (before its first BOS, or documents
    too few to fill a last row)."""
    seq_len: int
    row_shard: np.ndarray        # [R] the shard of each row
    row_start: np.ndarray        # [R] the row's first token (its BOS), a position in the training stream
    row_skipped: np.ndarray      # [R] tokens of the row's stretch of the stream that it does not hold
    row_documents: np.ndarray    # [R] documents it holds (its last one may be cut)
    first_segment: np.ndarray    # [R + 1] the row's segments: seg_start[first_segment[r]:first_segment[r + 1]]
    seg_start: np.ndarray        # position within the shard
    seg_length: np.ndarray
    documents: int
    skipped: dict                # tokens skipped in one pass: {"cut": ..., "row_end": ..., "shard_ends": ...}

    @classmethod
    def build(cls, shards: list[np.ndarray], seq_len: int, doc_max: int) -> "RowTable":
        width = seq_len + 1
        doc_max = doc_max or width
        shard, start, skipped, documents, first, seg_start, seg_length = [], [], [], [], [0], [], []
        counts = dict(cut=0, row_end=0, shard_ends=0)
        offset, n_docs = 0, 0
        for i, tokens in enumerate(shards):
            bos = np.flatnonzero(np.asarray(tokens) == BOS_ID)
            lengths = (np.append(bos[1:], len(tokens)) - bos).tolist()
            bos_list, n = bos.tolist(), len(bos)
            n_docs += n
            covered, j = 0, 0
            while j < n:
                first_doc, fill, segments = j, 0, []
                while j < n and fill < width:
                    k = min(lengths[j], doc_max, width - fill)
                    segments.append((bos_list[j], k))
                    fill += k
                    j += 1
                if fill < width:  # the shard's last documents cannot fill a row
                    break
                whole = lengths[first_doc:j]
                cut = sum(whole) - sum(min(d, doc_max) for d in whole)
                shard.append(i)
                start.append(offset + bos_list[first_doc])
                skipped.append(sum(whole) - width)  # = what the cuts dropped + the last document past the row's end
                counts["cut"] += cut
                counts["row_end"] += sum(whole) - cut - width
                documents.append(j - first_doc)
                for b, k in segments:
                    seg_start.append(b)
                    seg_length.append(k)
                first.append(len(seg_start))
                covered += sum(whole)
            counts["shard_ends"] += len(tokens) - covered
            offset += len(tokens)
        if not start:
            raise DataError(f"DATA_ALIGN=bos: no row of {width} tokens can be made (documents start at BOS id "
                            f"{BOS_ID}; the shards hold {n_docs} documents)")
        as64 = lambda v: np.asarray(v, dtype=np.int64)
        return cls(seq_len, np.asarray(shard, dtype=np.int32), as64(start), as64(skipped), as64(documents), as64(first),
                   as64(seg_start), as64(seg_length), n_docs, counts)

    @property
    def rows(self) -> int:
        return len(self.row_start)

    def row(self, shards: list[np.ndarray], r: int) -> np.ndarray:
        tokens = shards[int(self.row_shard[r])]
        a, b = int(self.first_segment[r]), int(self.first_segment[r + 1])
        parts = [tokens[s:s + k] for s, k in zip(self.seg_start[a:b].tolist(), self.seg_length[a:b].tolist())]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def describe(self, total_tokens: int, doc_max: int, dataset: str | None = None) -> str:
        kept = self.rows * (self.seq_len + 1)
        sk = self.skipped
        return (f"data: DATA_ALIGN=bos{'' if dataset is None else f' dataset:{dataset}'}: {self.rows:,} rows of "
                f"{self.seq_len + 1} tokens from {self.documents:,} documents ({self.row_documents.mean():.2f} per row), "
                f"a pass holds {kept:,} of the {total_tokens:,} tokens; skipped: {sk['cut']:,} past "
                f"DOC_MAX_TOKENS={doc_max or self.seq_len + 1}, {sk['row_end']:,} past a row's end, "
                f"{sk['shard_ends']:,} at the shards' ends")


@functools.lru_cache(maxsize=8)
def row_table(files: tuple[Path, ...], seq_len: int, doc_max: int) -> RowTable:
    """Built once per shards, length and cut (the warm-up's loader and the run's share it)."""
    return RowTable.build([read_shard(f) for f in files], seq_len, doc_max)


@dataclass(frozen=True)
class AlignedState:
    seq_len: int
    passes: int = 0
    cursor: int = 0
    tokens_skipped: int = 0   # in the stretches of this rank's rows taken so far


class AlignedRows(ReaderBase):
    """`DATA_ALIGN=bos`: the row table's rows in table order (`sequential`) or in a seeded
    permutation per pass (`shuffled`: the permuted unit is the aligned row); each micro-batch
    takes the next world_size x n rows and rank r the r-th n."""
    State = AlignedState
    domain_offset = 1  # a row's domain is its first document's

    def __init__(self, files: list[Path], seq_len: int, rank: int, world_size: int, order: str, seed: int,
                 doc_max: int, dataset: str | None = None):
        super().__init__(dataset)
        self.files, self.rank, self.world_size, self.order, self.seed = list(files), rank, world_size, order, seed
        self.doc_max = doc_max
        self.shards = [read_shard(f) for f in self.files]
        self.total_tokens = sum(len(t) for t in self.shards)
        self.last_rows = np.zeros(0, dtype=np.int64)
        self.seq_len = None
        self._restore(AlignedState(seq_len))

    def _order(self) -> np.ndarray:
        n = self.table.rows
        return slot_order(n, self.seed, self.passes) if self.order == "shuffled" else np.arange(n)

    def _restore(self, state: AlignedState) -> None:
        if state.seq_len != self.seq_len:
            self.seq_len, self.table = state.seq_len, row_table(tuple(self.files), state.seq_len, self.doc_max)
            if self.table.rows < self.world_size:
                raise DataError(f"DATA_ALIGN=bos: {self.table.rows} aligned rows of {state.seq_len + 1} tokens, fewer "
                                f"than the {self.world_size} ranks")
        self.passes, self.cursor, self.tokens_skipped = state.passes, state.cursor, state.tokens_skipped
        self.row_order = self._order()

    def _state(self) -> AlignedState:
        return AlignedState(self.seq_len, self.passes, self.cursor, self.tokens_skipped)

    def reshaped(self, state: dict, seq_len: int) -> dict:
        """Another length makes another table: a new pass of it begins (the pass count goes on)."""
        return state if seq_len == state["seq_len"] else state | dict(seq_len=seq_len, cursor=0)

    def fits_in_pass(self, n: int) -> bool:
        return self.world_size * n <= self.table.rows - self.cursor

    def take(self, n: int) -> Taken:
        parts, need = [], self.world_size * n
        while need:
            if self.cursor == self.table.rows:
                self.passes += 1
                self.cursor, self.row_order = 0, self._order()
                self.events.append(DataEvent("wrap", self.dataset, self.passes + 1))
            k = min(need, self.table.rows - self.cursor)
            parts.append(self.row_order[self.cursor:self.cursor + k])
            self.cursor, need = self.cursor + k, need - k
        self.last_rows = np.concatenate(parts)[self.rank * n:(self.rank + 1) * n]
        self.tokens_skipped += int(self.table.row_skipped[self.last_rows].sum())
        rows = np.stack([self.table.row(self.shards, r) for r in self.last_rows.tolist()])
        return rows, self.table.row_start[self.last_rows], None

    @property
    def tokens_consumed(self) -> int:
        """The stream's tokens in the passes read, pro rata: tokens_consumed / total_tokens is the passes read."""
        return (self.passes * self.table.rows + self.cursor) * self.total_tokens // self.table.rows

    def where(self) -> str:
        shards = self.table.row_shard[self.last_rows].tolist()
        return ", ".join(sorted({str(self.files[i]) for i in shards}))

    def describe(self) -> list[str]:
        return [self.table.describe(self.total_tokens, self.doc_max, self.dataset)]
