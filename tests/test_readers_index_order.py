"""DATA_ORDER=curriculum: whole-run orders drawn from the difficulty index."""
from __future__ import annotations

import glob
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculum import CurriculumConfig, Position, write_shard
from curriculum.index import DifficultyIndex, add_scores
from curriculum.index_build import build_index
from curriculum.config import PACINGS, OrderConfig
from curriculum.readers.index_order import pacing_band
from curriculum.shards import open_shard
from curriculum.shards import DataError
from sources import batch_source

# its module fixtures are real runs: one pytest worker builds them once (make test runs -n auto --dist loadgroup)
pytestmark = pytest.mark.xdist_group("index_order")

T = 32
SEQS = 4


@pytest.fixture(scope="module")
def indexed(dataset, tmp_path_factory):
    """The docs domain's first training shard, cut at 32 tokens, with an index of three signals."""
    folder = next(f for name, f in dataset["folders"].items() if "_docs_" in name)
    files = sorted(Path(p) for p in glob.glob(str(Path(folder) / "*train_*.bin")))[:1]
    out = tmp_path_factory.mktemp("index") / "docs.cidx"
    build_index(files, seq_len=T, align="none", doc_max=0, vocab_size=1024, tokenizer=dataset["tokenizer"],
                signals=["compression_ratio", "random", "unigram_entropy"], out=out, progress=False)
    return files, out, dataset["tokenizer"]


def small_indexed(dataset, tmp_path, tokens: int):
    """A shard of `tokens` docs tokens (a few hundred rows: passes end quickly) and its index."""
    folder = next(f for name, f in dataset["folders"].items() if "_docs_" in name)
    text = np.asarray(open_shard(sorted(glob.glob(str(Path(folder) / "*train_*.bin")))[0]))[:tokens]
    shard = tmp_path / "small_train_000000.bin"
    write_shard(shard, text)
    out = tmp_path / "small.cidx"
    build_index([shard], seq_len=T, align="none", doc_max=0, vocab_size=1024, tokenizer=dataset["tokenizer"],
                signals=["compression_ratio", "random"], out=out, progress=False)
    return [shard], out


def loader(files, index, *, score="compression_ratio", pacing="warmup", rank=0, world=1, seed=5, config=CurriculumConfig(),
           tokenizer=None, **order):
    return batch_source(files, seq_len=T, batch_seqs=SEQS, rank=rank, world_size=world, vocab_size=1024,
                       device=torch.device("cpu"), config=config, order="curriculum", seed=seed,
                       index_order=OrderConfig(score=score, pacing=pacing, index=str(index), **order), tokenizer=tokenizer)


def row_scores(index, signal: str, positions) -> np.ndarray:
    """The index's scores of the rows at these stream positions."""
    columns = DifficultyIndex.open(index).columns
    start = np.asarray(columns["start"])
    return np.asarray(columns[signal])[np.searchsorted(start, np.asarray(positions))]


def test_pacing_bands():
    assert pacing_band("warmup", 0.0, 0.2, 0.2, 0.5) == (0.0, 0.2)
    assert pacing_band("warmup", 0.1, 0.2, 0.2, 0.5) == pytest.approx((0.0, 0.6))
    assert pacing_band("warmup", 0.5, 0.2, 0.2, 0.5) == (0.0, 1.0)
    assert pacing_band("linear", 0.5, 0.2, 0.2, 0.5) == pytest.approx((0.0, 0.6))
    assert pacing_band("reverse", 0.0, 0.2, 0.2, 0.5) == pytest.approx((0.8, 1.0))
    assert pacing_band("reverse", 1.0, 0.2, 0.2, 0.5) == pytest.approx((0.0, 1.0))
    assert pacing_band("v", 0.0, 0.2, 0.2, 0.5) == (0.0, 0.5)          # easiest at the start
    assert pacing_band("v", 0.45, 0.2, 0.2, 0.5) == (0.5, 1.0)         # hardest at the V's peak
    assert pacing_band("v", 1.0, 0.2, 0.2, 0.5) == (0.0, 0.5)
    for pacing in PACINGS:
        for p in np.linspace(0, 1, 11):
            lo, hi = pacing_band(pacing, p, 0.1, 0.3, 0.4)
            assert 0.0 <= lo < hi <= 1.0


