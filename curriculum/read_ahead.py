"""The read-ahead: a background thread that reads the next pools from a reader, so the
training loop only blocks when the disk cannot keep up.

It checks the token ids, maps each row to its domain where the shards have sidecars
(curriculum/domains.py) and copies the rows into pinned memory on CUDA. Each block carries the
reader's state after it, so the loader can resume right after the last block taken; what was
read ahead and not taken is dropped when the read-ahead closes, and read again.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .domains import DomainIndex
from .readers import DataError, DataEvent, DataExhausted, Reader
from .shards import ShardFormatError


@dataclass
class Block:
    """One micro-batch's fresh rows, as the read-ahead thread hands them over."""
    tokens: Tensor                 # [n, seq_len + 1] int32 on the host (pinned on CUDA)
    positions: np.ndarray          # [n] stream position of each row's first token
    domains: Tensor | None         # [n] int64 domain of each row's middle token
    domain_counts: np.ndarray | None
    tokens_consumed: int           # tokens of the stream read so far, every rank's share included
    tokens_skipped: int            # DATA_ALIGN=bos: of the stream, in this rank's rows' stretches, not in them
    state_after: dict              # the reader's state_dict after this block: where to resume
    events: list[DataEvent]        # what the reader did while reading it (passes begun, drops)
    draw: object = None            # DATA_ORDER=curriculum: the draw's band, score and every rank's rows
    scores: Tensor | None = None   # CURRICULUM_SCORE=index:<signal>: each row's score from the index


class ReadAhead:
    """Reads `first` rows, then `then` rows per block, from `rows` at `state`, up to `depth`
    blocks ahead of the loop."""

    def __init__(self, rows: Reader, state: dict, *, first: int, then: int, vocab_size: int, domain_index: DomainIndex | None,
                 domains: int, pin: bool, depth: int = 4, score_lookup=None):
        self.rows, self.vocab_size, self.domain_index, self.domains, self.pin = rows, vocab_size, domain_index, domains, pin
        self.score_lookup = score_lookup
        self.cpu_ms = 0.0  # CPU time the thread used: what it may take from the compute threads
        rows.load_state_dict(state)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(first, then), name="batch-read-ahead", daemon=True)
        self._thread.start()

    def _run(self, first: int, then: int) -> None:
        try:
            n = first
            while not self._stop.is_set():
                cpu0 = time.thread_time()
                rows, positions, ids = self.rows.take(n)
                if rows.size and int(rows.max()) >= self.vocab_size:  # off the critical path, and cheap
                    raise DataError(f"the training stream holds token id {int(rows.max())} near position "
                                    f"{int(positions[0]):,} ({self.rows.where()}), but VOCAB_SIZE={self.vocab_size}")
                host = torch.from_numpy(rows.astype(np.int32))
                domains = counts = None
                if ids is None and self.domain_index is not None:
                    ids = self.domain_index.domains_at(positions + self.rows.domain_offset)
                if ids is not None:
                    domains, counts = torch.from_numpy(ids), np.bincount(ids, minlength=self.domains)
                scores = None if self.score_lookup is None else torch.from_numpy(self.score_lookup(positions).copy())
                if self.pin:
                    host = host.pin_memory()
                self.cpu_ms += 1000.0 * (time.thread_time() - cpu0)
                self._put(Block(host, positions, domains, counts, self.rows.tokens_consumed, self.rows.tokens_skipped,
                                self.rows.state_dict(), self.rows.new_events(), self.rows.last_draw, scores))
                n = then
        except BaseException as e:  # handed to the training loop, which re-raises it
            self._put(e)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> Block:
        """The next block; an error the thread met is raised here, in the loop."""
        block = self._queue.get()
        if isinstance(block, (DataError, DataExhausted)):
            raise block
        if isinstance(block, ShardFormatError):  # a shard changed under the run: named, not a traceback
            raise DataError(str(block)) from None
        if isinstance(block, BaseException):
            raise RuntimeError(f"batch read-ahead failed: {block}") from block
        return block

    def close(self, wait: bool = False) -> None:
        """Stop the thread (what it read ahead is dropped)."""
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=None if wait else 5)
