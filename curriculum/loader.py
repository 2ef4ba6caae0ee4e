"""The loader: the only part of the curriculum with I/O and threads.

`BatchSource.next_batch(progress, warmdown_start)` is the trainer's one seam. Per rank and
micro-batch it takes a pool of sequences of seq_len + 1 tokens from that rank's disjoint span
of the token stream, and with the curriculum on, scores the pool on the device and keeps the
window of ranks the schedule asks for. With the curriculum off the pool is exactly the batch,
so both arms share the same read-ahead thread, transfer and batch construction: a fair race.

Zero overhead by construction:
- pools are read ahead on a background thread from the memory-mapped shards (into pinned
  memory on CUDA) so the loop only blocks when the disk cannot keep up: `data_wait_ms`;
- scoring, sorting and gathering are queued on the device; the window's position depends
  only on the progress (a host number) and the sizes, so nothing waits for the device;
- statistics stay on the device until the trainer asks for a log line.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import CurriculumConfig
from .schedules import target_percentile
from .scores import SCORES
from .selection import select_window
from .shards import open_shard


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


def _fold(rows: list[Tensor]) -> Tensor:
    """Combine [kept_sum, kept_min, kept_max, pool_sum] records (associative)."""
    m = torch.stack(rows)
    return torch.stack([m[:, 0].sum(), m[:, 1].min(), m[:, 2].max(), m[:, 3].sum()])


class BatchSource:
    def __init__(self, files: list[Path], *, seq_len: int, batch_seqs: int, rank: int, world_size: int,
                 vocab_size: int, device: torch.device, config: CurriculumConfig, read_ahead: int = 4):
        self.seq_len, self.keep, self.rank, self.world_size = seq_len, batch_seqs, rank, world_size
        self.vocab_size, self.device, self.config = vocab_size, torch.device(device), config
        self.pool = config.pool_size(batch_seqs)
        self.span = self.pool * seq_len + 1  # rows overlap by one token: row r's last target is row r+1's first input
        self.score = SCORES[config.score] if config.enabled else None
        self.stream = TokenStream(files)
        self.micro_batches = 0
        self.wraps_reached = 0  # wrap-arounds in the batches the trainer has taken
        self._wraps_told = 0
        self.data_wait_ms = 0.0
        self.spans: list[tuple[int, int]] = []   # stream positions this rank read, per micro-batch
        self.last_target: float | None = None
        self._pending: list[Tensor] = []  # score records since the last log line, still on the device
        self._total: Tensor | None = None  # the records of every earlier log window, folded
        self._window_micro, self._window_wait_ms, self._window_steps_from = 0, 0.0, 0
        self._queue: queue.Queue = queue.Queue(maxsize=read_ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_ahead, name="batch-read-ahead", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ background thread
    def _read_ahead(self) -> None:
        pin = self.device.type == "cuda"
        try:
            while not self._stop.is_set():
                chunk_start = self.stream.offset
                chunk = self.stream.take(self.world_size * self.span)
                local = chunk[self.rank * self.span:(self.rank + 1) * self.span]
                if local.size and int(local.max()) >= self.vocab_size:  # off the critical path, and cheap
                    raise DataError(f"the training stream holds token id {int(local.max())} near position "
                                    f"{chunk_start:,} ({self.stream.files[self.stream.shard_index]} or the shard "
                                    f"before it), but VOCAB_SIZE={self.vocab_size}")
                host = torch.from_numpy(local.astype(np.int32))
                if pin:
                    host = host.pin_memory()
                start = chunk_start + self.rank * self.span
                self._put((host, (start, start + self.span), self.stream.wraps))
        except BaseException as e:  # handed to the training loop, which re-raises it
            self._put(e)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # ------------------------------------------------------------ the seam
    def next_batch(self, progress: float, warmdown_start: float = 1.0) -> tuple[Tensor, Tensor]:
        """Inputs and targets [batch_seqs, seq_len] on the device for one micro-batch."""
        t0 = time.perf_counter()
        item = self._queue.get()
        self.data_wait_ms += 1000.0 * (time.perf_counter() - t0)
        if isinstance(item, DataError):
            raise item
        if isinstance(item, BaseException):
            raise RuntimeError(f"batch read-ahead failed: {item}") from item
        host, span, wraps = item
        self.spans.append(span)
        self.micro_batches += 1
        self.wraps_reached = wraps
        tokens = host.to(self.device, non_blocking=True).long()
        rows = tokens.unfold(0, self.seq_len + 1, self.seq_len)  # [pool, seq_len + 1], a view
        if self.score is not None:
            rows = self._select(rows, progress, warmdown_start)
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def _select(self, rows: Tensor, progress: float, warmdown_start: float) -> Tensor:
        cfg = self.config
        self.last_target = target_percentile(cfg.schedule, progress, cfg.peak, cfg.target, warmdown_start)
        scores = self.score(rows, self.vocab_size)
        keep = select_window(scores, self.keep, self.last_target)
        kept = scores.index_select(0, keep)
        self._pending.append(torch.stack([kept.sum(), kept.min(), kept.max(), scores.sum()]))
        if len(self._pending) >= 256:  # bounded memory however rarely the trainer logs
            self._pending = [_fold(self._pending)]
        return rows.index_select(0, keep)

    def _close_window(self) -> Tensor | None:
        """The records since the last log line folded into one, and added to the run's total."""
        if not self._pending:
            return None
        window, self._pending = _fold(self._pending), []
        self._total = window if self._total is None else _fold([self._total, window])
        return window

    # ------------------------------------------------------------ reporting
    def new_wraps(self) -> list[int]:
        """Pass numbers (2, 3, ...) the stream began since the last call: the trainer logs each."""
        fresh = list(range(self._wraps_told + 2, self.wraps_reached + 2))
        self._wraps_told = self.wraps_reached
        return fresh

    def log_line(self, step: int, progress: float) -> str:
        """One line about the steps since the last call. Reading the device statistics is the
        only host synchronisation the curriculum ever makes, and only here."""
        steps = max(step - self._window_steps_from, 1)
        wait = (self.data_wait_ms - self._window_wait_ms) / steps
        self._window_steps_from, self._window_wait_ms = step, self.data_wait_ms
        micro, self._window_micro = self.micro_batches - self._window_micro, self.micro_batches
        if self.score is None:
            return f"data step:{step} progress:{progress:.4f} data_wait_ms:{wait:.3f}"
        window = self._close_window()
        kept_sum, kept_min, kept_max, pool_sum = window.tolist() if window is not None else [float("nan")] * 4
        kept_n, pool_n = max(micro * self.keep, 1), max(micro * self.pool, 1)
        target = self.last_target if self.last_target is not None else float("nan")
        return (f"curriculum step:{step} progress:{progress:.4f} target:{target:.4f} "
                f"kept_score_mean:{kept_sum / kept_n:.4f} kept_score_min:{kept_min:.4f} "
                f"kept_score_max:{kept_max:.4f} pool_score_mean:{pool_sum / pool_n:.4f} data_wait_ms:{wait:.3f}")

    def summary(self, steps: int) -> dict:
        """Totals for the run's JSON summary (reads any statistics not yet logged)."""
        self._close_window()
        out = dict(micro_batches=self.micro_batches, sequences_read=self.micro_batches * self.pool,
                   sequences_kept=self.micro_batches * self.keep, pool_size=self.pool, batch_seqs=self.keep,
                   stream_wraps=self.wraps_reached, stream_passes_begun=self.wraps_reached + 1,
                   data_wait_ms_total=round(self.data_wait_ms, 3),
                   data_wait_ms_per_step=round(self.data_wait_ms / max(steps, 1), 4),
                   first_spans=self.spans[:8])
        if self._total is not None:
            kept_sum, kept_min, kept_max, pool_sum = self._total.tolist()
            out |= dict(kept_score_mean=kept_sum / (self.micro_batches * self.keep), kept_score_min=kept_min,
                        kept_score_max=kept_max, pool_score_mean=pool_sum / (self.micro_batches * self.pool))
        return out

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)