def test_the_warmup_draws_the_easiest_rows_first_then_every_row(indexed):
    files, index, _ = indexed
    scores = np.asarray(DifficultyIndex.open(index).columns["compression_ratio"])
    batches = loader(files, index)
    for k in range(64):
        batches.next_batch(Position(k / 64, step=k))
    taken = [row_scores(index, "compression_ratio", p) for p in batches.statistics.c.read_positions]
    batches.close()
    cut = np.quantile(scores, 0.2 + 1e-6)
    assert np.concatenate(taken[:5]).max() <= cut  # drawn at progress 0 (the feed's lag): the easiest fifth only
    assert np.concatenate(taken[-20:]).max() > np.quantile(scores, 0.9)  # after the warmup: every difficulty


def test_every_row_once_per_pass_and_ranks_disjoint(dataset, tmp_path):
    files, index = small_indexed(dataset, tmp_path, 40 * T + 1)  # 40 rows
    per_rank = []
    for rank in range(2):
        b = loader(files, index, rank=rank, world=2)
        seen = []
        for k in range(15):  # 15 x 2 ranks x 4 rows = 120 rows: three passes of 40
            b.next_batch(Position(k / 15, step=k))
            seen.append(b.statistics.c.read_positions[-1])
        s = b.summary(Position(step=15))["data"]["order"]
        assert s["max_reads_in_a_pass"] == 1 and s["passes_begun"] == 3
        b.close()
        per_rank.append(np.asarray(seen))
    both = np.concatenate([per_rank[0], per_rank[1]], axis=1)  # [micro-batch, 8 rows]
    for p in range(3):  # each pass: 5 micro-batches of 8 rows, all 40 rows once
        assert len(np.unique(both[5 * p:5 * p + 5])) == 40
    assert not set(per_rank[0].ravel()[:20]) & set(per_rank[1].ravel()[:20])


def test_the_same_seed_gives_the_same_batches_whatever_the_read_aheads_timing(indexed):
    files, index, _ = indexed
    runs = []
    for pause in (0.0, 0.004):
        b = loader(files, index)
        out = []
        for k in range(40):
            if pause:
                time.sleep(pause)  # a slow step: the thread is as far ahead as it can get
            x, _ = b.next_batch(Position(k / 40, step=k))
            out.append(x.clone())
        b.close()
        runs.append(torch.stack(out))
    assert torch.equal(runs[0], runs[1])
    other = loader(files, index, seed=6)
    assert not torch.equal(other.next_batch(Position())[0], runs[0][0])
    other.close()


def test_a_restored_loader_goes_on_with_the_same_batches(indexed):
    files, index, _ = indexed
    a = loader(files, index)
    for k in range(12):
        a.next_batch(Position(k / 30, step=k))
    state = a.state_dict()
    rest = [a.next_batch(Position(k / 30, step=k))[0] for k in range(12, 30)]
    tail = a.summary(Position(step=30))["data"]["order"]
    a.close()
    b = loader(files, index)
    b.load_state_dict(state)
    again = [b.next_batch(Position(k / 30, step=k))[0] for k in range(12, 30)]
    assert all(torch.equal(x, y) for x, y in zip(rest, again))
    assert b.summary(Position(step=30))["data"]["order"] == tail
    b.close()


def test_the_random_control_uses_the_same_machinery_with_no_order(indexed):
    files, index, _ = indexed
    scores = np.asarray(DifficultyIndex.open(index).columns["compression_ratio"])
    b = loader(files, index, score="random")
    for k in range(10):
        b.next_batch(Position(0.0, step=k))
    picked = row_scores(index, "compression_ratio", np.concatenate(b.statistics.c.read_positions))
    b.close()
    # a random fifth of the rows: their compression ratios span the whole range
    assert picked.max() > np.quantile(scores, 0.9) and picked.min() < np.quantile(scores, 0.1)


