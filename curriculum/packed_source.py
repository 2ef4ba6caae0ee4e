"""Document-packed batches for a training loop: the producer both the late records' loader
(curriculum/record_loaders.py) and train_gpt.py's `DATA_LAYOUT=packed` use, its statistics,
and `PackedSource`, the data path (`DataPath`) of that layout.

`PackedBatches` prepares batches two ahead on one thread, each with the N asked for when it was
queued, as the records' loader does; the curriculum's selection (documents.PieceSelector) runs
there too, so the training loop only copies the batch to the device.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .config import CurriculumConfig, Shape
from .documents import RECORD_BUCKETS, PackedBatch, PieceSelector, pack_record_batch
from .readers.documents import DocumentStream
from .shards import ContentWatch, DataError

if TYPE_CHECKING:  # the plan opens this source (curriculum/plan.py); the source only reads it
    from .plan import DataPlan

PREFETCH = 2  # batches prepared ahead, as the records' loader does


def one_torch_thread(ready: threading.Event) -> None:
    """The packing thread's torch ops (the pieces' scores) on one thread of their own: with
    OpenMP each thread has its own thread count, so the training step's parallel regions keep every
    core, and this thread's never wait for a core beside them. torch.set_num_threads also sets the
    count new threads begin with; the caller puts that back once this one is set (`ready`)."""
    torch.get_num_threads()  # the thread's own count initialised first, or its first op would set it anew
    torch.set_num_threads(1)
    ready.set()


class PackedBatches:
    """The stream, with the curriculum's piece selection when `config.enabled`, read ahead."""

    def __init__(self, files: list[Path], rank: int, world_size: int, vocab_size: int, max_len: int, bucket: int,
                 config: CurriculumConfig, pin: bool, own_thread_count: bool = True):
        self.stream = DocumentStream(files, rank, world_size)
        self.selector = PieceSelector(config, self.stream, vocab_size, max_len, bucket) if config.enabled else None
        self.vocab_size, self.max_len, self.bucket, self.pin = vocab_size, max_len, bucket, pin
        self.largest = max(self.stream.lengths)
        # own_thread_count False: the thread's ops on torch's default count, as before (the bench's control)
        threads = torch.get_num_threads()  # the caller's own count, fixed now, before the thread changes the default
        ready = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="document-batches",
                                        initializer=one_torch_thread if own_thread_count else ready.set,
                                        initargs=(ready,) if own_thread_count else ())
        self._pool.submit(ready.wait).result()  # the thread exists and has set its own count
        torch.set_num_threads(threads)  # the default for threads made later: the caller's again
        self._ahead: deque = deque()
        self.requests: deque = deque()  # (n, progress, warmdown_start) of each batch queued, in order
        self.cpu_ms = 0.0  # CPU time the thread used: what it may take from the compute threads

    def _prepare(self, n: int, progress: float, warmdown_start: float) -> PackedBatch:
        cpu0 = time.thread_time()
        try:
            return self._pack(n, progress, warmdown_start)
        finally:
            self.cpu_ms += 1000.0 * (time.thread_time() - cpu0)

    def _pack(self, n: int, progress: float, warmdown_start: float) -> PackedBatch:
        read = self.selector.read_size(n) if self.selector else n
        world = self.stream.world_size
        if (read + 1) * world > self.largest:
            raise DataError(f"a micro-batch reads {world} ranks x {read + 1:,} tokens, more than the largest training "
                            f"shard holds ({self.largest:,}); use fewer tokens per micro-batch"
                            + (" or a smaller CURRICULUM_OVERSAMPLE" if self.selector else ""))
        if self.selector is None:
            batch = pack_record_batch(self.stream, n, self.max_len, self.bucket)
        else:
            batch = self.selector.next(n, progress, warmdown_start)
        top = max(int(batch.inputs.max(initial=0)), int(batch.targets.max(initial=0)))
        if top >= self.vocab_size:
            raise DataError(f"the training stream holds token id {top} ({self.stream.where()}), but the vocabulary "
                            f"has {self.vocab_size} ids")
        batch.state_after = dict(stream=self.stream.state_dict(),
                                 selector=None if self.selector is None else self.selector.state_dict())
        if self.pin:  # page-locked, so that the loop's copies to the device are asynchronous
            batch.inputs, batch.targets, batch.cu_seqlens = (torch.from_numpy(a).pin_memory()
                                                             for a in (batch.inputs, batch.targets, batch.cu_seqlens))
        return batch

    def _queue(self, n: int, progress: float, warmdown_start: float) -> None:
        self._ahead.append(self._pool.submit(self._prepare, n, progress, warmdown_start))
        self.requests.append((n, progress, warmdown_start))

    def get(self, n: int, progress: float, warmdown_start: float = 1.0) -> tuple[PackedBatch, float]:
        """The next batch and how long the loop waited for it (ms); one more is queued for n."""
        while len(self._ahead) < PREFETCH:
            self._queue(n, progress, warmdown_start)
        t0 = time.perf_counter()
        batch = self._ahead.popleft().result()
        self.requests.popleft()
        wait_ms = 1000.0 * (time.perf_counter() - t0)
        self._queue(n, progress, warmdown_start)
        return batch, wait_ms

    def restore(self, state: dict, requests: list) -> None:
        """Go on right after the batch whose `state_after` this is: the batches queued then are
        prepared again, each with the size and progress it was queued with, so the same batches follow."""
        self._drain()
        self.stream.load_state_dict(state["stream"])
        if self.selector is not None:
            self.selector.load_state_dict(state["selector"])
        for n, progress, warmdown_start in requests:
            self._queue(int(n), float(progress), float(warmdown_start))

    def _drain(self) -> None:
        self.requests.clear()
        while self._ahead:
            future = self._ahead.popleft()
            if not future.cancel():
                try:
                    future.result()
                except Exception:  # noqa: BLE001  (a batch never taken: its error is not the loop's)
                    pass

    def close(self) -> None:
        self._drain()
        self._pool.shutdown(wait=True)


