"""The data path for one rank, and the one seam the trainer meets it at (`DataPath`).

    batches = open_data_path(plan, shape, device, rank)    # curriculum/plan.py: a BatchSource
    x, y = batches.next_batch(Position(progress, warmdown_start, step, tokens, elapsed_ms))
    for line in batches.drain_log(step): log(line)
    results |= batches.summary(Position(..., step=steps)); batches.state_dict(); batches.close()

Its stages, one job each, each with its own state:

1. readers (curriculum/readers/): sequences of seq_len + 1 tokens, each rank its disjoint share,
   in the challenge's order, a seeded shuffle of fixed slots, or a blend of datasets;
2. read-ahead (curriculum/read_ahead.py): a background thread reads them ahead of the loop;
3. selection (curriculum/selector.py, curriculum on): the rows are scored on the device and
   the pool (`fresh` or `carry`) keeps the window of ranks the schedule asks for;
4. statistics (curriculum/statistics.py): counts, mix windows, the log lines and the summary;
5. phases (curriculum/phases.py, CURRICULUM_PHASES): when the run's position says a phase
   ends, the loader switches its own shape, filter and mixture.

With the curriculum off the pool is exactly the batch, so both arms share the same read-ahead,
transfer and batch construction: a fair race. Nothing waits for the device: the window's
position depends only on the progress (a host number) and the sizes.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .config import CurriculumConfig, Shape
from .domains import DomainIndex
from .order import ProgressFeed
from .read_ahead import Block, ReadAhead
from .readers import DataError, DataExhausted, Mixture, open_reader
from .selector import Selector, WindowStats
from .shards import ContentWatch, shard_token_count
from .statistics import DataStatistics

if TYPE_CHECKING:  # the plan opens the loader (curriculum/plan.py); the loader only reads it
    from .plan import DataPlan

__all__ = ["BatchSource", "Block", "DataError", "DataExhausted", "DataPath", "Mixture", "Position"]


@dataclass(frozen=True)
class Position:
    """Where the run stands when it asks for a micro-batch."""
    progress: float = 0.0        # of the run, in [0, 1]: drives the schedule (and the LR, SWA)
    warmdown_start: float = 1.0  # the progress at which the LR warmdown begins
    step: int = 0                # optimiser steps done
    tokens: int = 0              # tokens trained on, every rank's
    elapsed_ms: float = 0.0      # training time so far


@runtime_checkable
class DataPath(Protocol):
    """The seam between a training loop and its data: everything the trainer calls."""

    def next_batch(self, at: Position) -> tuple[Tensor, Tensor]:
        """Inputs and targets [sequences, seq_len] on the device for one micro-batch."""

    def drain_log(self, step: int) -> list[str]:
        """The lines to log since the last call (phases begun, passes, drops, the loader's line)."""

    def summary(self, at: Position) -> dict:
        """The run's data results at its end, to merge into its summary; the closing line is in
        the next drain."""

    def observe(self, per_token_loss: Tensor) -> None:
        """The last micro-batch's per-token loss, on the device (MIX=adaptive learns from it)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def close(self) -> None: ...


class BatchSource:
    """The data path for one rank: rows, read-ahead, selection, statistics and phases composed.
    The shape (sequence length, sequences per micro-batch) may change between micro-batches:
    what was read ahead for the old shape is dropped, the stream resumes right after the last
    batch taken, and with `carry` the waiting sequences, cut for the old shape, are discarded
    and counted. A loader for `warm_up_steps` steps spreads them over the phases in order, so
    that every phase's shapes are compiled before the clock starts."""

    def __init__(self, plan: DataPlan, shape: Shape, device: torch.device, rank: int = 0, *, warm_up_steps: int = 0,
                 read_ahead: int = 4, mixture: Mixture | None = None, first_lines: list[str] = (), keep: str = "selected"):
        """The data path of `plan` (checked: curriculum/plan.py's `open_data_path` makes it) for a
        run of `shape`; `mixture` blends the datasets given instead of the plan's shards (a test's)."""
        seq_len, batch_seqs, world_size, config = shape.seq_len, shape.micro_batch_seqs, shape.world_size, plan.curriculum
        self.plan, self.align, self.order = plan, plan.align, plan.order
        self.rank, self.world_size, self.depth = rank, world_size, read_ahead
        self.vocab_size, self.device = plan.vocab_size, torch.device(device)
        self.tracker, self.warm_up_steps, self.keep = None, warm_up_steps, keep
        pending = list(first_lines)
        if plan.phases:  # each optional part is imported where it is used: a run imports only what it uses
            from .phases import PhaseTracker
            phases = plan.run_phases(shape)[0]
            self.tracker = PhaseTracker(phases)
            stage = self.tracker.stage
            seq_len, batch_seqs, config = stage.seq_len, stage.micro_batch_seqs, stage.config
            mixture = Mixture(phases.names, phases.files, tuple(phases.plan.datasets[n].on_exhaust for n in phases.names),
                              stage.weights)
            pending += [phases.describe(), self.tracker.line(0, 0)]
        elif plan.mix.mode:
            mixture = plan.mixture()
        self.mix = mix = plan.mix
        self.mixture = mixture
        if mixture is not None:  # the datasets, blended; each row's domain is its dataset
            self.files = [f for fs in mixture.files for f in fs]
            self.domain_index, self.domain_names = None, mixture.names
        else:
            self.files = plan.shards()
            self.domain_index = DomainIndex.from_shards(self.files, [shard_token_count(f) for f in self.files], pending)
            self.domain_names = self.domain_index.names if self.domain_index else ()
        self.watch = ContentWatch(self.files)  # checked by `summary`: no shard changed under the run
        # DATA_ORDER=curriculum draws micro-batch m at the progress of m - lag: the read-ahead is never further ahead
        self.index_order, self.feed = plan.index_order, ProgressFeed(lag=read_ahead + 1)
        self.schedule = None
        if mix.mode == "adaptive":
            from .mixing import WeightSchedule
            self.schedule = WeightSchedule()
        self.rows = open_reader(self.files, mixture, seq_len, rank, world_size, plan.order, plan.seed, plan.align,
                                plan.doc_max_tokens, index_order=(plan.index_order, self.feed, plan.index),
                                natural=mix.mode == "natural", schedule=self.schedule)
        self.adaptive = None
        if self.schedule is not None:
            from .mixing import AdaptiveMix, reference_losses
            reference = None if mix.rule != "excess_loss" else reference_losses(mix.reference, mixture.names)
            self.adaptive = AdaptiveMix(mix, mixture.names, list(self.rows.weights), reference, self.device,
                                        lag=read_ahead + 1, schedule=self.schedule, world_size=world_size)
        self._trained_domains = None
        self.total_tokens = self.rows.total_tokens
        self.window_stats: WindowStats | None = None
        self.statistics = DataStatistics(self.domain_names, None)
        if plan.order == "curriculum":
            from .statistics import OrderTally
            self.statistics.order = OrderTally(rows=self.rows.index.rows)
        self.statistics.pending += pending + self.rows.describe()
        self.config, self.selector, self._read_ahead = None, None, None
        self._at = Position()
        self._start(seq_len, batch_seqs, config, self.rows.state_dict())

    # ------------------------------------------------------------ shape, filter and read-ahead
    def _start(self, seq_len: int, batch_seqs: int, config: CurriculumConfig, state: dict, waiting: dict | None = None) -> None:
        self.seq_len, self.batch_seqs, self.config = seq_len, batch_seqs, config
        self.pool_size = config.pool_size(batch_seqs)
        self.selector = None
        if config.enabled:
            if self.window_stats is None:
                self.window_stats = self.statistics.stats = WindowStats(self.device, len(self.domain_names))
            self.selector = Selector(config, batch_seqs, files=self.files, vocab_size=self.vocab_size,
                                     device=self.device, stats=self.window_stats, keep=self.keep)
            if waiting is not None:
                self.selector.load_state_dict(waiting)
        self._resume = state  # where the stream goes on after the last batch taken
        lookup = self._score_lookup(config, seq_len) if config.enabled and config.score.startswith("index:") else None
        carry = config.enabled and config.pool == "carry"
        first = self.selector.fresh_needed() if self.selector else self.pool_size
        self._read_ahead = ReadAhead(self.rows, state, first=first, then=batch_seqs if carry else self.pool_size,
                                     vocab_size=self.vocab_size, domain_index=self.domain_index,
                                     domains=len(self.domain_names), pin=self.device.type == "cuda", depth=self.depth,
                                     score_lookup=lookup)

    def _score_lookup(self, config: CurriculumConfig, seq_len: int):
        """CURRICULUM_SCORE=index:<signal>: the index of the rows read at this length (an index.ScoreLookup)."""
        from .index import ScoreLookup
        signal = config.score.split(":", 1)[1]
        if self.mixture is not None or (self.order == "sequential" and self.align == "none"):
            raise DataError(f"CURRICULUM_SCORE={config.score}: the index scores whole rows, which DATA_ORDER=sequential "
                            f"(spans of the stream) and a phases file's mixture do not read; use DATA_ORDER=shuffled or "
                            f"curriculum, or DATA_ALIGN=bos")
        return ScoreLookup(self.plan.index(seq_len, signal, self.files), signal)

    def _stop_read_ahead(self) -> None:
        """Join the thread: the reader's state is restored next, so it must be gone."""
        self._read_ahead.close(wait=True)
        self.statistics.c.reader_cpu_ms += self._read_ahead.cpu_ms
        self._read_ahead.cpu_ms = 0.0

    def set_shape(self, seq_len: int, batch_seqs: int) -> None:
        """The next micro-batches' shape; nothing happens when it is the current one."""
        self.reconfigure(seq_len, batch_seqs)

    def reconfigure(self, seq_len: int, batch_seqs: int, config: CurriculumConfig | None = None,
                    weights: list[float] | None = None) -> None:
        """A new phase: its shape, its filter, its mixture's weights (each None: unchanged)."""
        config = self.config if config is None else config
        if (seq_len, batch_seqs, config) == (self.seq_len, self.batch_seqs, self.config) and weights is None:
            return
        self._stop_read_ahead()
        if self.selector is not None and self.selector.waiting_rows():
            self.statistics.discarded_waiting(self.selector.waiting_rows(), self.seq_len)
        state = self.rows.reshaped(self._resume, seq_len)
        if weights is not None:
            state = self.rows.reweighted(state, weights)
            if self.adaptive is not None:  # a new phase: its mixture is the adaptive weights' new start
                self.schedule.add(state["draws"], weights)
                self.adaptive.weights = list(weights)
        self._start(seq_len, batch_seqs, config, state)

    def _advance_phases(self, at: Position) -> None:
        tracker = self.tracker
        if self.warm_up_steps:  # warm-up: a share of the steps in each phase, nothing recorded
            index = min(at.step * len(tracker.stages) // self.warm_up_steps, len(tracker.stages) - 1)
            if index != tracker.s.index:
                tracker.s.index = index
                self._enter(tracker.stage)
            return
        while tracker.ended(at.step, at.tokens, at.progress):
            tracker.record(self.statistics.mix_totals(), at.step, at.tokens, at.elapsed_ms)
            tracker.next_phase(at.step, at.tokens, at.progress, at.elapsed_ms)
            self.statistics.pending.append(tracker.line(at.step, at.tokens))
            self._enter(tracker.stage)

    def _enter(self, stage) -> None:
        self.reconfigure(stage.seq_len, stage.micro_batch_seqs, stage.config, list(stage.weights))

    # ------------------------------------------------------------ the seam
    def next_batch(self, at: Position) -> tuple[Tensor, Tensor]:
        """Inputs and targets [batch_seqs, seq_len] on the device for one micro-batch."""
        if self.tracker is not None:
            self._advance_phases(at)
        self._at = at
        self.feed.observe(self.statistics.c.micro_batches, at.progress)  # before the block: the reader may wait on it
        t0 = time.perf_counter()
        block = self._read_ahead.get()
        wait_ms = 1000.0 * (time.perf_counter() - t0)
        self._resume = block.state_after
        self.statistics.taken(len(block.positions), self.batch_seqs, self.seq_len, block.positions, block.domain_counts,
                              block.tokens_consumed, block.tokens_skipped, block.events, wait_ms, block.draw)
        rows = block.tokens.to(self.device, non_blocking=True).long()
        if self.selector is not None:
            progress = at.progress if self.tracker is None else \
                self.tracker.schedule_progress(at.step, at.tokens, at.progress)
            domains = None if block.domains is None else block.domains.to(self.device, non_blocking=True)
            scores = None if block.scores is None else block.scores.to(self.device, non_blocking=True)
            rows, pooled = self.selector.choose(rows, domains, self.statistics.c.micro_batches, progress,
                                                at.warmdown_start, scores)
            self.statistics.pooled(pooled)
            self._trained_domains = self.selector.kept_domains
        else:
            self.statistics.trained_unselected(block.domain_counts)
            if self.adaptive is not None:
                self._trained_domains = block.domains.to(self.device, non_blocking=True)
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def observe(self, per_token_loss: Tensor) -> None:
        """The last micro-batch's per-token training loss [sequences, seq_len], still on the device:
        MIX=adaptive sums it per dataset (no synchronisation); otherwise nothing happens."""
        if self.adaptive is None or self._trained_domains is None:
            return
        self.adaptive.observe(per_token_loss, self._trained_domains)
        line = self.adaptive.at_micro_batch(self.statistics.c.micro_batches - 1, self._at.step)
        if line:
            self.statistics.pending.append(line)

    # ------------------------------------------------------------ reporting
    def log_line(self, step: int, progress: float) -> str:
        """One line about the steps since the last call."""
        return self.statistics.log_line(step, progress, self.selector is not None,
                                        self.config.enabled and self.config.pool == "carry",
                                        self.selector.last_target if self.selector else None)

    def drain_log(self, step: int) -> list[str]:
        """Phases begun, passes begun and datasets dropped since the last call, and every
        CURRICULUM_LOG_EVERY steps the loader's line about the steps since the last one."""
        lines, self.statistics.pending = self.statistics.pending, []
        lines += self.statistics.event_lines(step)
        every = self.config.log_every
        if every and step and step % every == 0 and step != self.statistics.c.window["step"]:
            lines.append(self.log_line(step, self._at.progress) + self._progress_text(self._at))
        return lines

    def _progress_text(self, at: Position) -> str:
        """The phase and how far through it, for the trainer's step line ("" without phases)."""
        return "" if self.tracker is None else self.tracker.progress_text(at.step, at.tokens, at.progress)

    @property
    def micro_batches(self) -> int:
        return self.statistics.c.micro_batches

    @property
    def read_positions(self) -> list[np.ndarray]:
        """Each row's stream position, per micro-batch, for the first 64 micro-batches taken."""
        return [np.asarray(p, dtype=np.int64) for p in self.statistics.c.read_positions]

    @property
    def reader_cpu_ms(self) -> float:
        return self.statistics.c.reader_cpu_ms + self._read_ahead.cpu_ms

    def summary(self, at: Position) -> dict:
        """{"data": totals for the run's summary} and, with phases, what each phase did, at the
        run's end `at`; the closing line waits in the next `drain_log`. Every rank calls it: the
        ranks' first rows are gathered here."""
        self.watch.check()
        s, steps = self.statistics, at.step
        s.c.reader_cpu_ms, self._read_ahead.cpu_ms = self.reader_cpu_ms, 0.0
        carry = self.config.enabled and self.config.pool == "carry"
        data = s.summary(steps, order=self.order, align=self.align, pool=self.config.pool if self.config.enabled else None, carry=carry,
                         waiting=self.selector.waiting_rows() if carry else 0, pool_size=self.pool_size,
                         batch_seqs=self.batch_seqs, seq_len=self.seq_len, total_tokens=self.total_tokens,
                         dataset_names=self.mixture.names if self.mixture is not None else None)
        if self.mix.mode:
            data["mix"] = dict(mode=self.mix.mode, datasets=list(self.mixture.names), start_weights=list(self.mixture.weights))
            if self.adaptive is not None:
                data["mix"] |= dict(rule=self.mix.rule, update_every=self.mix.update_every, updates=self.adaptive.history,
                                    final_weights=self.adaptive.weights, reference=self.adaptive.reference)
        if "order" in data:
            index = self.rows.index
            data["order"] |= dict(config=self.index_order.parameters(), index=str(index.path), index_rows=index.rows,
                                  unscored_rows=self.rows.unscored, signal=index.parameters(self.index_order.score))
        if self.selector is not None and self.selector.counted_tokens is not None:
            data["unigram_counts_from_tokens"] = self.selector.counted_tokens
        rows = [data["first_rows"]]
        if dist.is_available() and dist.is_initialized() and self.world_size > 1:
            rows = [None] * self.world_size
            dist.all_gather_object(rows, data["first_rows"])
        data["rank_first_rows"] = rows
        if self.adaptive is not None:  # every rank computes the weights: they must agree
            final = [self.adaptive.weights]
            if dist.is_available() and dist.is_initialized() and self.world_size > 1:
                final = [None] * self.world_size
                dist.all_gather_object(final, self.adaptive.weights)
            data["mix"]["rank_final_weights"] = final
        s.pending.append(s.closing_line(data))
        out = dict(data=data)
        if self.tracker is not None:
            self.tracker.record(s.mix_totals(), steps, at.tokens, at.elapsed_ms)
            plan = self.tracker.phases.plan
            out |= dict(phases=self.tracker.s.done, phases_sha256=plan.sha256, schedule_progress=plan.schedule_progress)
        return out

    # ------------------------------------------------------------ saved state
    def state_dict(self) -> dict:
        """Where the data path stands after the last batch taken, and what it has counted: with
        `load_state_dict` on a loader made with the same arguments, the batches, log lines and
        summary go on exactly as this loader's would. Host values and CPU tensors only (what was
        read ahead is not saved: it is read again)."""
        return dict(rows=self._resume, seq_len=self.seq_len, batch_seqs=self.batch_seqs,
                    config=dataclasses.asdict(self.config), at=dataclasses.asdict(self._at),
                    selector=None if self.selector is None else self.selector.state_dict(),
                    window_stats=None if self.window_stats is None else self.window_stats.state_dict(),
                    statistics=self.statistics.state_dict(), reader_cpu_ms=self.reader_cpu_ms,
                    phases=None if self.tracker is None else self.tracker.state_dict(), feed=self.feed.state_dict(),
                    adaptive=None if self.adaptive is None else dict(mix=self.adaptive.state_dict(),
                                                                      schedule=self.schedule.state_dict()))

    def load_state_dict(self, state: dict) -> None:
        """Go on from a `state_dict`: its shape, filter and mixture, its stream positions, the
        carry pool's waiting rows and every count."""
        self._stop_read_ahead()
        self.statistics.load_state_dict(state["statistics"])
        self.statistics.c.reader_cpu_ms = state["reader_cpu_ms"]
        if state["window_stats"] is not None:
            self.window_stats = self.statistics.stats = WindowStats(self.device, len(self.domain_names))
            self.window_stats.load_state_dict(state["window_stats"])
        if self.tracker is not None:
            self.tracker.load_state_dict(state["phases"])
        self._at = Position(**state["at"])
        self.feed.load_state_dict(state["feed"])
        if self.adaptive is not None:
            self.adaptive.load_state_dict(state["adaptive"]["mix"])
            self.schedule.load_state_dict(state["adaptive"]["schedule"])
        self._start(state["seq_len"], state["batch_seqs"], CurriculumConfig(**state["config"]),
                    state["rows"], state["selector"])

    def close(self) -> None:
        """Stop the read-ahead thread (what it read ahead is dropped)."""
        self._read_ahead.close()