def test_rows_without_a_score_are_never_drawn(dataset, tmp_path):
    files, index = small_indexed(dataset, tmp_path, 40 * T + 1)
    rows = DifficultyIndex.open(index).rows
    scores = np.arange(rows, dtype=np.float32)
    scores[::4] = np.nan  # a held-out slice
    add_scores(index, "proxy_loss", scores, dict(signal="proxy_loss"))
    b = loader(files, index, score="proxy_loss")
    for k in range(10):  # 40 rows = 3 passes of the 30 scored
        b.next_batch(Position(k / 10, step=k))
    positions = np.concatenate(b.statistics.c.read_positions)
    start = np.asarray(DifficultyIndex.open(index).columns["start"])
    assert not set(positions.tolist()) & set(start[::4].tolist())
    assert b.summary(Position(step=10))["data"]["order"]["unscored_rows"] == 10
    b.close()


def test_each_log_window_says_what_it_drew_from(indexed):
    files, index, _ = indexed
    b = loader(files, index, config=CurriculumConfig(log_every=10))
    lines = []
    for k in range(40):
        b.next_batch(Position(k / 40, step=k))
        lines += b.drain_log(k + 1)
    order_lines = [l for l in lines if "order_band:" in l]
    assert len(order_lines) == 4
    # draws 0-9 read the progress of micro-batches up to 9 - 5 (the feed's lag): 4 / 40 = 0.1, half the
    # warmup, so the band reaches 0.2 + 0.8 / 2 of the rows
    assert "order_band:[0.00,0.60]" in order_lines[0]
    assert "order_band:[0.00,1.00]" in order_lines[-1]
    windows = b.summary(Position(step=40))["data"]["order"]["windows"]
    assert [w["band_hi"] for w in windows] == sorted(w["band_hi"] for w in windows)
    assert windows[0]["score_mean"] < windows[-1]["score_mean"]  # easy first
    b.close()


def test_an_index_for_other_data_stops_the_loader_with_what_differs(indexed, dataset):
    files, index, tokenizer = indexed
    with pytest.raises(DataError, match="TRAIN_SEQ_LEN: built for 32, this run has 64"):
        batch_source(files, seq_len=64, batch_seqs=2, rank=0, world_size=1, vocab_size=1024, device=torch.device("cpu"),
                    config=CurriculumConfig(), order="curriculum", index_order=OrderConfig(index=str(index)))
    with pytest.raises(DataError, match="no readability scores"):
        loader(files, index, score="readability", tokenizer=tokenizer)


def test_the_online_pool_can_rank_by_the_index(indexed):
    files, index, _ = indexed
    scores = DifficultyIndex.open(index).columns
    start, ratio = np.asarray(scores["start"]), np.asarray(scores["compression_ratio"])
    config = CurriculumConfig(enabled=True, score="index:compression_ratio", schedule="constant", target=0.0)
    b = batch_source(files, seq_len=T, batch_seqs=SEQS, rank=0, world_size=1, vocab_size=1024, device=torch.device("cpu"),
                    config=config, order="shuffled", seed=1, index_order=OrderConfig(index=str(index)))
    plain = batch_source(files, seq_len=T, batch_seqs=2 * SEQS, rank=0, world_size=1, vocab_size=1024,
                        device=torch.device("cpu"), config=CurriculumConfig(), order="shuffled", seed=1)
    for _ in range(3):
        kept, _ = b.next_batch(Position())
        pool, _ = plain.next_batch(Position())  # the same 2x pool, unselected
        pool_scores = ratio[np.searchsorted(start, plain.statistics.c.read_positions[-1])]
        easiest = torch.stack(sorted(pool[np.argsort(pool_scores, kind="stable")[:SEQS]], key=lambda r: r.tolist()))
        assert torch.equal(torch.stack(sorted(kept, key=lambda r: r.tolist())), easiest)
    b.close()
    plain.close()


# ------------------------------------------------------------------------ through the trainer

