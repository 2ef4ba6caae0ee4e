"""The readers: rows of seq_len + 1 tokens from the training shards, each rank its disjoint share.

Three readers share one interface (`Rows`): `SequentialRows` (the challenge's order, the next
span of the stream), `ShuffledRows` (a seeded permutation of fixed slots per pass,
curriculum/order.py) and `MixedRows` (several datasets blended row by row, curriculum/blend.py).
Each has a dataclass state that holds everything needed to go on exactly where it stands,
seq_len included; `reshaped` gives the state a new sequence length starts from. What a reader
did worth a log line (a pass begun, a dataset dropped) comes out as `DataEvent`s.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .config import DATA_ALIGNS  # noqa: F401  (re-exported for the loader)
from .blend import blend, integer_weights, natural_picks, renormalised
from .order import locate_slots, slot_order, slots_per_shard
from .shards import BOS_ID, DataError, read_shard, shard_token_count  # noqa: F401  (DataError re-exported)


class DataExhausted(Exception):
    """Every dataset of the phase's mixture is used up (on_exhaust = "drop"): training ends here."""


@dataclass(frozen=True)
class DataEvent:
    """A pass begun (`wrap`) or a dataset leaving the mixture (`drop`); dataset None is the
    whole training stream."""
    kind: str
    dataset: str | None = None
    passes: int = 0
    mixture: str = ""   # after a drop: the weights the others go on with

    def __str__(self) -> str:
        if self.kind == "drop":
            return f"drop dataset:{self.dataset} (used up) mixture:{self.mixture}"
        return f"wrap dataset:{self.dataset} pass:{self.passes}"

    def line(self, step: int) -> str:
        if self.dataset is None:
            return (f"data: wrap step:{step} pass:{self.passes} the training stream started over from its first shard; "
                    f"from here on every token has been read before")
        return f"data: {self} step:{step}"


Taken = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # rows [n, seq_len + 1], stream positions, datasets


class Rows(Protocol):
    """What the read-ahead needs of a reader."""
    total_tokens: int

    def take(self, n: int) -> Taken: ...
    def fits_in_pass(self, n: int) -> bool: ...
    def state(self): ...
    def restore(self, state) -> None: ...
    def reshaped(self, state, seq_len: int): ...
    def state_from(self, saved: dict): ...
    def new_events(self) -> list[DataEvent]: ...
    def where(self) -> str: ...
    def describe(self) -> list[str]: ...   # lines for the log when the reader is made

    domain_offset: int          # a row's domain is that of its token at this offset
    tokens_skipped: int         # of the stream, in this rank's rows' stretches, not in its rows
    last_draw: object           # DATA_ORDER=curriculum: the last take's draw (curriculum/index_order.py), else None

    @property
    def tokens_consumed(self) -> int: ...


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


class SequentialRows:
    """The challenge's order: each micro-batch takes the next world_size x (n x seq_len + 1)
    tokens of the stream and rank r the r-th part, cut into n rows that overlap by one token
    (a row's last target is the next row's first input)."""

    last_draw = None

    tokens_skipped = 0

    def __init__(self, files: list[Path], seq_len: int, rank: int, world_size: int, dataset: str | None = None):
        self.stream, self.seq_len, self.rank, self.world_size = TokenStream(files), seq_len, rank, world_size
        self.domain_offset = (seq_len + 1) // 2
        self.total_tokens = sum(shard_token_count(f) for f in files)
        self.dataset, self.events = dataset, []

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

    def describe(self) -> list[str]:
        return []

    def new_events(self) -> list[DataEvent]:
        events, self.events = self.events, []
        return events

    def state(self) -> StreamState:
        st = self.stream
        return StreamState(self.seq_len, st.shard_index, st.position, st.offset, st.wraps)

    def restore(self, state: StreamState) -> None:
        self.stream.seek(state.shard_index, state.position, state.offset, state.wraps)
        self.seq_len, self.domain_offset = state.seq_len, (state.seq_len + 1) // 2

    @staticmethod
    def reshaped(state: StreamState, seq_len: int) -> StreamState:
        """The stream goes on where it stands, cut into rows of the new length."""
        return dataclasses.replace(state, seq_len=seq_len)

    @staticmethod
    def state_from(saved: dict) -> StreamState:
        return StreamState(**saved)


