"""The loader: the only part of the curriculum with I/O and threads.

`BatchSource.next_batch(progress, warmdown_start)` is the trainer's one seam. The data path,
one stage each:

1. rows: sequences of seq_len + 1 tokens from the shards, each rank its disjoint share, in
   the challenge's order (`sequential`: the next span of the stream) or a seeded permutation
   of fixed slots (`shuffled`, curriculum/order.py);
2. read-ahead: a background thread reads them from the memory-mapped shards (into pinned
   memory on CUDA), checks the token ids and maps each row to its domain where the shards
   have sidecars (curriculum/domains.py), so the loop only blocks when the disk cannot keep up;
3. pool and selection (curriculum on): the rows are scored on the device, and the pool
   (curriculum/pool.py: `fresh` or `carry`) keeps the window of ranks the schedule asks for;
4. batch: inputs and targets.

With the curriculum off the pool is exactly the batch, so both arms share the same read-ahead,
transfer and batch construction: a fair race. Nothing waits for the device: the window's
position depends only on the progress (a host number) and the sizes, and statistics stay on
the device until the trainer asks for a log line.
"""
from __future__ import annotations

import dataclasses
import functools
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import CurriculumConfig
from .domains import DomainIndex, mix_text
from .order import DATA_ORDERS, locate_slots, slot_order, slots_per_shard
from .blend import blend, integer_weights, renormalised
from .pool import Pool, Pooled
from .schedules import target_percentile
from .scores import NEEDS_UNIGRAM_COUNTS, SCORES, unigram_surprisal
from .shards import open_shard, shard_token_count, unigram_counts

class DataError(ValueError):
    """Training data that cannot be trained on, found while reading it; the message says where."""


class TokenStream:
    """The training shards, in order, as one endless stream of tokens (it wraps around)."""

    def __init__(self, files: list[Path]):
        if not files:
            raise ValueError("TokenStream: no training shards")
        self.files = list(files)
        self.shard_index = 0
        self.tokens = open_shard(self.files[0])
        self.position = 0   # within the current shard
        self.offset = 0     # tokens taken since the start, across shards and wrap-arounds
        self.wraps = 0      # times the stream went from the last shard back to the first

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
                self.tokens, self.position = open_shard(self.files[self.shard_index]), 0
                continue
            k = min(available, left)
            parts.append(self.tokens[self.position:self.position + k])
            self.position += k
            left -= k
            empty_shards = 0
        self.offset += n
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def state(self) -> tuple[int, int, int, int]:
        return self.shard_index, self.position, self.offset, self.wraps

    def restore(self, state: tuple[int, int, int, int]) -> None:
        if state[0] != self.shard_index:
            self.tokens = open_shard(self.files[state[0]])
        self.shard_index, self.position, self.offset, self.wraps = state


class SequentialRows:
    """The challenge's order: each micro-batch takes the next world_size x (n x seq_len + 1)
    tokens of the stream and rank r the r-th part, cut into n rows that overlap by one token
    (a row's last target is the next row's first input)."""

    def __init__(self, files: list[Path], seq_len: int, rank: int, world_size: int):
        self.stream, self.seq_len, self.rank, self.world_size = TokenStream(files), seq_len, rank, world_size
        self.total_tokens = sum(shard_token_count(f) for f in files)

    def fits_in_pass(self, n: int) -> bool:
        """Whether n more rows per rank come before the stream starts over."""
        left = self.total_tokens * (self.stream.wraps + 1) - self.stream.offset
        return self.world_size * (n * self.seq_len + 1) <= left

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, None]:
        """n rows [n, seq_len + 1] for this rank, and each row's stream position."""
        span = n * self.seq_len + 1
        start = self.stream.offset + self.rank * span
        local = self.stream.take(self.world_size * span)[self.rank * span:(self.rank + 1) * span]
        rows = np.lib.stride_tricks.sliding_window_view(local, self.seq_len + 1)[::self.seq_len]
        return rows, start + self.seq_len * np.arange(n, dtype=np.int64), None

    @property
    def passes_done(self) -> int:
        return self.stream.wraps

    @property
    def tokens_consumed(self) -> int:
        return self.stream.offset

    def where(self) -> str:
        return f"{self.stream.files[self.stream.shard_index]} or the shard before it"

    def state(self):
        return self.stream.state()

    def restore(self, state, seq_len: int, exact: bool = False) -> None:
        self.stream.restore(tuple(state))
        self.seq_len = seq_len