class PackedStatistics:
    """Counts over the run and a log window: documents, pieces and boundaries per batch against
    the records' compiled buckets, the data wait, and with the curriculum the kept and pool scores."""

    def __init__(self, bucket: int):
        self.bucket = bucket
        self.c = dict(micro_batches=0, tokens_trained=0, tokens_read=0, documents=0, pieces=0, boundaries_max=0,
                      over_buckets=0, data_wait_ms=0.0, kept_score_sum=0.0, pool_score_sum=0.0, pool_pieces=0,
                      wait_max=0)
        self.window = dict(step=0, wait_ms=0.0, stats=[])

    def taken(self, batch: PackedBatch, wait_ms: float) -> None:
        c = self.c
        c["micro_batches"] += 1
        c["tokens_trained"] += len(batch.inputs)
        c["tokens_read"] += batch.stats.get("read_tokens", len(batch.inputs))
        c["documents"] += batch.documents
        c["pieces"] += batch.pieces
        c["boundaries_max"] = max(c["boundaries_max"], batch.pieces + 1)
        c["over_buckets"] += len(batch.cu_seqlens) > RECORD_BUCKETS * self.bucket
        c["data_wait_ms"] += wait_ms
        if batch.stats:
            s = batch.stats
            for key in ("kept_score_sum", "pool_score_sum", "pool_pieces"):
                c[key] += s[key]
            c["wait_max"] = max(c["wait_max"], s["wait_max"])
            self.window["stats"].append((s["target"], s["kept_score_sum"] / batch.pieces, s["kept_score_min"],
                                         s["kept_score_max"], s["pool_score_sum"] / s["pool_pieces"]))

    def log_line(self, step: int, progress: float, selecting: bool) -> str:
        """One line about the steps since the last one."""
        c, w = self.c, self.window
        wait = (c["data_wait_ms"] - w["wait_ms"]) / max(step - w["step"], 1)
        batches = max(c["micro_batches"], 1)
        tail = (f"data_wait_ms:{wait:.3f} documents_per_batch:{c['documents'] / batches:.1f} "
                f"pieces_per_batch:{c['pieces'] / batches:.1f} boundaries_max:{c['boundaries_max']} "
                f"batches_over_{RECORD_BUCKETS * self.bucket}:{c['over_buckets']}")
        stats, w["stats"] = w["stats"], []
        w.update(step=step, wait_ms=c["data_wait_ms"])
        if not selecting:
            return f"data step:{step} progress:{progress:.4f} {tail}"
        if not stats:
            return f"curriculum step:{step} progress:{progress:.4f} (no batch since the last line) {tail}"
        target, mean, lo, hi, pool = zip(*stats)
        return (f"curriculum step:{step} progress:{progress:.4f} target:{target[-1]:.4f} "
                f"kept_score_mean:{np.mean(mean):.4f} kept_score_min:{min(lo):.4f} kept_score_max:{max(hi):.4f} "
                f"pool_score_mean:{np.mean(pool):.4f} {tail}")

    def results(self, batches: PackedBatches, config: CurriculumConfig) -> dict:
        c, n = self.c, max(self.c["micro_batches"], 1)
        out = dict(loader="documents", pool=config.pool if config.enabled else None, bucket=self.bucket,
                   micro_batches=c["micro_batches"], tokens_read=c["tokens_read"], tokens_trained=c["tokens_trained"],
                   documents_per_batch=c["documents"] / n, pieces_per_batch=c["pieces"] / n,
                   boundaries_max=c["boundaries_max"], batches_over_buckets=c["over_buckets"],
                   buckets_compiled=RECORD_BUCKETS, data_wait_ms=c["data_wait_ms"], wraps=batches.stream.wraps)
        if batches.selector is not None:
            out |= dict(kept_score_mean=c["kept_score_sum"] / max(c["pieces"], 1),
                        pool_score_mean=c["pool_score_sum"] / max(c["pool_pieces"], 1),
                        pieces_waiting=len(batches.selector.waiting), wait_max=c["wait_max"])
        return out

    def state_dict(self) -> dict:
        return dict(c=dict(self.c), window=dict(self.window, stats=list(self.window["stats"])))

    def load_state_dict(self, state: dict) -> None:
        self.c, self.window = dict(state["c"]), dict(state["window"])


