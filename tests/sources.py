"""The tests' way to the data path: the arguments the loader's tests name, made into a plan
(curriculum/plan.py) and opened as a run opens it."""
from __future__ import annotations

import torch

from curriculum.config import CurriculumConfig, MixConfig, OrderConfig
from curriculum.loader import BatchSource
from curriculum.plan import DataPlan, Shape, open_data_path


def batch_source(files, *, seq_len: int, batch_seqs: int, rank: int = 0, world_size: int = 1, vocab_size: int = 1024,
                 device=torch.device("cpu"), config: CurriculumConfig = CurriculumConfig(), order: str = "sequential",
                 seed: int = 0, read_ahead: int = 4, mixture=None, phases: str | None = None, grad_accum_steps: int = 1,
                 warm_up_steps: int = 0, align: str = "none", doc_max_tokens: int = 0,
                 index_order: OrderConfig | None = None, tokenizer: str | None = None,
                 mix: MixConfig | None = None) -> BatchSource:
    """A BatchSource for these shards (or, with `mixture`, these datasets blended, as a phase
    blends them: that one is built without the plan's checks of TRAIN_FILES)."""
    plan = DataPlan.of_files(files or [], vocab_size, tokenizer=tokenizer, order=order, align=align,
                             doc_max_tokens=doc_max_tokens, seed=seed, curriculum=config,
                             index_order=index_order or OrderConfig(), mix=mix or MixConfig(), phases=phases or "")
    shape = Shape(seq_len, batch_seqs * seq_len * world_size * grad_accum_steps, world_size, grad_accum_steps)
    if mixture is not None:
        return BatchSource(plan, shape, device, rank, warm_up_steps=warm_up_steps, read_ahead=read_ahead,
                           mixture=mixture)
    return open_data_path(plan, shape, device, rank, warm_up_steps=warm_up_steps, read_ahead=read_ahead)


def build_test_index(files, tmp_path, dataset, signals=("compression_ratio", "unigram_entropy"), seq_len=64, align="none",
           processes=1, name="index.cidx"):
    """A difficulty index of these shards, built in this process, without a progress line."""
    from curriculum.index_build import build_index
    return build_index(files, seq_len=seq_len, align=align, doc_max=0, vocab_size=1024, tokenizer=dataset["tokenizer"],
                       signals=list(signals), processes=processes, out=tmp_path / name, progress=False)
