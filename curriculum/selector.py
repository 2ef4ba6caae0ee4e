"""Selection, on the device: score a pool, aim where the schedule says, keep the pool's window.

The score is a pure function of the tokens (curriculum/scores.py), the target percentile comes
from the schedule over training progress (curriculum/schedules.py), and the pool (`fresh` or
`carry`, curriculum/pool.py) keeps the window. The window's sums and extremes accumulate on the
device (`WindowStats`), so nothing here waits for it; only a log line reads them.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import CurriculumConfig
from .pool import Pool, Pooled
from .schedules import target_percentile
from .scores import NEEDS_UNIGRAM_COUNTS, SCORES, unigram_surprisal
from .shards import unigram_counts


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

    def state_dict(self) -> dict:
        return dict(acc=self.acc.cpu(), kept_domains=None if self.kept_domains is None else self.kept_domains.cpu())

    def load_state_dict(self, state: dict) -> None:
        self.acc = state["acc"].to(self.device)
        if state["kept_domains"] is not None:
            self.kept_domains = state["kept_domains"].to(self.device)


# Which rows a micro-batch keeps: `selected`, a run's; the bench's decomposition (tools/turns.py)
# takes the curriculum apart with `pool_first` (read, score and select as usual, but keep the pool's
# first rows: the pool's cost without its content) and `read_first` (read the pool, score nothing,
# keep its first rows: reading twice the rows, alone)
KEEPS = ("selected", "pool_first", "read_first")


class Selector:
    """The curriculum's filter for one shape: `batch_seqs` kept from each pool."""

    def __init__(self, config: CurriculumConfig, batch_seqs: int, *, files: list[Path], vocab_size: int,
                 device: torch.device, stats: WindowStats, keep: str = "selected"):
        if keep not in KEEPS:
            raise ValueError(f"keep={keep!r}: must be one of {', '.join(KEEPS)}")
        self.config, self.batch_seqs, self.device, self.vocab_size = config, batch_seqs, device, vocab_size
        self.keep = keep
        self.pool_size = config.pool_size(batch_seqs)
        self.pool = Pool(config.pool, batch_seqs)
        self.stats = stats
        self.last_target: float | None = None
        self.score = SCORES.get(config.score)  # None: index:<signal>, the scores come with the rows
        self.counted_tokens = None
        if config.score in NEEDS_UNIGRAM_COUNTS:
            surprisal, self.counted_tokens = corpus_surprisal(tuple(files), vocab_size)
            self.score = functools.partial(self.score, surprisal=surprisal.to(device))

    def fresh_needed(self) -> int:
        """Rows to read for the next pool: the whole pool, or with `carry` once rows wait, `batch_seqs`."""
        return self.pool.fresh_needed(self.pool_size)

    def choose(self, rows: Tensor, domains: Tensor | None, micro_batch: int, progress: float,
               warmdown_start: float, scores: Tensor | None = None) -> tuple[Tensor, int]:
        """The kept rows, and how many rows the pool held; `scores`: the rows' from the index."""
        if self.keep == "read_first":
            return self._first_rows(rows, domains)
        cfg = self.config
        self.last_target = target_percentile(cfg.schedule, progress, cfg.peak, cfg.target, warmdown_start)
        read_at = (torch.full((rows.size(0),), micro_batch, dtype=torch.int64, device=self.device)
                   if cfg.pool == "carry" else None)
        scores = self.score(rows, self.vocab_size) if scores is None else scores
        kept, pool = self.pool.choose(Pooled(rows, scores, read_at, domains), self.last_target)
        self.kept_domains = kept.domains  # MIX=adaptive sums the kept rows' losses by them
        self.stats.add(kept, pool, micro_batch)
        if self.keep == "pool_first":
            return self._first_rows(rows, domains)
        return kept.rows, pool.rows.size(0)  # a host number: the sizes are known

    def _first_rows(self, rows: Tensor, domains: Tensor | None) -> tuple[Tensor, int]:
        self.kept_domains = None if domains is None else domains[:self.batch_seqs]
        return rows[:self.batch_seqs], rows.size(0)

    def waiting_rows(self) -> int:
        return 0 if self.pool.waiting is None else self.pool.waiting.rows.size(0)

    def state_dict(self) -> dict:
        waiting = self.pool.waiting
        return dict(last_target=self.last_target, waiting=None if waiting is None else {
            k: None if t is None else t.cpu() for k, t in zip(("rows", "scores", "read_at", "domains"), waiting._fields())})

    def load_state_dict(self, state: dict) -> None:
        self.last_target, waiting = state["last_target"], state["waiting"]
        if waiting is not None:
            self.pool.waiting = Pooled(*(None if waiting[k] is None else waiting[k].to(self.device)
                                         for k in ("rows", "scores", "read_at", "domains")))