@pytest.fixture(scope="module")
def mix_index(dataset, tmp_path_factory):
    """The embedded mix at the tiny configuration's 64 tokens, two signals."""
    files = sorted(Path(p) for p in glob.glob(str(Path(dataset["data_path"]) / "*train_*.bin")))
    out = tmp_path_factory.mktemp("mix_index") / "mix.cidx"
    build_index(files, seq_len=64, align="none", doc_max=0, vocab_size=1024, tokenizer=dataset["tokenizer"],
                signals=["compression_ratio", "random"], processes=2, out=out, progress=False)
    return out


@pytest.mark.parametrize("cap", ["0", "600"], ids=["by steps", "by the clock"])
def test_a_curriculum_order_run_trains_on_two_ranks_each_row_once(dataset, tmp_path, mix_index, cap):
    """With a wallclock cap the progress (so the band drawn from, and the learning rate, here all
    warmdown) must be every rank's same value, not each rank's own clock."""
    from tests.conftest import run_trainer, summary, trainer_env
    env = trainer_env(dataset, tmp_path, ITERATIONS="12", GRAD_ACCUM_STEPS="1", DATA_ORDER="curriculum",
                      ORDER_INDEX=str(mix_index), ORDER_PACING="linear", CURRICULUM_LOG_EVERY="4",
                      MAX_WALLCLOCK_SECONDS=cap, WARMDOWN_FRAC="1.0")
    out = run_trainer(env, nproc=2)
    assert out.returncode == 0, out.stderr[-3000:]
    s = summary(env)
    assert s["weights_agree_across_ranks"] is True
    order = s["data"]["order"]
    assert order["max_reads_in_a_pass"] == 1 and order["draws"] == 12
    assert order["config"] == dict(score="compression_ratio", pacing="linear", start=0.2)
    assert order["index"] == str(mix_index) and order["signal"]["zstd_level"] == 3
    starts = [{p for micro in rank for p in micro} for rank in s["data"]["rank_first_rows"]]
    assert len(starts[0]) == len(starts[1]) == 8 * 16 and not starts[0] & starts[1]  # the summary keeps 8 micro-batches
    log = (Path(env["LOG_DIR"]) / "run.txt").read_text()
    data_lines = [line for line in log.splitlines() if line.startswith("data step:")]  # the log holds the source too
    assert sum("order_band:" in line for line in data_lines) == 3
    assert "data: DATA_ORDER=curriculum compression_ratio" in log


def test_a_run_whose_index_does_not_match_stops_before_any_work(dataset, tmp_path, mix_index):
    from tests.conftest import run_trainer, trainer_env
    env = trainer_env(dataset, tmp_path, DATA_ORDER="curriculum", ORDER_INDEX=str(mix_index), TRAIN_SEQ_LEN="32",
                      TRAIN_BATCH_TOKENS="1024", ORDER_SCORE="readability")
    out = run_trainer(env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "TRAIN_SEQ_LEN: built for 64, this run has 32" in out.stderr and "no readability scores" in out.stderr
    assert "model:" not in out.stdout


@pytest.mark.parametrize("pacing, progress, lo, hi", [
    ("warmup", 0.0, 0.0, 0.2), ("linear", 0.5, 0.0, 0.6), ("reverse", 0.0, 0.8, 1.0), ("v", 0.45, 0.5, 1.0)])
def test_each_pacing_draws_only_from_its_band(indexed, pacing, progress, lo, hi):
    files, index, _ = indexed
    scores = np.sort(np.asarray(DifficultyIndex.open(index).columns["compression_ratio"]))
    b = loader(files, index, pacing=pacing)
    for k in range(12):
        b.next_batch(Position(progress, step=k))
    drawn = row_scores(index, "compression_ratio", np.concatenate(b.statistics.c.read_positions[6:]))
    b.close()
    # the band's percentiles as scores (a bucket is 1% of the rows: a tie may sit on its edge)
    assert drawn.min() >= scores[int(lo * (len(scores) - 1))] and drawn.max() <= scores[int(hi * (len(scores) - 1))]
