"""curriculum/plan.py: the data path's settings read once by one function, every rule in one
place, each file opened once, and the one constructor whose first lines say what a run reads."""
from __future__ import annotations

import glob as globmod
import os
import re
from pathlib import Path

import pytest

import curriculum.phases as phases_module
import curriculum.plan as plan_module
from curriculum.environment import EnvReader
from curriculum.loader import Position
from curriculum.plan import DataPlan, Shape, open_data_path, read_data_plan
from curriculum.plugin import read_loader_plan
from curriculum.shards import DataError
from trainer.settings import parse_settings

ROOT = Path(__file__).resolve().parents[1]
SHAPE = Shape(seq_len=64, batch_tokens=1024)  # 16 rows a micro-batch, one rank


def domain_glob(dataset, name: str) -> str:
    return dataset["folders"][f"embedded_{name}_sp1024"] + "/*train_*.bin"


def plan_of(dataset, **environ) -> DataPlan:
    env = {k: str(v) for k, v in environ.items()}
    return read_data_plan(EnvReader(env), train_files=dataset["data_path"] + "/*train_*.bin", vocab_size=1024,
                          tokenizer=dataset["tokenizer"])


def test_the_trainer_and_the_plugin_read_the_same_plan_from_one_environment(dataset):
    env = dict(CURRICULUM="1", CURRICULUM_POOL="carry", CURRICULUM_SCORE="distinct_ratio", DATA_ORDER="curriculum",
               SEED="9", DATA_ALIGN="bos", DOC_MAX_TOKENS="100", ORDER_WIDTH="0.3", ORDER_PACING="v",
               TRAIN_FILES=dataset["data_path"] + "/*train_*.bin", TOKENIZER_PATH=dataset["tokenizer"])
    s, errors = parse_settings(env)
    plugin_plan, _ = read_loader_plan(env, env["TRAIN_FILES"], 1024)
    assert not errors
    fields = ("layout", "order", "align", "doc_max_tokens", "seed", "curriculum", "index_order", "mix", "phases",
              "train_files", "tokenizer", "vocab_size")
    assert {f: getattr(s.data, f) for f in fields} == {f: getattr(plugin_plan, f) for f in fields}
    assert s.data.curriculum.pool == "carry" and s.data.seed == 9 and s.data.index_order.width == 0.3
    assert s.curriculum is s.data.curriculum  # the trainer's own settings are the plan's, not a second reading


@pytest.mark.parametrize("environ, expected", [
    (dict(MIX_DATASETS="a=x,b=y"), "MIX_DATASETS='a=x,b=y': has no effect without MIX set"),
    (dict(ORDER_INDEX="/i.cidx"), "ORDER_INDEX='/i.cidx': has no effect without DATA_ORDER=curriculum or "
                                  "CURRICULUM_SCORE=index:<...> or CURRICULUM_PHASES set"),
    (dict(MIX="natural", MIX_UPDATE_EVERY="4"), "MIX_UPDATE_EVERY='4': has no effect without MIX=adaptive"),
    (dict(DOC_MAX_TOKENS="100"), "DOC_MAX_TOKENS='100': has no effect without DATA_ALIGN=bos"),
    (dict(CURRICULUM="0", CURRICULUM_POOL="carry"), "CURRICULUM_POOL='carry': has no effect without CURRICULUM=1"),
], ids=["a dataset list without MIX", "an index without an index order", "a rate without the mixer",
        "a document cut without alignment", "a pool without the curriculum"])
def test_a_setting_that_would_be_ignored_is_refused_by_the_trainer_and_the_plugin(dataset, environ, expected):
    env = environ | dict(TRAIN_FILES=dataset["data_path"] + "/*train_*.bin", TOKENIZER_PATH=dataset["tokenizer"])
    _, errors = parse_settings(env)
    assert [e for e in errors if expected in e]
    from curriculum.plugin import CurriculumSettingsError
    with pytest.raises(CurriculumSettingsError, match=re.escape(expected)):
        read_loader_plan(env, env["TRAIN_FILES"], 1024)
    # what it needs, given, lets it act
    _, errors = parse_settings(env | dict(MIX="natural", DATA_ORDER="curriculum", DATA_ALIGN="bos",
                                          CURRICULUM="1") | ({"MIX": "adaptive"} if "MIX_UPDATE_EVERY" in env else {}))
    assert not [e for e in errors if "has no effect" in e], errors


def test_a_value_read_twice_is_one_problem_not_two(dataset):
    e = EnvReader(dict(DATA_ORDER="backwards"))
    e.read_all((plan_module.DATA_ORDER,))
    read_data_plan(e, train_files="x", vocab_size=1024, tokenizer=None)
    assert e.errors == ["DATA_ORDER='backwards': must be one of sequential, shuffled, curriculum"]


def test_every_rule_is_reported_at_once_naming_the_setting(dataset):
    plan = plan_of(dataset, DATA_LAYOUT="packed", DATA_ORDER="shuffled", MIX="natural",
                   MIX_DATASETS=f"code={domain_glob(dataset, 'code')},docs={domain_glob(dataset, 'docs')}",
                   CURRICULUM="1", CURRICULUM_OVERSAMPLE="0.5")
    errors = plan.problems(SHAPE)
    assert any(e.startswith("DATA_LAYOUT=packed with DATA_ORDER='shuffled'") for e in errors)
    assert any(e.startswith("DATA_LAYOUT=packed with MIX='natural'") for e in errors)
    assert any(e.startswith("CURRICULUM_OVERSAMPLE=0.5") for e in errors)
    with pytest.raises(DataError, match="invalid data settings") as err:
        open_data_path(plan, SHAPE, "cpu")
    assert all(e in str(err.value) for e in errors)