class ShuffledRows:
    """`DATA_ORDER=shuffled`: fixed slots of every shard in a seeded permutation per pass
    (curriculum/order.py); each micro-batch takes the next world_size x n slots and rank r the
    r-th n."""

    def __init__(self, files: list[Path], seq_len: int, rank: int, world_size: int, seed: int):
        self.files, self.rank, self.world_size, self.seed = files, rank, world_size, seed
        self.shards = [open_shard(f) for f in files]
        self.lengths = [len(t) for t in self.shards]
        self.shard_start = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.last_slots = np.zeros(0, dtype=np.int64)
        self.restore((0, 0), seq_len)

    def fits_in_pass(self, n: int) -> bool:
        return self.world_size * n <= self.num_slots - self.cursor

    def state(self) -> tuple[int, int]:
        return self.passes, self.cursor

    def restore(self, state: tuple[int, int], seq_len: int, exact: bool = False) -> None:
        """Resume at a pass and position. Another seq_len cuts other slots, so it begins a new
        permutation of them (the pass count goes on), unless `exact`: the state was saved under
        that seq_len (a resumed run), so its position in that permutation holds."""
        self.passes, self.cursor = state
        if getattr(self, "seq_len", None) != seq_len:
            cursor = self.cursor
            self.seq_len = seq_len
            per_shard = slots_per_shard(self.lengths, seq_len)
            self.first_slot = np.concatenate([[0], np.cumsum(per_shard)[:-1]]).astype(np.int64)
            self.num_slots = int(per_shard.sum())
            if self.num_slots < self.world_size:
                raise DataError(f"DATA_ORDER=shuffled: the training shards hold {self.num_slots} whole sequences of "
                                f"{seq_len + 1} tokens, fewer than the {self.world_size} ranks")
            self.cursor = cursor if exact else 0
        self.order = slot_order(self.num_slots, self.seed, self.passes)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, None]:
        parts, need = [], self.world_size * n
        while need:
            if self.cursor == self.num_slots:  # a new pass begins only when a slot of it is read
                self.passes += 1
                self.order, self.cursor = slot_order(self.num_slots, self.seed, self.passes), 0
            k = min(need, self.num_slots - self.cursor)
            parts.append(self.order[self.cursor:self.cursor + k])
            self.cursor, need = self.cursor + k, need - k
        self.last_slots = np.concatenate(parts)[self.rank * n:(self.rank + 1) * n]
        shard, slot = locate_slots(self.last_slots, self.first_slot)
        L = self.seq_len
        rows = np.stack([self.shards[i][j * L:j * L + L + 1] for i, j in zip(shard.tolist(), slot.tolist())])
        return rows, self.shard_start[shard] + L * slot, None

    @property
    def passes_done(self) -> int:
        return self.passes

    @property
    def tokens_consumed(self) -> int:
        return (self.passes * self.num_slots + self.cursor) * self.seq_len

    def where(self) -> str:
        shard, _ = locate_slots(self.last_slots, self.first_slot)
        return ", ".join(sorted({str(self.files[i]) for i in shard.tolist()}))


class DataExhausted(Exception):
    """Every dataset of the phase's mixture is used up (on_exhaust = "drop"): training ends here."""


@dataclass(frozen=True)
class Mixture:
    """Named datasets blended by weight (a phase's `mixture`)."""
    names: tuple[str, ...]
    files: tuple[tuple[Path, ...], ...]
    on_exhaust: tuple[str, ...]
    weights: tuple[float, ...]


