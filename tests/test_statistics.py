"""curriculum/statistics.py: what the data path counts (rows, tokens, domains, waits, passes,
events), its log windows and the run's summary, a saved state that goes on where it stood, and
DATA_ORDER=curriculum's tally of its draws."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from curriculum.readers.base import DataEvent
from curriculum.statistics import DataStatistics, OrderTally

NAMES = ("code", "docs")


def take(stats: DataStatistics, read: int, trained: int, domains, events=(), wait_ms=1.0, consumed=0):
    stats.taken(read, trained, 16, np.arange(read), np.asarray(domains), consumed, 0, list(events), wait_ms)
    stats.trained_unselected(np.asarray(domains))


def summary(stats: DataStatistics, steps: int) -> dict:
    return stats.summary(steps, order="sequential", align="none", pool=None, carry=False, waiting=0, pool_size=4,
                         batch_seqs=4, seq_len=16, total_tokens=1000, dataset_names=None)


def test_counts_add_up_and_each_log_window_holds_only_its_own_rows():
    stats = DataStatistics(NAMES, None)
    take(stats, 4, 4, [1, 3], consumed=64)
    take(stats, 4, 4, [2, 2], events=[DataEvent("wrap", None, passes=1)], consumed=128)
    line = stats.log_line(2, 0.5, selecting=False, carry=False, target=None)
    assert line.startswith("data step:2 progress:0.5000 data_wait_ms:1.000 mix:")
    take(stats, 4, 4, [4, 0], wait_ms=3.0, consumed=192)
    second = stats.log_line(3, 0.75, selecting=False, carry=False, target=None)
    assert "data_wait_ms:3.000" in second  # the window's own wait, not the run's mean
    assert [w["read"] for w in stats.c.mix_windows] == [[3, 5], [4, 0]]
    assert stats.event_lines(3) == ["data: wrap step:3 pass:1 the training stream started over from its first "
                                    "shard; from here on every token has been read before"]
    assert stats.event_lines(4) == []
    s = summary(stats, 3)
    assert (s["sequences_read"], s["sequences_trained"], s["sequences_discarded"], s["tokens_read"]) == (12, 12, 0, 192)
    assert s["read_domain_counts"] == [7, 5] and s["trained_domain_counts"] == [7, 5]
    assert s["stream_wraps"] == 1 and s["stream_passes_begun"] == 2 and s["passes_read"] == 0.192
    assert s["first_rows"] == [[0, 1, 2, 3]] * 3 and s["data_wait_ms_per_step"] == round(5 / 3, 4)
    assert DataStatistics.closing_line(s).startswith("data: wait 1.667ms/step; rank 0 read 12 sequences, trained on 12;")


def test_a_saved_state_goes_on_with_the_same_totals_and_pending_events():
    stats = DataStatistics(NAMES, None)
    take(stats, 4, 4, [1, 3], events=[DataEvent("wrap", "docs", passes=1)])
    saved = stats.state_dict()
    take(stats, 4, 4, [0, 4])
    again = DataStatistics(NAMES, None)
    again.load_state_dict(saved)
    take(again, 4, 4, [0, 4])
    assert summary(again, 2) == summary(stats, 2)
    assert again.event_lines(2) == ["data: wrap dataset:docs pass:1 step:2"]


def draw(rows, band=(0.2, 0.4), passes=0, seq_len=16, scores=1.0):
    return SimpleNamespace(seq_len=seq_len, rows_in_index=10, passes=passes, rows=np.asarray(rows),
                           score_sum=scores * len(rows), band=band)


def test_the_order_tally_counts_reads_per_pass_and_each_window_s_band():
    tally = OrderTally(rows=10)
    tally.add(draw([1, 2, 3]))
    tally.add(draw([3, 4], band=(0.3, 0.6), scores=4.0))
    w = tally.close_window(5)
    assert w == dict(step=5, band_lo=0.2, band_hi=0.6, score_mean=(3 + 8) / 5) and tally.close_window(6) is None
    assert tally.max_reads_in_a_pass == 2 and int(tally.reads.sum()) == 5
    saved = tally.state_dict()
    tally.add(draw([3], passes=1))  # a new pass: every row unread again
    assert int(tally.reads.sum()) == 1 and tally.passes == 1
    back = OrderTally(rows=10)
    back.load_state_dict(saved)
    assert back.draws == 2 and int(back.reads[3]) == 2 and back.windows == [w]
    back.add(draw([0], seq_len=32))  # a phase's new length: the index's other rows
    assert back.seq_len == 32 and int(back.reads.sum()) == 1
