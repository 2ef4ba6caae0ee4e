"""`DATA_ORDER=curriculum`: a whole-run order drawn from the difficulty index, no per-step scoring.

Competence-based sampling. The index's rows are sorted once by the chosen signal (ties by row
number) and cut into `BUCKETS` equal buckets of difficulty; each pass visits every bucket in a
seeded permutation of its own. At progress p the pacing names a band of difficulty percentiles
(`pacing_band`); each micro-batch draws its rows uniformly from the band's rows not yet used in
this pass (a multivariate hypergeometric draw over the buckets, then a seeded shuffle), so every
row is used at most once per pass. When the band has too few unused rows it widens to the
nearest buckets that have some; when the pass has too few, the next pass begins. Every rank
makes the same draw and keeps its own share, as `DATA_ORDER=shuffled` does. Rows the signal did
not score (NaN: proxy_loss's held-out rows) are never drawn.

The draw for micro-batch m reads the progress of micro-batch m - lag (`ProgressFeed`): the
read-ahead thread runs at most `lag` micro-batches ahead, so that progress is always known and
the same seed gives the same batches whatever the thread's timing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import PACINGS, OrderConfig
from ..index import RowLayout
from ..order import ProgressFeed
from ..schedules import v_schedule
from ..shards import DataError, read_shard
from .aligned import row_table
from .base import DataEvent, ReaderBase

BUCKETS = 100
V_PEAK = 0.45  # seed 003's V: hardest at 45% of the run


def _clip(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)


def pacing_band(pacing: str, progress: float, start: float, warmup: float, width: float) -> tuple[float, float]:
    """The band of difficulty percentiles [lo, hi] drawn from at `progress`:
    warmup: [0, g], g growing linearly from `start` to 1 over the first `warmup` of the run, then
    every row (the literature's winning form); linear: [0, g] with g from `start` to 1 over the
    whole run; reverse: [1 - g, 1], hardest first; v: a band `width` wide centred on the V's
    target (v_schedule), kept inside [0, 1]."""
    p = _clip(progress)
    if pacing == "warmup":
        g = start + (1.0 - start) * (min(p / warmup, 1.0) if warmup > 0 else 1.0)
        return 0.0, _clip(g)
    if pacing == "linear":
        return 0.0, _clip(start + (1.0 - start) * p)
    if pacing == "reverse":
        return _clip(1.0 - start - (1.0 - start) * p), 1.0
    if pacing == "v":
        lo = min(max(v_schedule(p, V_PEAK) - width / 2, 0.0), 1.0 - width)
        return lo, lo + width
    raise ValueError(f"ORDER_PACING={pacing!r}: must be one of {', '.join(PACINGS)}")


@dataclass(frozen=True)
class CurriculumState:
    seq_len: int
    passes: int = 0
    draws: int = 0                          # micro-batches drawn: the progress feed's index
    taken: tuple[int, ...] = ()             # rows used from each bucket in this pass (() : none)
    tokens_skipped: int = 0
    band: tuple[float, float] = (0.0, 1.0)  # the last draw's band, as drawn


@dataclass
class Draw:
    """One micro-batch's draw, every rank's rows, for the statistics."""
    rows: np.ndarray        # [world_size x n] row numbers
    band: tuple[float, float]
    score_sum: float
    passes: int
    seq_len: int            # another length numbers other rows
    rows_in_index: int


class CurriculumRows(ReaderBase):
    """The reader for DATA_ORDER=curriculum (the `Reader` protocol of readers/base.py)."""
    State = CurriculumState

    def __init__(self, files: list[Path], seq_len: int, rank: int, world_size: int, seed: int, align: str,
                 doc_max: int, order: OrderConfig, feed: ProgressFeed, open_index, dataset: str | None = None):
        super().__init__(dataset)
        self.files, self.rank, self.world_size, self.seed = list(files), rank, world_size, seed
        self.align, self.doc_max, self.order, self.feed = align, doc_max, order, feed
        self.open_index = open_index  # (seq_len, signal, files) -> the checked DifficultyIndex (curriculum/plan.py)
        self.shards = [read_shard(f) for f in self.files]
        self.total_tokens = sum(len(t) for t in self.shards)
        self.last_rows = np.zeros(0, dtype=np.int64)
        self.last_draw: Draw | None = None
        self.seq_len = None
        self._restore(CurriculumState(seq_len))

    # ------------------------------------------------------------ the index, per row length
    def _open(self, seq_len: int) -> None:
        index = self.open_index(seq_len, self.order.score, self.files)
        path, self.index, self.seq_len = index.path, index, seq_len
        self.layout = RowLayout.build(self.shards, self.files, seq_len, self.align, self.doc_max)
        if self.layout.rows != index.rows or not np.array_equal(self.layout.start, index.columns["start"]):
            raise DataError(f"the difficulty index {path} numbers other rows than these shards make at TRAIN_SEQ_LEN="
                            f"{seq_len}, DATA_ALIGN={self.align}: build it again with python -m curriculum.index_build")
        scores = np.asarray(index.columns[self.order.score], dtype=np.float64)
        scored = np.flatnonzero(np.isfinite(scores))
        if len(scored) < self.world_size:
            raise DataError(f"ORDER_SCORE={self.order.score}: {len(scored)} rows of {path} have a score, fewer than "
                            f"the {self.world_size} ranks")
        by_difficulty = scored[np.argsort(scores[scored], kind="stable")]
        self.buckets = np.array_split(by_difficulty, min(BUCKETS, len(by_difficulty)))
        self.bucket_edges = np.linspace(0.0, 1.0, len(self.buckets) + 1)
        self.scores = scores
        self.unscored = index.rows - len(scored)

    def _permutations(self) -> list[np.ndarray]:
        return [b[np.random.Generator(np.random.PCG64([self.seed, self.passes, k])).permutation(len(b))]
                for k, b in enumerate(self.buckets)]

    # ------------------------------------------------------------ state
    def _restore(self, state: CurriculumState) -> None:
        if state.seq_len != self.seq_len:
            self._open(state.seq_len)
            self.domain_offset = 1 if self.align == "bos" else (state.seq_len + 1) // 2
            self._perm_pass = None
        self.passes, self.draws, self.tokens_skipped, self.band = (state.passes, state.draws, state.tokens_skipped,
                                                                   tuple(state.band))
        self.taken = np.asarray(state.taken or [0] * len(self.buckets), dtype=np.int64)
        if self._perm_pass != self.passes:
            self.perms, self._perm_pass = self._permutations(), self.passes

    def _state(self) -> CurriculumState:
        return CurriculumState(self.seq_len, self.passes, self.draws, tuple(int(t) for t in self.taken),
                               self.tokens_skipped, self.band)

    def load_state_dict(self, state: dict) -> None:
        self._restore(CurriculumState(**(state | dict(taken=tuple(state["taken"]), band=tuple(state["band"])))))

    def reshaped(self, state: dict, seq_len: int) -> dict:
        """Another length numbers other rows (another index): a new pass of them begins."""
        return state if seq_len == state["seq_len"] else state | dict(seq_len=seq_len, taken=())

    # ------------------------------------------------------------ drawing
    def _remaining(self) -> np.ndarray:
        return np.asarray([len(b) for b in self.buckets], dtype=np.int64) - self.taken

    def _band_buckets(self, band: tuple[float, float], k: int, remaining: np.ndarray) -> tuple[int, int]:
        """Buckets [a, b) covering the band, widened (above first, then below) until they hold k unused rows."""
        n = len(self.buckets)
        a = min(int(math.floor(band[0] * n + 1e-9)), n - 1)
        b = max(int(math.ceil(band[1] * n - 1e-9)), a + 1)
        while remaining[a:b].sum() < k and (a > 0 or b < n):
            if b < n:
                b += 1
            if remaining[a:b].sum() < k and a > 0:
                a -= 1
        return a, b

    def _draw(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """k row numbers from the band (k <= the pass's unused rows)."""
        remaining = self._remaining()
        a, b = self._band_buckets(self.band, k, remaining)
        counts = rng.multivariate_hypergeometric(remaining[a:b], k)
        parts = []
        for j, c in enumerate(counts.tolist()):
            if c:
                bucket = a + j
                parts.append(self.perms[bucket][self.taken[bucket]:self.taken[bucket] + c])
                self.taken[bucket] += c
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def fits_in_pass(self, n: int) -> bool:
        return self.world_size * n <= int(self._remaining().sum())

    def take(self, n: int):
        need = self.world_size * n
        progress = self.feed.at(self.draws)
        o = self.order
        self.band = pacing_band(o.pacing, progress, o.start, o.warmup, o.width)
        rng = np.random.Generator(np.random.PCG64([self.seed, self.passes, self.draws, 1]))
        parts = []
        while need:
            left = int(self._remaining().sum())
            if left == 0:
                self.passes += 1
                self.taken[:] = 0
                self.perms, self._perm_pass = self._permutations(), self.passes
                self.events.append(DataEvent("wrap", self.dataset, self.passes + 1))
                continue
            k = min(need, left)
            parts.append(self._draw(k, rng))
            need -= k
        drawn = rng.permutation(np.concatenate(parts))  # the buckets' order would give rank 0 the easiest rows
        self.draws += 1
        self.last_draw = Draw(drawn, self.band, float(self.scores[drawn].sum()), self.passes, self.seq_len, self.index.rows)
        self.last_rows = drawn[self.rank * n:(self.rank + 1) * n]
        rows = self.layout.read(self.shards, self.files, self.last_rows)
        if self.align == "bos":
            table = row_table(tuple(self.files), self.seq_len, self.doc_max)
            self.tokens_skipped += int(table.row_skipped[self.last_rows].sum())
        return rows, self.layout.start[self.last_rows], None

    @property
    def tokens_consumed(self) -> int:
        """The stream's tokens in the passes read, pro rata over the rows drawn from."""
        drawn = self.passes * (self.index.rows - self.unscored) + int(self.taken.sum())
        return drawn * self.total_tokens // max(self.index.rows - self.unscored, 1)

    def where(self) -> str:
        return ", ".join(sorted({str(self.files[i]) for i in self.layout.shard[self.last_rows].tolist()}))

    def describe(self) -> list[str]:
        params = self.index.parameters(self.order.score)
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if k not in ("signal", "version"))
        held = f"; {self.unscored:,} rows have no score and are never drawn" if self.unscored else ""
        return [f"data: DATA_ORDER=curriculum {self.order.score} ({shown or 'no parameters'}) from {self.index.path}: "
                f"{self.index.rows:,} rows in {len(self.buckets)} buckets, pacing {self.order.pacing} "
                f"{self.order.parameters()}{held}"]