class MixedRows:
    """Several datasets blended row by row (curriculum/blend.py): each dataset is its own stream
    of which each rank reads its disjoint part, and every rank computes the same sequence of
    datasets. A dataset that would start over either wraps (a log line, a pass count) or, with
    on_exhaust = "drop", leaves the mixture and the others' weights are re-normalised."""

    def __init__(self, mixture: Mixture, seq_len: int, rank: int, world_size: int, order: str = "sequential",
                 seed: int = 0):
        self.mixture, self.world_size = mixture, world_size
        self.readers = [ShuffledRows(list(files), seq_len, rank, world_size, seed + i) if order == "shuffled"
                        else SequentialRows(list(files), seq_len, rank, world_size)
                        for i, files in enumerate(mixture.files)]  # each dataset its own seeded order
        self.totals = [sum(shard_token_count(f) for f in files) for files in mixture.files]
        self.seq_len = seq_len
        self.events: list[str] = []   # drops and wraps since the last block, for the log
        self._set(list(mixture.weights), set(), None)

    def _set(self, weights: list[float], dropped: set[int], credits: list[int] | None) -> None:
        self.base_weights, self.dropped = weights, set(dropped)
        self.weights = renormalised(weights, self.dropped)
        self.ints = integer_weights(self.weights)
        self.credits = list(credits) if credits is not None else [0] * len(weights)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n rows, their positions in their datasets' streams, and each row's dataset."""
        while True:
            if not any(self.ints):
                dropped = ", ".join(self.mixture.names[d] for d in sorted(self.dropped))
                raise DataExhausted(f"every dataset of the phase's mixture is used up (on_exhaust = \"drop\": {dropped})")
            picks, credits = blend(self.ints, self.credits, n)
            wanted = {d: picks.count(d) for d in set(picks)}
            out = [d for d, k in wanted.items() if self.mixture.on_exhaust[d] == "drop"
                   and not self.readers[d].fits_in_pass(k)]
            if not out:
                break
            self._set(self.base_weights, self.dropped | set(out), None)
            self.events += [f"drop dataset:{self.mixture.names[d]} (used up) mixture:" + ",".join(
                f"{name}={w:.3f}" for name, w in zip(self.mixture.names, self.weights)) for d in sorted(out)]
        self.credits = credits
        parts = {}
        for d, k in sorted(wanted.items()):
            wraps = self.readers[d].passes_done
            parts[d] = self.readers[d].take(k)
            if self.readers[d].passes_done > wraps:
                self.events.append(f"wrap dataset:{self.mixture.names[d]} pass:{self.readers[d].passes_done + 1}")
        taken = {d: 0 for d in parts}
        rows, positions = [], []
        for d in picks:
            rows.append(parts[d][0][taken[d]])
            positions.append(parts[d][1][taken[d]])
            taken[d] += 1
        return np.stack(rows), np.asarray(positions, dtype=np.int64), np.asarray(picks, dtype=np.int64)

    def mix_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows read and trained per domain (or dataset) so far: a phase's share is the difference."""
        self._close_window(self.micro_batches)
        return self._read_domains.copy(), self._trained_domains.copy()

    def new_events(self) -> list[str]:
        events, self.events = self.events, []
        return events

    @property
    def passes_done(self) -> int:
        return 0  # each dataset's passes are in its own wrap lines and the summary

    @property
    def dataset_passes(self) -> list[int]:
        return [r.passes_done + 1 for r in self.readers]

    @property
    def tokens_consumed(self) -> int:
        return sum(r.tokens_consumed for r in self.readers)

    def where(self) -> str:
        return "; ".join(r.where() for r in self.readers)

    def state(self):
        return tuple(r.state() for r in self.readers), tuple(self.credits), frozenset(self.dropped), tuple(self.base_weights)

    def restore(self, state, seq_len: int, exact: bool = False) -> None:
        readers, credits, dropped, weights = state
        for r, st in zip(self.readers, readers):
            r.restore(st, seq_len, exact)
        self.seq_len = seq_len
        self._set(list(weights), set(dropped), list(credits))

    @staticmethod
    def with_weights(state, weights: list[float]):
        """The same streams under new weights (a new phase): the blend starts afresh."""
        readers, _, dropped, _ = state
        return readers, tuple(0 for _ in weights), dropped, tuple(weights)


def plain(value):
    """A reader's state (tuples, frozensets) as lists and numbers, so that it saves anywhere."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class Block:
    """One micro-batch's fresh rows, as the read-ahead thread hands them over."""
    tokens: Tensor                 # [n, seq_len + 1] int32 on the host (pinned on CUDA)
    positions: np.ndarray          # [n] stream position of each row's first token
    domains: Tensor | None         # [n] int64 domain of each row's middle token
    domain_counts: np.ndarray | None
    passes_done: int               # wrap-arounds of the stream when this block was read
    tokens_consumed: int           # tokens of the stream read so far, every rank's share included
    state_after: tuple             # the rows reader's state after this block: where to resume
    events: list                   # what the mixture did while reading it (drops, wraps), for the log


@functools.lru_cache(maxsize=4)
def corpus_surprisal(files: tuple[Path, ...], vocab_size: int) -> tuple[Tensor, int]:
    """unigram_rarity's table from the training shards' counts (cached: the trainer makes a
    loader for warm-up and another for training), and how many tokens were counted."""
    counts, counted = unigram_counts(list(files), vocab_size)
    return unigram_surprisal(torch.from_numpy(counts)), counted


