"""What the data path counts and reports: rows read and trained, tokens, waits, the mixture per
log window, passes and events, the loader's log lines and the run's data summary.

Host numbers only; the selection's device sums are read through `WindowStats.read` when a log
window closes (the one host synchronisation the curriculum makes).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .domains import mix_text
from .readers.base import DataEvent
from .selector import WindowStats

FIRST_ROWS_KEPT = 64  # micro-batches whose rows' stream positions are kept (the summary shows 8)


@dataclass
class Counts:
    """Everything counted since the start of the run (a checkpoint saves it whole)."""
    micro_batches: int = 0
    sequences_read: int = 0
    sequences_trained: int = 0
    sequences_pooled: int = 0
    sequences_dropped: int = 0      # carry's waiting rows discarded at a shape change
    tokens_read: int = 0
    tokens_trained: int = 0
    tokens_dropped: int = 0
    stream_wraps: int = 0           # the whole stream's, in the batches taken
    dataset_wraps: dict = field(default_factory=dict)
    datasets_dropped: list = field(default_factory=list)
    tokens_consumed: int = 0        # of the stream, every rank's share, in the batches taken
    tokens_skipped: int = 0         # DATA_ALIGN=bos: in this rank's rows' stretches of the stream, not in them
    data_wait_ms: float = 0.0
    reader_cpu_ms: float = 0.0      # the read-ahead threads' CPU time
    read_positions: list = field(default_factory=list)
    score_totals: dict = field(default_factory=lambda: dict(
        kept_sum=0.0, pool_sum=0.0, wait_sum=0.0, kept_min=float("inf"), kept_max=float("-inf"), wait_max=float("-inf")))
    read_domains: list = field(default_factory=list)
    trained_domains: list = field(default_factory=list)
    mix_windows: list = field(default_factory=list)
    # the open log window: where it began
    window: dict = field(default_factory=lambda: dict(micro=0, trained=0, pooled=0, wait_ms=0.0, step=0))
    window_read_domains: list = field(default_factory=list)


class DataStatistics:
    def __init__(self, domain_names: tuple[str, ...], stats: WindowStats | None):
        self.domain_names, self.stats = tuple(domain_names), stats
        zeros = [0] * len(self.domain_names)
        self.c = Counts(read_domains=list(zeros), trained_domains=list(zeros), window_read_domains=list(zeros))
        self.order = None              # DATA_ORDER=curriculum's OrderTally
        self.pending: list[str] = []   # lines for the next `drain_log`
        self.events: list[DataEvent] = []  # in the batches taken, not yet logged

    # ------------------------------------------------------------ counting
    def taken(self, read: int, trained: int, seq_len: int, positions: np.ndarray, domain_counts,
              tokens_consumed: int, tokens_skipped: int, events: list[DataEvent], wait_ms: float, draw=None) -> None:
        c = self.c
        if draw is not None:
            self.order.add(draw)
        c.micro_batches += 1
        c.sequences_read += read
        c.tokens_read += read * seq_len
        c.sequences_trained += trained
        c.tokens_trained += trained * seq_len
        c.tokens_consumed, c.data_wait_ms = tokens_consumed, c.data_wait_ms + wait_ms
        c.tokens_skipped = tokens_skipped
        if len(c.read_positions) < FIRST_ROWS_KEPT:
            c.read_positions.append(positions.tolist())
        if domain_counts is not None:
            c.read_domains = (np.asarray(c.read_domains) + domain_counts).tolist()
        for e in events:
            if e.kind == "drop":
                c.datasets_dropped.append(e.dataset)
            elif e.dataset is None:
                c.stream_wraps += 1
            else:
                c.dataset_wraps[e.dataset] = c.dataset_wraps.get(e.dataset, 0) + 1
        self.events += events

    def trained_unselected(self, domain_counts) -> None:
        """Rows trained on as read (no selection): they count as trained in their domains."""
        if domain_counts is not None:
            self.c.trained_domains = (np.asarray(self.c.trained_domains) + domain_counts).tolist()

    def pooled(self, n: int) -> None:
        self.c.sequences_pooled += n

    def discarded_waiting(self, n: int, seq_len: int) -> None:
        self.c.sequences_dropped += n
        self.c.tokens_dropped += n * seq_len

    def event_lines(self, step: int) -> list[str]:
        events, self.events = self.events, []
        return [e.line(step) for e in events]

    # ------------------------------------------------------------ log windows
    def mix_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows read and trained per domain (or dataset) so far: a phase's share is the difference."""
        self._close_window(self.c.micro_batches)
        return np.asarray(self.c.read_domains, dtype=np.int64), np.asarray(self.c.trained_domains, dtype=np.int64)

    def _close_window(self, step: int) -> dict:
        """The window since the last log line, on the host, added to the run's totals."""
        c, w = self.c, self.c.window
        micro, trained, pooled = (c.micro_batches - w["micro"], c.sequences_trained - w["trained"],
                                  c.sequences_pooled - w["pooled"])
        w.update(micro=c.micro_batches, trained=c.sequences_trained, pooled=c.sequences_pooled)
        window = dict(micro_batches=micro)
        if self.stats is not None and pooled:
            acc, kept_domains = self.stats.read()
            kept_sum, pool_sum, wait_sum, neg_min, kept_max, wait_max = acc
            t = c.score_totals
            t.update(kept_sum=t["kept_sum"] + kept_sum, pool_sum=t["pool_sum"] + pool_sum, wait_sum=t["wait_sum"] + wait_sum,
                     kept_min=min(t["kept_min"], -neg_min), kept_max=max(t["kept_max"], kept_max),
                     wait_max=max(t["wait_max"], wait_max))
            window |= dict(kept_mean=kept_sum / trained, kept_min=-neg_min, kept_max=kept_max,
                           pool_mean=pool_sum / pooled, wait_mean=wait_sum / trained, wait_max=wait_max)
            if kept_domains is not None:
                c.trained_domains = (np.asarray(c.trained_domains) + kept_domains).tolist()
                window["trained_domains"] = kept_domains
        if self.domain_names:
            read = np.asarray(c.read_domains, dtype=np.int64)
            window["read_domains"] = read - np.asarray(c.window_read_domains, dtype=np.int64)
            c.window_read_domains = read.tolist()
            window.setdefault("trained_domains", window["read_domains"])
            if micro:
                c.mix_windows.append(dict(step=step, read=window["read_domains"].tolist(),
                                          trained=np.asarray(window["trained_domains"]).tolist()))
        return window

    def log_line(self, step: int, progress: float, selecting: bool, carry: bool, target: float | None) -> str:
        """One line about the steps since the last one."""
        c = self.c
        steps = max(step - c.window["step"], 1)
        wait = (c.data_wait_ms - c.window["wait_ms"]) / steps
        c.window.update(step=step, wait_ms=c.data_wait_ms)
        w = self._close_window(step)
        mix = ""
        if self.domain_names:
            mix = f" mix:{mix_text(self.domain_names, w['read_domains'])}" if not selecting else (
                f" read_mix:{mix_text(self.domain_names, w['read_domains'])} "
                f"kept_mix:{mix_text(self.domain_names, w['trained_domains'])}")
        if self.order is not None:
            o = self.order.close_window(step)
            if o is not None:
                mix += f" order_band:[{o['band_lo']:.2f},{o['band_hi']:.2f}] order_score_mean:{o['score_mean']:.4f}"
        if not selecting:
            return f"data step:{step} progress:{progress:.4f} data_wait_ms:{wait:.3f}{mix}"
        nan = float("nan")
        target = target if target is not None else nan
        waits = f" wait_mean:{w.get('wait_mean', nan):.2f} wait_max:{w.get('wait_max', nan):.0f}" if carry else ""
        return (f"curriculum step:{step} progress:{progress:.4f} target:{target:.4f} "
                f"kept_score_mean:{w.get('kept_mean', nan):.4f} kept_score_min:{w.get('kept_min', nan):.4f} "
                f"kept_score_max:{w.get('kept_max', nan):.4f} pool_score_mean:{w.get('pool_mean', nan):.4f}{waits} "
                f"data_wait_ms:{wait:.3f}{mix}")

    # ------------------------------------------------------------ the run's summary
    def summary(self, steps: int, *, order: str, align: str, pool: str | None, carry: bool, waiting: int,
                pool_size: int, batch_seqs: int, seq_len: int, total_tokens: int,
                dataset_names: tuple[str, ...] | None) -> dict:
        """Totals for the run's JSON summary (reads any statistics not yet logged). Every
        sequence read was trained on, or discarded (`fresh`, or `carry`'s waiting set at a
        shape change), or is still waiting (`carry`)."""
        self._close_window(steps)
        c = self.c
        discarded = c.sequences_read - c.sequences_trained - waiting
        out = dict(data_order=order, pool=pool, micro_batches=c.micro_batches, pool_size=pool_size, batch_seqs=batch_seqs,
                   sequences_read=c.sequences_read, sequences_trained=c.sequences_trained,
                   sequences_discarded=discarded, sequences_waiting=waiting,
                   tokens_read=c.tokens_read, tokens_trained=c.tokens_trained,
                   tokens_discarded=(c.tokens_dropped if carry else c.tokens_read - c.tokens_trained),
                   stream_tokens=total_tokens, stream_wraps=c.stream_wraps, stream_passes_begun=c.stream_wraps + 1,
                   passes_read=round(c.tokens_consumed / max(total_tokens, 1), 6),
                   data_wait_ms_total=round(c.data_wait_ms, 3),
                   data_wait_ms_per_step=round(c.data_wait_ms / max(steps, 1), 4),
                   reader_cpu_ms_per_step=round(c.reader_cpu_ms / max(steps, 1), 4),
                   first_rows=c.read_positions[:8], row_tokens=seq_len + 1)
        if align != "none":  # read + skipped: the stream's tokens this rank's rows stood for
            out |= dict(data_align=align, tokens_skipped=c.tokens_skipped)
        if self.stats is not None and c.sequences_pooled:
            t = c.score_totals
            out |= dict(kept_score_mean=t["kept_sum"] / c.sequences_trained, kept_score_min=t["kept_min"],
                        kept_score_max=t["kept_max"], pool_score_mean=t["pool_sum"] / c.sequences_pooled)
            if carry:
                out |= dict(wait_mean=t["wait_sum"] / c.sequences_trained, wait_max=t["wait_max"])
        if self.domain_names:
            out |= dict(domain_names=list(self.domain_names), read_domain_counts=list(c.read_domains),
                        trained_domain_counts=list(c.trained_domains), mix_windows=list(c.mix_windows))
        if self.order is not None:
            self.order.close_window(steps)
            o = self.order
            out["order"] = dict(draws=o.draws, passes_begun=o.passes + 1, max_reads_in_a_pass=o.max_reads_in_a_pass,
                                rows_read_this_pass=int((o.reads > 0).sum()), windows=list(o.windows))
        if dataset_names is not None:
            out |= dict(dataset_passes_begun={n: c.dataset_wraps.get(n, 0) + 1 for n in dataset_names},
                        datasets_dropped=list(c.datasets_dropped))
        return out

    @staticmethod
    def closing_line(data: dict) -> str:
        left = (f", {data['sequences_waiting']:,} still waiting" if data["sequences_waiting"] else
                f", {data['sequences_discarded']:,} discarded ({data['tokens_discarded']:,} tokens)"
                if data["sequences_discarded"] else "")
        skipped = f", {data['tokens_skipped']:,} tokens skipped by the alignment" if "tokens_skipped" in data else ""
        return (f"data: wait {data['data_wait_ms_per_step']:.3f}ms/step; rank 0 read {data['sequences_read']:,} sequences, "
                f"trained on {data['sequences_trained']:,}{left}{skipped}; {data['passes_read']:.3f} passes over the "
                f"training shards")

    # ------------------------------------------------------------ saved state
    def state_dict(self) -> dict:
        return dict(counts=dataclasses.asdict(self.c), pending=list(self.pending),
                    events=[dataclasses.asdict(e) for e in self.events],
                    order=None if self.order is None else self.order.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.c = Counts(**state["counts"])
        self.pending = list(state["pending"])
        self.events = [DataEvent(**e) for e in state["events"]]
        if state["order"] is not None:
            self.order.load_state_dict(state["order"])


@dataclass
class OrderTally:
    """DATA_ORDER=curriculum: what the order drew (readers/index_order.py's `Draw`s), per log
    window and per pass: the band, the mean score, and each row's reads in the current pass
    (every rank's rows: every rank makes the same draw)."""
    rows: int
    window: dict = field(default_factory=lambda: dict(draws=0, rows=0, score_sum=0.0, lo=1.0, hi=0.0))
    windows: list = field(default_factory=list)
    reads: np.ndarray | None = None
    passes: int = 0
    max_reads_in_a_pass: int = 0
    draws: int = 0
    seq_len: int = 0

    def __post_init__(self):
        if self.reads is None:
            self.reads = np.zeros(self.rows, dtype=np.uint16)

    def add(self, draw) -> None:  # a readers/index_order.py Draw
        if draw.seq_len != self.seq_len:  # the first draw, or a phase's new length: other rows
            self.seq_len, self.rows, self.reads = draw.seq_len, draw.rows_in_index, np.zeros(draw.rows_in_index, np.uint16)
        if draw.passes != self.passes:
            self.reads[:] = 0
            self.passes = draw.passes
        np.add.at(self.reads, draw.rows, 1)
        self.max_reads_in_a_pass = max(self.max_reads_in_a_pass, int(self.reads[draw.rows].max()))
        w = self.window
        w.update(draws=w["draws"] + 1, rows=w["rows"] + len(draw.rows), score_sum=w["score_sum"] + draw.score_sum,
                 lo=min(w["lo"], draw.band[0]), hi=max(w["hi"], draw.band[1]))
        self.draws += 1

    def close_window(self, step: int) -> dict | None:
        w = self.window
        if not w["draws"]:
            return None
        out = dict(step=step, band_lo=round(w["lo"], 4), band_hi=round(w["hi"], 4),
                   score_mean=w["score_sum"] / w["rows"])
        self.windows.append(out)
        self.window = dict(draws=0, rows=0, score_sum=0.0, lo=1.0, hi=0.0)
        return out

    def state_dict(self) -> dict:
        return dict(rows=self.rows, window=dict(self.window), windows=list(self.windows), reads=self.reads.copy(),
                    passes=self.passes, max_reads_in_a_pass=self.max_reads_in_a_pass, draws=self.draws,
                    seq_len=self.seq_len)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v.copy() if isinstance(v, np.ndarray) else v)