def test_a_whole_run_order_over_a_blend_is_refused_before_any_index_is_opened(dataset):
    plan = plan_of(dataset, DATA_ORDER="curriculum", MIX="stratified",
                   MIX_DATASETS=f"code={domain_glob(dataset, 'code')},docs={domain_glob(dataset, 'docs')}")
    errors = plan.problems(SHAPE)
    assert errors == ["DATA_ORDER=curriculum reads one training set's index; MIX=stratified blends several datasets "
                      "(use DATA_ORDER=shuffled there)"]
    assert not plan.opened.indexes


def test_train_files_need_not_match_where_a_blend_names_the_datasets(dataset):
    mix = f"code={domain_glob(dataset, 'code')},docs={domain_glob(dataset, 'docs')}"
    blended = read_data_plan(EnvReader(dict(MIX="stratified", MIX_DATASETS=mix)), train_files="/nowhere/*.bin",
                             vocab_size=1024, tokenizer=None)
    assert blended.problems(SHAPE) == []
    alone = read_data_plan(EnvReader({}), train_files="/nowhere/*.bin", vocab_size=1024, tokenizer=None,
                           missing_hint="DATA_PATH='/nowhere'; ")
    assert alone.problems(SHAPE) == ["TRAIN_FILES='/nowhere/*.bin': no shard matches (DATA_PATH='/nowhere'; `make data` "
                                     "builds the embedded default)"]


def counting(monkeypatch, module, name: str) -> list:
    """Every call of module.name, recorded (its first argument), the function still called."""
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)
    return calls


def test_checking_and_building_open_each_file_once(dataset, monkeypatch):
    mix = f"code={domain_glob(dataset, 'code')},docs={domain_glob(dataset, 'docs')}"
    globs = counting(monkeypatch, globmod, "glob")
    counted = counting(monkeypatch, plan_module, "shard_token_count")
    plan = plan_of(dataset, MIX="stratified", MIX_DATASETS=mix, CURRICULUM="1")
    assert plan.problems(SHAPE) == []
    batches = open_data_path(plan, SHAPE, "cpu")
    try:
        x, y = batches.next_batch(Position())
    finally:
        batches.close()
    assert x.shape == (16, 64)
    assert sorted(globs) == sorted([domain_glob(dataset, "code"), domain_glob(dataset, "docs")])  # once each
    assert len(counted) == len(set(counted)) == len(globmod.glob(domain_glob(dataset, "code"))) + len(
        globmod.glob(domain_glob(dataset, "docs")))


def test_a_phases_file_is_read_once_for_its_checks_and_its_build(dataset, monkeypatch):
    reads = counting(monkeypatch, phases_module, "load_phases")
    monkeypatch.chdir(ROOT)  # the phases file names the datasets relative to the repository
    plan = plan_of(dataset, CURRICULUM_PHASES=str(ROOT / "configs/phases/anneal_code_to_prose.toml"))
    assert plan.problems(SHAPE) == []
    batches = open_data_path(plan, SHAPE, "cpu")
    try:
        batches.next_batch(Position())
        lines = batches.drain_log(0)
    finally:
        batches.close()
    assert len(reads) == 1
    assert lines[0] == "data: CURRICULUM_PHASES names the datasets read; TRAIN_FILES is not read"
    assert any(line.startswith("phases: ") for line in lines)


@pytest.mark.parametrize("curriculum, rows_read", [("0", 16), ("1", 32)])
def test_the_budget_line_is_the_data_paths_first_and_counts_the_pool(dataset, curriculum, rows_read):
    plan = plan_of(dataset, CURRICULUM=curriculum)
    batches = open_data_path(plan, SHAPE, "cpu", budget=(100, "of ITERATIONS=100"))
    try:
        first = batches.drain_log(0)[0]
    finally:
        batches.close()
    read, trained = 100 * rows_read * 64, 100 * 1024
    total = sum(os.path.getsize(f) - 1024 for f in globmod.glob(dataset["data_path"] + "/*train_*.bin")) // 2
    assert first.startswith(f"data: budget of ITERATIONS=100: ~100 steps read ~{read:,} tokens, "
                            f"{read / total:.2f} passes over the {total:,} the shards hold; {trained:,} trained on")
    assert first.endswith(f", {read - trained:,} discarded by the curriculum's selection") == (curriculum == "1")


def test_one_micro_batch_larger_than_the_shards_is_refused(dataset, tmp_path):
    from curriculum.shards import open_shard, write_shard
    tokens = open_shard(sorted(globmod.glob(dataset["data_path"] + "/*train_*.bin"))[0])
    write_shard(tmp_path / "small_train_000000.bin", tokens[:2000])
    on = plan_of(dataset, CURRICULUM="1").curriculum
    plan = DataPlan.of_files([tmp_path / "small_train_000000.bin"], 1024, curriculum=on)
    assert plan.problems(Shape(64, 1024)) == ["CURRICULUM_OVERSAMPLE=2 with TRAIN_BATCH_TOKENS=1024: one micro-batch "
                                              "would read 2,049 tokens, more than the 2,000 the training shards hold"]
    assert DataPlan.of_files([tmp_path / "small_train_000000.bin"], 1024).problems(Shape(64, 1024)) == []


def test_the_shape_splits_a_step_as_the_trainer_does():
    assert Shape(64, 8192, world_size=2, grad_accum_steps=4).micro_batch_seqs == 16
    assert Shape(2048, 786_432, 8, 1).micro_batch_seqs == 48