@dataclass(frozen=True)
class ShuffledState:
    seq_len: int
    passes: int = 0   # permutations finished
    cursor: int = 0   # slots of the current permutation taken


class ShuffledRows:
    """`DATA_ORDER=shuffled`: fixed slots of every shard in a seeded permutation per pass
    (curriculum/order.py); each micro-batch takes the next world_size x n slots and rank r the
    r-th n."""

    last_draw = None

    tokens_skipped = 0

    def __init__(self, files: list[Path], seq_len: int, rank: int, world_size: int, seed: int,
                 dataset: str | None = None):
        self.files, self.rank, self.world_size, self.seed = files, rank, world_size, seed
        self.shards = [read_shard(f) for f in files]
        self.lengths = [len(t) for t in self.shards]
        self.total_tokens = sum(self.lengths)
        self.shard_start = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.last_slots = np.zeros(0, dtype=np.int64)
        self.dataset, self.events, self.seq_len = dataset, [], None
        self.restore(ShuffledState(seq_len))

    def fits_in_pass(self, n: int) -> bool:
        return self.world_size * n <= self.num_slots - self.cursor

    def state(self) -> ShuffledState:
        return ShuffledState(self.seq_len, self.passes, self.cursor)

    def restore(self, state: ShuffledState) -> None:
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

    @staticmethod
    def reshaped(state: ShuffledState, seq_len: int) -> ShuffledState:
        """Another length cuts other slots: a new permutation of them begins (the pass count goes on)."""
        return state if seq_len == state.seq_len else ShuffledState(seq_len, state.passes, 0)

    @staticmethod
    def state_from(saved: dict) -> ShuffledState:
        return ShuffledState(**saved)

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

    def describe(self) -> list[str]:
        return []

    def new_events(self) -> list[DataEvent]:
        events, self.events = self.events, []
        return events


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


class AlignedRows:
    """`DATA_ALIGN=bos`: the row table's rows in table order (`sequential`) or in a seeded
    permutation per pass (`shuffled`: the permuted unit is the aligned row); each micro-batch
    takes the next world_size x n rows and rank r the r-th n."""

    last_draw = None
    domain_offset = 1  # a row's domain is its first document's

    def __init__(self, files: list[Path], seq_len: int, rank: int, world_size: int, order: str, seed: int,
                 doc_max: int, dataset: str | None = None):
        self.files, self.rank, self.world_size, self.order, self.seed = list(files), rank, world_size, order, seed
        self.doc_max, self.dataset, self.events = doc_max, dataset, []
        self.shards = [read_shard(f) for f in self.files]
        self.total_tokens = sum(len(t) for t in self.shards)
        self.last_rows = np.zeros(0, dtype=np.int64)
        self.seq_len = None
        self.restore(AlignedState(seq_len))

    def _order(self) -> np.ndarray:
        n = self.table.rows
        return slot_order(n, self.seed, self.passes) if self.order == "shuffled" else np.arange(n)

    def restore(self, state: AlignedState) -> None:
        if state.seq_len != self.seq_len:
            self.seq_len, self.table = state.seq_len, row_table(tuple(self.files), state.seq_len, self.doc_max)
            if self.table.rows < self.world_size:
                raise DataError(f"DATA_ALIGN=bos: {self.table.rows} aligned rows of {state.seq_len + 1} tokens, fewer "
                                f"than the {self.world_size} ranks")
        self.passes, self.cursor, self.tokens_skipped = state.passes, state.cursor, state.tokens_skipped
        self.row_order = self._order()

    def state(self) -> AlignedState:
        return AlignedState(self.seq_len, self.passes, self.cursor, self.tokens_skipped)

    @staticmethod
    def reshaped(state: AlignedState, seq_len: int) -> AlignedState:
        """Another length makes another table: a new pass of it begins (the pass count goes on)."""
        return state if seq_len == state.seq_len else AlignedState(seq_len, state.passes, 0, state.tokens_skipped)

    @staticmethod
    def state_from(saved: dict) -> AlignedState:
        return AlignedState(**saved)

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

    def new_events(self) -> list[DataEvent]:
        events, self.events = self.events, []
        return events

    def describe(self) -> list[str]:
        return [self.table.describe(self.total_tokens, self.doc_max, self.dataset)]


