"""curriculum/readers/mixed.py's MixedRows and a BatchSource over a mixture: blending real datasets,
ranks, exhaustion, and the one-dataset mixture that is exactly today's loader."""
from __future__ import annotations

import glob

import numpy as np
import pytest
import torch

from curriculum.loader import Position
from curriculum import CurriculumConfig, DataExhausted, Mixture, open_shard, write_shard
from curriculum.readers import open_reader
from sources import batch_source

T = 32


def domain_files(dataset, name):
    return tuple(sorted(glob.glob(dataset["folders"][f"embedded_{name}_sp1024"] + "/*train_*.bin")))


def mixture(dataset, weights: dict, on_exhaust=None, files=None) -> Mixture:
    names = tuple(weights)
    return Mixture(names, tuple(files[n] if files and n in files else domain_files(dataset, n) for n in names),
                   tuple((on_exhaust or {}).get(n, "wrap") for n in names), tuple(weights.values()))


def mixed_rows(mix: Mixture, seq_len: int, rank: int, world: int, order: str = "sequential", seed: int = 0):
    return open_reader(None, mix, seq_len, rank, world, order, seed)


def test_blended_rows_follow_the_weights_exactly_and_come_from_their_datasets(dataset):
    weights = {"docs": 0.5, "prose": 0.3, "code": 0.2}
    rows = mixed_rows(mixture(dataset, weights), T, 0, 1)
    streams = {n: np.concatenate([np.asarray(open_shard(f)) for f in domain_files(dataset, n)])[:200000]
               for n in weights}
    picks = []
    for _ in range(25):
        block, positions, ids = rows.take(8)
        for row, p, d in zip(block, positions.tolist(), ids.tolist()):
            name = list(weights)[d]
            assert np.array_equal(row, streams[name][p:p + T + 1])  # the row is its dataset's, at its position
        picks += ids.tolist()
    for k in range(1, len(picks) + 1):
        for d, w in enumerate(weights.values()):
            assert abs(picks[:k].count(d) - w * k) < 1.0 + 1e-9


def test_every_rank_blends_the_same_sequence_of_datasets_from_its_own_part(dataset):
    weights = {"docs": 0.25, "prose": 0.5, "code": 0.25}
    ranks = [mixed_rows(mixture(dataset, weights), T, r, 2) for r in (0, 1)]
    alone = mixed_rows(mixture(dataset, weights), T, 0, 1)
    for _ in range(10):
        (rows0, pos0, ids0), (rows1, pos1, ids1) = ranks[0].take(6), ranks[1].take(6)
        assert np.array_equal(ids0, ids1) and np.array_equal(ids0, alone.take(6)[2])
        for d in set(ids0.tolist()):  # per dataset, the ranks' rows are disjoint spans of its stream
            a, b = set(pos0[ids0 == d].tolist()), set(pos1[ids1 == d].tolist())
            assert not any(abs(x - y) < T + 1 for x in a for y in b)


def small_dataset(dataset, tmp_path, name, tokens: int) -> tuple:
    src = np.asarray(open_shard(domain_files(dataset, name)[0]))[:tokens]
    path = tmp_path / f"{name}_train_000000.bin"
    write_shard(path, src)
    return (path,)


def test_a_used_up_dataset_is_dropped_at_the_right_take_and_the_rest_renormalised(dataset, tmp_path):
    weights = {"docs": 0.5, "prose": 0.3, "code": 0.2}
    tiny = small_dataset(dataset, tmp_path, "code", 1000)
    rows = mixed_rows(mixture(dataset, weights, {"code": "drop"}, {"code": tiny}), T, 0, 1)
    # code supplies 2 of every 10 rows (5 in 25); a take of 10 rows needs 2 x 32 + 1 = 65 code tokens,
    # so 1000 tokens last 15 takes (975 tokens) and the 16th finds only 25 left
    for k in range(15):
        _, _, ids = rows.take(10)
        assert (ids == 2).sum() == 2
        assert not rows.new_events(), k
    _, _, ids = rows.take(10)
    events = [str(e) for e in rows.new_events()]
    assert (ids == 2).sum() == 0 and events == ["drop dataset:code (used up) mixture:docs=0.625,prose=0.375,code=0.000"]
    picks = [d for _ in range(20) for d in rows.take(8)[2].tolist()]
    assert abs(picks.count(0) / len(picks) - 0.625) < 0.01


def test_a_wrapping_dataset_counts_its_passes_and_all_dropped_ends_the_data(dataset, tmp_path):
    tiny = small_dataset(dataset, tmp_path, "docs", 500)
    rows = mixed_rows(mixture(dataset, {"docs": 1.0}, files={"docs": tiny}), T, 0, 1)
    events = []
    for _ in range(20):
        rows.take(4)  # 129 tokens per take: a pass is 3 takes and a bit
        events += [str(e) for e in rows.new_events()]
    assert events[0] == "wrap dataset:docs pass:2" and rows.state_dict()["readers"][0]["wraps"] == len(events)
    dropping = mixed_rows(mixture(dataset, {"docs": 1.0}, {"docs": "drop"}, {"docs": tiny}), T, 0, 1)
    for _ in range(3):
        dropping.take(4)
    with pytest.raises(DataExhausted, match="used up"):
        dropping.take(4)


def test_a_one_dataset_mixture_is_exactly_todays_loader(dataset):
    files = sorted(glob.glob(dataset["data_path"] + "/*train_*.bin"))
    mix = Mixture(("mix",), (tuple(files),), ("wrap",), (1.0,))
    cfg = CurriculumConfig(enabled=True)
    kw = dict(seq_len=64, batch_seqs=8, rank=1, world_size=2, vocab_size=1024, device=torch.device("cpu"), config=cfg)
    plain, mixed = batch_source(files, **kw), batch_source(None, mixture=mix, **kw)
    try:
        for k in range(30):
            a, b = plain.next_batch(Position(k / 30)), mixed.next_batch(Position(k / 30))
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    finally:
        plain.close()
        mixed.close()


def test_a_shuffled_mixture_reads_each_dataset_in_its_own_seeded_slot_order(dataset, tmp_path):
    tiny = small_dataset(dataset, tmp_path, "docs", 33 * 10 + 1)  # 10 slots of 33 tokens
    mix = mixture(dataset, {"docs": 0.5, "prose": 0.5}, {"docs": "drop"}, {"docs": tiny})
    rows = mixed_rows(mix, T, 0, 1, order="shuffled", seed=3)
    again = mixed_rows(mix, T, 0, 1, order="shuffled", seed=3)
    docs = []
    for _ in range(5):
        block, positions, ids = rows.take(4)
        assert np.array_equal(positions, again.take(4)[1])
        docs += positions[ids == 0].tolist()
    assert sorted(docs) == [j * T for j in range(10)]  # every slot of docs once, in a shuffled order
    assert docs != sorted(docs)
    rows.take(4)  # docs has no slot left: dropped, prose alone
    assert str(rows.new_events()[-1]).startswith("drop dataset:docs")