class WindowStats:
    """A log window's sums and extremes, accumulated on the device with no host sync:
    [kept score sum, pool score sum, wait sum, -kept score min, kept score max, wait max],
    and the kept rows' domain counts."""

    def __init__(self, device: torch.device, domains: int):
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.device, self.domains = device, domains
        self.reset()

    def reset(self) -> None:
        inf = float("inf")
        self.acc = torch.tensor([0.0, 0.0, 0.0, -inf, -inf, -inf], dtype=self.dtype, device=self.device)
        self.kept_domains = torch.zeros(self.domains, dtype=torch.int64, device=self.device) if self.domains else None

    def add(self, kept: Pooled, pool: Pooled, micro_batch: int) -> None:
        lo, hi = torch.aminmax(kept.scores)
        if kept.read_at is None:
            wait_sum = wait_max = kept.scores.new_zeros(())
        else:
            waits = micro_batch - kept.read_at
            wait_sum, wait_max = waits.sum(), waits.max()
        record = torch.stack([t.to(self.dtype) for t in (kept.scores.sum(), pool.scores.sum(), wait_sum, -lo, hi, wait_max)])
        self.acc = torch.cat([self.acc[:3] + record[:3], torch.maximum(self.acc[3:], record[3:])])
        if self.kept_domains is not None:
            self.kept_domains.index_add_(0, kept.domains, torch.ones_like(kept.domains))

    def read(self) -> tuple[list[float], np.ndarray | None]:
        """The window's numbers on the host (the one synchronisation), then a fresh window."""
        acc = self.acc.tolist()
        kept = None if self.kept_domains is None else self.kept_domains.cpu().numpy()
        self.reset()
        return acc, kept