@dataclass(frozen=True)
class Mixture:
    """Named datasets blended by weight (a phase's `mixture`)."""
    names: tuple[str, ...]
    files: tuple[tuple[Path, ...], ...]
    on_exhaust: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class MixedState:
    readers: tuple            # each dataset's reader state
    weights: tuple[float, ...]
    credits: tuple[int, ...] = ()      # the blend's, () at a fresh start
    dropped: tuple[int, ...] = ()      # datasets used up (on_exhaust = "drop")
    draws: int = 0                     # micro-batches drawn: MIX=natural's seed and MIX=adaptive's schedule
    seq_len: int = field(init=False, default=0)

    def __post_init__(self):
        object.__setattr__(self, "seq_len", self.readers[0].seq_len)


class MixedRows:
    """Several datasets blended row by row (curriculum/blend.py): each dataset is its own stream
    of which each rank reads its disjoint part, and every rank computes the same sequence of
    datasets. A dataset that would start over either wraps (an event, a pass count) or, with
    on_exhaust = "drop", leaves the mixture and the others' weights are re-normalised."""

    last_draw = None

    domain_offset = 0  # each row's domain is its dataset, given with the rows

    def __init__(self, mixture: Mixture, seq_len: int, rank: int, world_size: int, order: str = "sequential",
                 seed: int = 0, align: str = "none", doc_max: int = 0, natural: bool = False, schedule=None):
        self.mixture, self.world_size, self.seed = mixture, world_size, seed
        self.natural, self.schedule = natural, schedule  # MIX=natural: random picks; MIX=adaptive: the weights' schedule
        self.readers = [open_rows(list(files), None, seq_len, rank, world_size, order, seed + i, align, doc_max, name)
                        for i, (name, files) in enumerate(zip(mixture.names, mixture.files))]  # each its own order
        self.totals = [r.total_tokens for r in self.readers]
        self.total_tokens = sum(self.totals)
        self.events: list[DataEvent] = []
        self.restore(MixedState(tuple(r.state() for r in self.readers), tuple(mixture.weights)))

    def restore(self, state: MixedState) -> None:
        for reader, st in zip(self.readers, state.readers):
            reader.restore(st)
        self.draws = state.draws
        self._blend(list(state.weights), set(state.dropped), list(state.credits))

    def _blend(self, weights: list[float], dropped: set[int], credits: list[int]) -> None:
        self.base_weights, self.dropped = weights, dropped
        self.weights = renormalised(self.base_weights, self.dropped)
        self.ints = integer_weights(self.weights)
        self.credits = credits or [0] * len(self.base_weights)

    def state(self) -> MixedState:
        return MixedState(tuple(r.state() for r in self.readers), tuple(self.base_weights), tuple(self.credits),
                          tuple(sorted(self.dropped)), self.draws)

    def reshaped(self, state: MixedState, seq_len: int) -> MixedState:
        return dataclasses.replace(state, readers=tuple(r.reshaped(st, seq_len) for r, st in zip(self.readers, state.readers)))

    @staticmethod
    def reweighted(state: MixedState, weights: list[float]) -> MixedState:
        """The same streams under new weights (a new phase): the blend starts afresh."""
        return dataclasses.replace(state, weights=tuple(weights), credits=())

    def state_from(self, saved: dict) -> MixedState:
        return MixedState(tuple(r.state_from(st) for r, st in zip(self.readers, saved["readers"])), tuple(saved["weights"]),
                          tuple(saved["credits"]), tuple(saved["dropped"]), saved["draws"])

    def _drop(self, out: list[int]) -> None:
        self._blend(self.base_weights, self.dropped | set(out), [])  # the readers stay where they are
        mixture = ",".join(f"{name}={w:.3f}" for name, w in zip(self.mixture.names, self.weights))
        self.events += [DataEvent("drop", self.mixture.names[d], mixture=mixture) for d in sorted(out)]

    def take(self, n: int) -> Taken:
        """n rows, their positions in their datasets' streams, and each row's dataset."""
        scheduled = None if self.schedule is None else self.schedule.at(self.draws)
        if scheduled is not None and tuple(scheduled) != tuple(self.base_weights):  # MIX=adaptive moved the weights
            self._blend(list(scheduled), self.dropped, [])
        while True:
            if not any(self.ints):
                dropped = ", ".join(self.mixture.names[d] for d in sorted(self.dropped))
                raise DataExhausted(f"every dataset of the phase's mixture is used up (on_exhaust = \"drop\": {dropped})")
            if self.natural:
                picks, credits = natural_picks(self.weights, n, self.seed, self.draws), self.credits
            else:
                picks, credits = blend(self.ints, self.credits, n)
            wanted = {d: picks.count(d) for d in set(picks)}
            out = [d for d, k in wanted.items() if self.mixture.on_exhaust[d] == "drop"
                   and not self.readers[d].fits_in_pass(k)]
            if not out:
                break
            self._drop(out)
        self.credits = credits
        self.draws += 1
        parts = {}
        for d, k in sorted(wanted.items()):
            parts[d] = self.readers[d].take(k)
            self.events += self.readers[d].new_events()
        taken = {d: 0 for d in parts}
        rows, positions = [], []
        for d in picks:
            rows.append(parts[d][0][taken[d]])
            positions.append(parts[d][1][taken[d]])
            taken[d] += 1
        return np.stack(rows), np.asarray(positions, dtype=np.int64), np.asarray(picks, dtype=np.int64)

    def new_events(self) -> list[DataEvent]:
        events, self.events = self.events, []
        return events

    @property
    def tokens_consumed(self) -> int:
        return sum(r.tokens_consumed for r in self.readers)

    @property
    def tokens_skipped(self) -> int:
        return sum(r.tokens_skipped for r in self.readers)

    def where(self) -> str:
        return "; ".join(r.where() for r in self.readers)

    def describe(self) -> list[str]:
        return [line for r in self.readers for line in r.describe()]


