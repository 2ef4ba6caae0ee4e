"""curriculum/selector.py: the window a pool keeps on real rows, the statistics it adds on the
device, and the rows the bench's decomposition keeps instead (`keep`)."""
from __future__ import annotations

import glob

import numpy as np
import pytest
import torch

from curriculum.config import CurriculumConfig
from curriculum.readers.sequential import SequentialRows
from curriculum.scores import unigram_entropy
from curriculum.selector import Selector, WindowStats


def pool(dataset, n: int = 16) -> torch.Tensor:
    files = sorted(glob.glob(dataset["data_path"] + "/*train_*.bin"))
    return torch.from_numpy(SequentialRows(files, 64, 0, 1).take(n)[0].astype(np.int64))


def selector(keep: str = "selected", pool_kind: str = "fresh") -> Selector:
    config = CurriculumConfig(enabled=True, pool=pool_kind)
    return Selector(config, 8, files=[], vocab_size=1024, device=torch.device("cpu"),
                    stats=WindowStats(torch.device("cpu"), 0), keep=keep)


def test_the_window_at_a_percentile_is_the_rows_whose_entropy_ranks_are_there(dataset):
    rows = pool(dataset)
    ranks = torch.argsort(torch.argsort(unigram_entropy(rows, 1024)))  # each row's rank, 0 the easiest
    for progress, expected in ((0.0, range(0, 8)), (0.45, range(8, 16))):  # the V: easiest first, hardest at its peak
        kept, pooled = selector().choose(rows, None, 0, progress, 1.0)
        assert pooled == 16 and kept.shape == (8, 65)
        chosen = [int(ranks[i]) for i in range(16) if any(torch.equal(rows[i], k) for k in kept)]
        assert sorted(chosen) == list(expected)


@pytest.mark.parametrize("keep", ["pool_first", "read_first"])
def test_the_bench_s_variants_keep_the_pool_s_first_rows(dataset, keep):
    rows = pool(dataset)
    s = selector(keep)
    kept, pooled = s.choose(rows, torch.arange(16), 0, 0.45, 1.0)
    assert torch.equal(kept, rows[:8]) and pooled == 16 and s.kept_domains.tolist() == list(range(8))
    scored = s.stats.read()[0][1]  # the pool's score sum: the work done, or not, whatever is kept
    assert (scored > 0) == (keep == "pool_first")


def test_an_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="keep='best': must be one of selected, pool_first, read_first"):
        selector("best")


def test_carry_keeps_what_it_did_not_train_on_for_the_next_pool(dataset):
    rows = pool(dataset)
    s = selector(pool_kind="carry")
    s.choose(rows, None, 0, 0.45, 1.0)
    assert s.waiting_rows() == 8 and s.fresh_needed() == 8
    restored = selector(pool_kind="carry")
    restored.load_state_dict(s.state_dict())
    assert torch.equal(restored.pool.waiting.rows, s.pool.waiting.rows)