class BatchSource:
    """The data path for one rank. The shape (sequence length, sequences per micro-batch) may
    change between micro-batches (`set_shape`): what was read ahead for the old shape is put
    back, the stream resumes right after the last batch taken, and with `carry` the waiting
    sequences, cut for the old shape, are dropped and counted as discarded."""

    def __init__(self, files: list[Path] | None, *, seq_len: int, batch_seqs: int, rank: int, world_size: int,
                 vocab_size: int, device: torch.device, config: CurriculumConfig, order: str = "sequential",
                 seed: int = 0, read_ahead: int = 4, mixture: Mixture | None = None):
        if order not in DATA_ORDERS:
            raise ValueError(f"DATA_ORDER={order!r}: must be one of {', '.join(DATA_ORDERS)}")
        self.rank, self.world_size, self.read_ahead = rank, world_size, read_ahead
        self.vocab_size, self.device, self.config, self.order = vocab_size, torch.device(device), config, order
        self.mixture = mixture
        if mixture is not None:  # the phases' datasets, blended; each row's domain is its dataset
            self.files = [f for files in mixture.files for f in files]
            self.rows = MixedRows(mixture, seq_len, rank, world_size, order, seed)
            self.total_tokens = sum(self.rows.totals)
            self.domain_index, self.domain_names = None, mixture.names
        else:
            self.files = list(files)
            lengths = [shard_token_count(f) for f in self.files]
            self.total_tokens = sum(lengths)
            self.rows = (ShuffledRows(self.files, seq_len, rank, world_size, seed) if order == "shuffled"
                         else SequentialRows(self.files, seq_len, rank, world_size))
            self.domain_index = DomainIndex.from_shards(self.files, lengths)
            self.domain_names = self.domain_index.names if self.domain_index else ()
        self.score = self._bind_score() if config.enabled else None
        self.stats = WindowStats(self.device, len(self.domain_names)) if config.enabled else None
        self._events: list[str] = []
        self.micro_batches = 0
        self.counts = dict(sequences_read=0, sequences_trained=0, sequences_pooled=0, sequences_dropped=0,
                           tokens_read=0, tokens_trained=0, tokens_dropped=0)
        self.wraps_reached = 0     # wrap-arounds in the batches the trainer has taken
        self.tokens_consumed = 0   # of the stream, every rank's share, in the batches taken
        self._wraps_told = 0
        self.data_wait_ms = 0.0
        self.reader_cpu_ms = 0.0  # CPU time the read-ahead thread used: what it may take from the compute threads
        self.read_positions: list[np.ndarray] = []  # rows' stream positions, the first 64 micro-batches
        self.last_target: float | None = None
        self.totals = dict(kept_sum=0.0, pool_sum=0.0, wait_sum=0.0, kept_min=float("inf"),
                           kept_max=float("-inf"), wait_max=float("-inf"))
        self.mix_windows: list[dict] = []
        zeros = np.zeros(len(self.domain_names), dtype=np.int64)
        self._read_domains, self._window_read_domains, self._trained_domains = zeros, zeros.copy(), zeros.copy()
        self._window = dict(micro=0, trained=0, pooled=0, wait_ms=0.0, step=0)
        self._thread = None
        self._start(seq_len, batch_seqs, self.rows.state())

    def _bind_score(self):
        score = SCORES[self.config.score]
        if self.config.score in NEEDS_UNIGRAM_COUNTS:
            surprisal, self.counted_tokens = corpus_surprisal(tuple(self.files), self.vocab_size)
            score = functools.partial(score, surprisal=surprisal.to(self.device))
        return score

    # ------------------------------------------------------------ shape and the read-ahead thread
    def _start(self, seq_len: int, batch_seqs: int, state, waiting: Pooled | None = None, exact: bool = False) -> None:
        self.seq_len, self.keep = seq_len, batch_seqs
        self.pool_size = self.config.pool_size(batch_seqs)
        self.pool = Pool(self.config.pool, batch_seqs) if self.config.enabled else None
        if self.pool is not None:
            self.pool.waiting = waiting
        self.rows.restore(state, seq_len, exact)
        self._resume = state  # where the stream goes on after the last batch taken
        self._queue: queue.Queue = queue.Queue(maxsize=self.read_ahead)
        self._stop = threading.Event()
        first = self.pool.fresh_needed(self.pool_size) if self.pool is not None else self.pool_size
        self._thread = threading.Thread(target=self._read_ahead, name="batch-read-ahead", daemon=True,
                                        args=(seq_len, batch_seqs, self.pool_size, first, self._queue, self._stop))
        self._thread.start()

    def set_shape(self, seq_len: int, batch_seqs: int) -> None:
        """The next micro-batches' shape; nothing happens when it is the current one."""
        self.reconfigure(seq_len, batch_seqs)

    def reconfigure(self, seq_len: int, batch_seqs: int, config: CurriculumConfig | None = None,
                    weights: list[float] | None = None) -> None:
        """A new phase: its shape, its filter, its mixture's weights (each None: unchanged)."""
        config = self.config if config is None else config
        if (seq_len, batch_seqs, config) == (self.seq_len, self.keep, self.config) and weights is None:
            return
        self.close(wait=True)  # the reader's state is restored next: its thread must be gone
        if self.pool is not None and self.pool.waiting is not None:
            dropped = self.pool.waiting.rows.size(0)
            self.counts["sequences_dropped"] += dropped
            self.counts["tokens_dropped"] += dropped * self.seq_len
        if config != self.config:
            self.config = config
            self.score = self._bind_score() if config.enabled else None
            if config.enabled and self.stats is None:
                self.stats = WindowStats(self.device, len(self.domain_names))
        state = self._resume if weights is None else self.rows.with_weights(self._resume, weights)
        self._start(seq_len, batch_seqs, state)

    def _read_ahead(self, seq_len: int, keep: int, pool_size: int, first: int, out: queue.Queue,
                    stop: threading.Event) -> None:
        pin = self.device.type == "cuda"
        middle = (seq_len + 1) // 2
        carry = self.config.enabled and self.config.pool == "carry"
        try:
            n = first  # with carry, later pools are the waiting rows plus `keep` fresh ones
            while not stop.is_set():
                cpu0 = time.thread_time()
                rows, positions, ids = self.rows.take(n)
                if rows.size and int(rows.max()) >= self.vocab_size:  # off the critical path, and cheap
                    raise DataError(f"the training stream holds token id {int(rows.max())} near position "
                                    f"{int(positions[0]):,} ({self.rows.where()}), but VOCAB_SIZE={self.vocab_size}")
                host = torch.from_numpy(rows.astype(np.int32))
                domains = counts = None
                if ids is None and self.domain_index is not None:
                    ids = self.domain_index.domains_at(positions + middle)
                if ids is not None:
                    domains, counts = torch.from_numpy(ids), np.bincount(ids, minlength=len(self.domain_names))
                events = self.rows.new_events() if self.mixture is not None else []
                if pin:
                    host = host.pin_memory()
                self.reader_cpu_ms += 1000.0 * (time.thread_time() - cpu0)
                self._put(out, stop, Block(host, positions, domains, counts, self.rows.passes_done,
                                           self.rows.tokens_consumed, self.rows.state(), events))
                n = keep if carry else pool_size
        except BaseException as e:  # handed to the training loop, which re-raises it
            self._put(out, stop, e)

    @staticmethod
    def _put(out: queue.Queue, stop: threading.Event, item) -> None:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # ------------------------------------------------------------ the seam
    def next_batch(self, progress: float, warmdown_start: float = 1.0) -> tuple[Tensor, Tensor]:
        """Inputs and targets [batch_seqs, seq_len] on the device for one micro-batch."""
        t0 = time.perf_counter()
        block = self._queue.get()
        self.data_wait_ms += 1000.0 * (time.perf_counter() - t0)
        if isinstance(block, (DataError, DataExhausted)):
            raise block
        if isinstance(block, BaseException):
            raise RuntimeError(f"batch read-ahead failed: {block}") from block
        self._resume = block.state_after
        self._events += block.events
        if len(self.read_positions) < 64:
            self.read_positions.append(block.positions)
        self.micro_batches += 1
        c, n = self.counts, len(block.positions)
        c["sequences_read"] += n
        c["tokens_read"] += n * self.seq_len
        c["sequences_trained"] += self.keep
        c["tokens_trained"] += self.keep * self.seq_len
        self.wraps_reached, self.tokens_consumed = block.passes_done, block.tokens_consumed
        if block.domain_counts is not None:
            self._read_domains += block.domain_counts
        rows = block.tokens.to(self.device, non_blocking=True).long()
        if self.score is not None:
            rows = self._select(rows, block, progress, warmdown_start)
        elif block.domain_counts is not None:
            self._trained_domains += block.domain_counts
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def _select(self, rows: Tensor, block: Block, progress: float, warmdown_start: float) -> Tensor:
        cfg = self.config
        self.last_target = target_percentile(cfg.schedule, progress, cfg.peak, cfg.target, warmdown_start)
        read_at = (torch.full((rows.size(0),), self.micro_batches, dtype=torch.int64, device=self.device)
                   if cfg.pool == "carry" else None)
        domains = None if block.domains is None else block.domains.to(self.device, non_blocking=True)
        kept, pool = self.pool.choose(Pooled(rows, self.score(rows, self.vocab_size), read_at, domains),
                                      self.last_target)
        self.counts["sequences_pooled"] += pool.rows.size(0)  # a host number: the sizes are known
        self.stats.add(kept, pool, self.micro_batches)
        return kept.rows

    # ------------------------------------------------------------ reporting
    def new_wraps(self) -> list[int]:
        """Pass numbers (2, 3, ...) the stream began since the last call: the trainer logs each."""
        fresh = list(range(self._wraps_told + 2, self.wraps_reached + 2))
        self._wraps_told = self.wraps_reached
        return fresh

    def mix_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows read and trained per domain (or dataset) so far: a phase's share is the difference."""
        self._close_window(self.micro_batches)
        return self._read_domains.copy(), self._trained_domains.copy()

    def new_events(self) -> list[str]:
        """What the mixture did (a dataset dropped or started over) in the batches taken since
        the last call: the trainer logs each."""
        events, self._events = self._events, []
        return events

    def _close_window(self, step: int) -> dict:
        """The window since the last log line, on the host, added to the run's totals. Reading
        the device statistics is the only host synchronisation the curriculum makes, and only here."""
        c, w = self.counts, self._window
        micro, trained, pooled = (self.micro_batches - w["micro"], c["sequences_trained"] - w["trained"],
                                  c["sequences_pooled"] - w["pooled"])
        w.update(micro=self.micro_batches, trained=c["sequences_trained"], pooled=c["sequences_pooled"])
        window = dict(micro_batches=micro)
        if self.stats is not None and pooled:
            acc, kept_domains = self.stats.read()
            kept_sum, pool_sum, wait_sum, neg_min, kept_max, wait_max = acc
            t = self.totals
            t.update(kept_sum=t["kept_sum"] + kept_sum, pool_sum=t["pool_sum"] + pool_sum, wait_sum=t["wait_sum"] + wait_sum,
                     kept_min=min(t["kept_min"], -neg_min), kept_max=max(t["kept_max"], kept_max),
                     wait_max=max(t["wait_max"], wait_max))
            window |= dict(kept_mean=kept_sum / trained, kept_min=-neg_min, kept_max=kept_max,
                           pool_mean=pool_sum / pooled, wait_mean=wait_sum / trained, wait_max=wait_max)
            if kept_domains is not None:
                self._trained_domains += kept_domains
                window["trained_domains"] = kept_domains
        if self.domain_names:
            window["read_domains"] = self._read_domains - self._window_read_domains
            self._window_read_domains = self._read_domains.copy()
            window.setdefault("trained_domains", window["read_domains"])
            if micro:
                self.mix_windows.append(dict(step=step, read=window["read_domains"].tolist(),
                                             trained=window["trained_domains"].tolist()))
        return window

    def log_line(self, step: int, progress: float) -> str:
        """One line about the steps since the last call."""
        steps = max(step - self._window["step"], 1)
        wait = (self.data_wait_ms - self._window["wait_ms"]) / steps
        self._window.update(step=step, wait_ms=self.data_wait_ms)
        w = self._close_window(step)
        mix = ""
        if self.domain_names:
            mix = f" mix:{mix_text(self.domain_names, w['read_domains'])}" if self.score is None else (
                f" read_mix:{mix_text(self.domain_names, w['read_domains'])} "
                f"kept_mix:{mix_text(self.domain_names, w['trained_domains'])}")
        if self.score is None:
            return f"data step:{step} progress:{progress:.4f} data_wait_ms:{wait:.3f}{mix}"
        nan = float("nan")
        target = self.last_target if self.last_target is not None else nan
        waits = (f" wait_mean:{w.get('wait_mean', nan):.2f} wait_max:{w.get('wait_max', nan):.0f}"
                 if self.config.pool == "carry" else "")
        return (f"curriculum step:{step} progress:{progress:.4f} target:{target:.4f} "
                f"kept_score_mean:{w.get('kept_mean', nan):.4f} kept_score_min:{w.get('kept_min', nan):.4f} "
                f"kept_score_max:{w.get('kept_max', nan):.4f} pool_score_mean:{w.get('pool_mean', nan):.4f}{waits} "
                f"data_wait_ms:{wait:.3f}{mix}")

    def summary(self, steps: int) -> dict:
        """Totals for the run's JSON summary (reads any statistics not yet logged). Every
        sequence read was trained on, or discarded (`fresh`, or `carry`'s waiting set at a
        shape change), or is still waiting (`carry`)."""
        self._close_window(steps)
        c = self.counts
        carry = self.config.enabled and self.config.pool == "carry"
        waiting = c["sequences_read"] - c["sequences_trained"] - c["sequences_dropped"] if carry else 0
        discarded = c["sequences_read"] - c["sequences_trained"] - waiting
        out = dict(data_order=self.order, pool=self.config.pool if self.config.enabled else None,
                   micro_batches=self.micro_batches, pool_size=self.pool_size, batch_seqs=self.keep,
                   sequences_read=c["sequences_read"], sequences_trained=c["sequences_trained"],
                   sequences_discarded=discarded, sequences_waiting=waiting,
                   tokens_read=c["tokens_read"], tokens_trained=c["tokens_trained"],
                   tokens_discarded=(c["tokens_dropped"] if carry else c["tokens_read"] - c["tokens_trained"]),
                   stream_tokens=self.total_tokens, stream_wraps=self.wraps_reached,
                   stream_passes_begun=self.wraps_reached + 1,
                   passes_read=round(self.tokens_consumed / max(self.total_tokens, 1), 6),
                   data_wait_ms_total=round(self.data_wait_ms, 3),
                   data_wait_ms_per_step=round(self.data_wait_ms / max(steps, 1), 4),
                   reader_cpu_ms_per_step=round(self.reader_cpu_ms / max(steps, 1), 4),
                   first_rows=[p.tolist() for p in self.read_positions[:8]], row_tokens=self.seq_len + 1)
        if self.stats is not None and c["sequences_pooled"]:
            t = self.totals
            out |= dict(kept_score_mean=t["kept_sum"] / c["sequences_trained"], kept_score_min=t["kept_min"],
                        kept_score_max=t["kept_max"], pool_score_mean=t["pool_sum"] / c["sequences_pooled"])
            if carry:
                out |= dict(wait_mean=t["wait_sum"] / c["sequences_trained"], wait_max=t["wait_max"])
        if self.domain_names:
            out |= dict(domain_names=list(self.domain_names), read_domain_counts=self._read_domains.tolist(),
                        trained_domain_counts=self._trained_domains.tolist(), mix_windows=self.mix_windows)
        if self.config.enabled and self.config.score in NEEDS_UNIGRAM_COUNTS:
            out["unigram_counts_from_tokens"] = self.counted_tokens
        if self.mixture is not None:
            out |= dict(dataset_passes_begun=dict(zip(self.mixture.names, self.rows.dataset_passes)),
                        datasets_dropped=[self.mixture.names[d] for d in sorted(self.rows.dropped)])
        return out

    # ------------------------------------------------------------ saved state
    def state_dict(self) -> dict:
        """Where the data path stands after the last batch taken, and what it has counted: with
        `load_state_dict` on a loader made with the same arguments, the batches, log lines and
        summary go on exactly as this loader's would. Host values and CPU tensors only (what was
        read ahead is not saved: it is read again)."""
        waiting = None
        if self.pool is not None and self.pool.waiting is not None:
            waiting = {k: None if t is None else t.cpu() for k, t in zip(("rows", "scores", "read_at", "domains"),
                                                                         self.pool.waiting._fields())}
        stats = None
        if self.stats is not None:
            stats = dict(acc=self.stats.acc.cpu(), kept_domains=None if self.stats.kept_domains is None
                         else self.stats.kept_domains.cpu())
        return dict(
            rows=plain(self._resume), seq_len=self.seq_len, batch_seqs=self.keep, config=dataclasses.asdict(self.config),
            waiting=waiting, stats=stats, micro_batches=self.micro_batches, counts=dict(self.counts),
            wraps_reached=self.wraps_reached, tokens_consumed=self.tokens_consumed, wraps_told=self._wraps_told,
            data_wait_ms=self.data_wait_ms, reader_cpu_ms=self.reader_cpu_ms,
            read_positions=[p.tolist() for p in self.read_positions], last_target=self.last_target,
            totals=dict(self.totals), mix_windows=list(self.mix_windows), events=list(self._events),
            read_domains=self._read_domains.tolist(), window_read_domains=self._window_read_domains.tolist(),
            trained_domains=self._trained_domains.tolist(), window=dict(self._window))

    def load_state_dict(self, state: dict) -> None:
        """Go on from a `state_dict`: its shape, filter and mixture, its stream positions, the
        carry pool's waiting rows and every count."""
        self.close(wait=True)
        config = CurriculumConfig(**state["config"])
        if config != self.config:
            self.config = config
            self.score = self._bind_score() if config.enabled else None
        if config.enabled and self.stats is None:
            self.stats = WindowStats(self.device, len(self.domain_names))
        if state["stats"] is not None:
            self.stats.acc = state["stats"]["acc"].to(self.device)
            if state["stats"]["kept_domains"] is not None:
                self.stats.kept_domains = state["stats"]["kept_domains"].to(self.device)
        self.micro_batches, self.counts = state["micro_batches"], dict(state["counts"])
        self.wraps_reached, self.tokens_consumed = state["wraps_reached"], state["tokens_consumed"]
        self._wraps_told, self.data_wait_ms, self.reader_cpu_ms = state["wraps_told"], state["data_wait_ms"], state["reader_cpu_ms"]
        self.read_positions = [np.asarray(p, dtype=np.int64) for p in state["read_positions"]]
        self.last_target, self.totals = state["last_target"], dict(state["totals"])
        self.mix_windows, self._events = list(state["mix_windows"]), list(state["events"])
        self._read_domains = np.asarray(state["read_domains"], dtype=np.int64)
        self._window_read_domains = np.asarray(state["window_read_domains"], dtype=np.int64)
        self._trained_domains = np.asarray(state["trained_domains"], dtype=np.int64)
        self._window = dict(state["window"])
        waiting = None
        if state["waiting"] is not None:
            waiting = Pooled(*(None if state["waiting"][k] is None else state["waiting"][k].to(self.device)
                               for k in ("rows", "scores", "read_at", "domains")))
        self._start(state["seq_len"], state["batch_seqs"], state["rows"], waiting, exact=True)

    def close(self, wait: bool = False) -> None:
        """Stop the read-ahead thread (what it read ahead is dropped)."""
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=None if wait else 5)
