"""curriculum/packed_source.py: DATA_LAYOUT=packed as the trainer meets it (open_data_path): one
[1, N] stream a micro-batch with its cu_seqlens, the same batches after a saved state, the
curriculum's pieces, the summary's numbers, and a shard changed under the run ending it."""
from __future__ import annotations

import glob

import numpy as np
import pytest
import torch

from curriculum import CurriculumConfig, DataError, DataPlan, Shape, open_data_path
from curriculum.loader import DataPath, Position
from curriculum.shards import BOS_ID, open_shard, write_shard

T = 64


def files(dataset) -> list[str]:
    return sorted(glob.glob(dataset["folders"]["embedded_docs_sp1024"] + "/*train_*.bin"))[:2]


def source(shards, curriculum: CurriculumConfig = CurriculumConfig(), rank: int = 0, world: int = 1):
    plan = DataPlan.of_files(shards, 1024, layout="packed", curriculum=curriculum)
    return open_data_path(plan, Shape(T, 8 * T * world, world), torch.device("cpu"), rank)


def test_a_micro_batch_is_one_stream_of_true_next_tokens_cut_at_its_documents(dataset):
    src = source(files(dataset))
    assert isinstance(src, DataPath)
    stream = np.asarray(open_shard(files(dataset)[0]))
    first_bos = int(np.flatnonzero(stream == BOS_ID)[0])
    x, y, cu = src.next_batch(Position())
    n = 8 * T
    assert x.shape == y.shape == (1, n) and x.dtype == torch.int64
    assert np.array_equal(x[0].numpy(), stream[first_bos:first_bos + n])
    assert np.array_equal(y[0].numpy(), stream[first_bos + 1:first_bos + n + 1])
    bounds = cu.numpy()
    used = bounds[:np.searchsorted(bounds, n) + 1]
    assert used[0] == 0 and used[-1] == n and (np.diff(used) <= T).all() and len(bounds) % 64 == 0
    for start in np.flatnonzero(x[0].numpy() == BOS_ID):  # every document begins a piece
        assert start in used
    assert src.drain_log(0)[0].startswith("data: DATA_LAYOUT=packed: 512 tokens a micro-batch")
    src.close()


@pytest.mark.parametrize("curriculum", [CurriculumConfig(), CurriculumConfig(enabled=True, pool="fresh")],
                         ids=["off", "curriculum"])
def test_a_saved_state_gives_the_same_batches_after_it(dataset, curriculum):
    first = source(files(dataset), curriculum)
    for step in range(3):
        first.next_batch(Position(progress=step / 10, step=step))
    saved = first.state_dict()
    ahead = [first.next_batch(Position(progress=(3 + k) / 10, step=3 + k)) for k in range(3)]
    second = source(files(dataset), curriculum)
    second.load_state_dict(saved)
    for batch, again in zip(ahead, [second.next_batch(Position(progress=(3 + k) / 10, step=3 + k)) for k in range(3)]):
        assert all(torch.equal(a, b) for a, b in zip(batch, again))
    data = first.summary(Position(step=6))["data"]
    assert data["data_wait_ms_per_step"] >= 0 and data["reader_cpu_ms_per_step"] > 0
    first.close()
    second.close()


def test_the_ranks_read_their_own_spans(dataset):
    ranks = [source(files(dataset), rank=r, world=2) for r in range(2)]
    x0, x1 = (s.next_batch(Position())[0][0].numpy() for s in ranks)
    stream = np.asarray(open_shard(files(dataset)[0]))
    first_bos = int(np.flatnonzero(stream == BOS_ID)[0])
    assert np.array_equal(x0, stream[first_bos:first_bos + 8 * T])
    assert np.array_equal(x1, stream[first_bos + 8 * T + 1:first_bos + 16 * T + 1])
    for s in ranks:
        s.close()


def test_a_shard_changed_during_the_run_ends_it_at_the_summary(dataset, tmp_path):
    copy = tmp_path / "d_train_000000.bin"
    tokens = open_shard(files(dataset)[0]).copy()
    write_shard(copy, tokens)
    src = source([copy])
    src.next_batch(Position())
    tokens[len(tokens) // 2] ^= 1
    write_shard(copy, tokens)
    with pytest.raises(DataError, match="d_train_000000.bin: the training shard's content changed during the run"):
        src.summary(Position(step=1))
    src.close()