def open_rows(files: list[Path] | None, mixture: Mixture | None, seq_len: int, rank: int, world_size: int,
              order: str, seed: int, align: str = "none", doc_max: int = 0, dataset: str | None = None,
              index_order=None, natural: bool = False, schedule=None) -> Rows:
    """The reader for a run: the mixture's datasets blended, or the training shards in `order`,
    as contiguous spans or (`align="bos"`) rows that begin at a document. `index_order` is
    DATA_ORDER=curriculum's (OrderConfig, ProgressFeed, vocab_size, tokenizer)."""
    if order == "curriculum":
        if mixture is not None:
            raise DataError("DATA_ORDER=curriculum reads one training set's index; a phases file's mixture of datasets "
                            "cannot use it (use DATA_ORDER=shuffled there)")
        from .index_order import CurriculumRows
        config, feed, vocab_size, tokenizer = index_order
        return CurriculumRows(list(files), seq_len, rank, world_size, seed, align, doc_max, config, feed, vocab_size,
                              tokenizer, dataset)
    if mixture is not None:
        return MixedRows(mixture, seq_len, rank, world_size, order, seed, align, doc_max, natural, schedule)
    if align == "bos":
        return AlignedRows(list(files), seq_len, rank, world_size, order, seed, doc_max, dataset)
    if order == "shuffled":
        return ShuffledRows(list(files), seq_len, rank, world_size, seed, dataset)
    return SequentialRows(list(files), seq_len, rank, world_size, dataset)