class PackedSource:
    """train_gpt.py's data path for `DATA_LAYOUT=packed` (the `DataPath` seam): each micro-batch
    is one `[1, N]` stream of this rank's next document pieces and their `cu_seqlens`."""

    def __init__(self, plan: DataPlan, shape: Shape, device: torch.device, rank: int = 0, *, bucket: int = 64,
                 first_lines: list[str] = ()):
        config, seq_len = plan.curriculum, shape.seq_len
        self.device, self.config, self.tokens = torch.device(device), config, shape.micro_batch_seqs * seq_len
        self.batches = PackedBatches(plan.shards(), rank, shape.world_size, plan.vocab_size, seq_len, bucket, config,
                                     pin=self.device.type == "cuda")
        self.statistics = PackedStatistics(bucket)
        self.watch = ContentWatch(plan.shards())  # checked by `summary`: no shard changed under the run
        self._last_state: dict | None = None
        self._progress = 0.0
        self.pending = [*first_lines, f"data: DATA_LAYOUT=packed: {self.tokens:,} tokens a micro-batch, documents cut "
                        f"every {seq_len} tokens, cu_seqlens in buckets of {bucket}"]

    def next_batch(self, at) -> tuple[Tensor, Tensor, Tensor]:
        batch, wait_ms = self.batches.get(self.tokens, at.progress, at.warmdown_start)
        self._last_state, self._progress = batch.state_after, at.progress
        self.statistics.taken(batch, wait_ms)
        x, y = (torch.as_tensor(a)[None].to(self.device, non_blocking=True) for a in (batch.inputs, batch.targets))
        return x, y, torch.as_tensor(batch.cu_seqlens).to(self.device, non_blocking=True)

    def observe(self, per_token_loss: Tensor) -> None:
        """Nothing here learns from the loss."""

    def drain_log(self, step: int) -> list[str]:
        lines, self.pending = self.pending, []
        every = self.config.log_every
        if every and step and step % every == 0 and step != self.statistics.window["step"]:
            lines.append(self.statistics.log_line(step, self._progress, self.config.enabled))
        return lines

    def summary(self, at) -> dict:
        self.watch.check()
        data = self.statistics.results(self.batches, self.config)
        steps = max(at.step, 1)
        return dict(data=data | dict(data_wait_ms_per_step=round(data["data_wait_ms"] / steps, 4),
                                     reader_cpu_ms_per_step=round(self.batches.cpu_ms / steps, 4)))

    def state_dict(self) -> dict:
        return dict(batches=self._last_state, requests=list(self.batches.requests),
                    statistics=self.statistics.state_dict(), progress=self._progress)

    def load_state_dict(self, state: dict) -> None:
        if state["batches"] is not None:
            self.batches.restore(state["batches"], state["requests"])
        self.statistics.load_state_dict(state["statistics"])
        self._last_state, self._progress = state["batches"], state["progress"]

    def close(self) -> None:
        self.batches.close()
