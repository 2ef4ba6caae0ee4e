"""The difficulty index: its rows, its file, its fingerprint and the command that builds it."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest

import preloaded

from curriculum.index import (DifficultyIndex, IndexMismatch, RowLayout, add_scores, fingerprint,
                              index_path, open_checked)
from curriculum.config import CurriculumConfig, OrderConfig
from curriculum.index_build import build_index
from curriculum.plan import DataPlan, Shape
from curriculum.readers.aligned import AlignedRows
from curriculum.readers.shuffled import ShuffledRows
from curriculum.shards import open_shard, write_shard
from curriculum.signals import TEXT_SIGNALS, TOKEN_SIGNALS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def docs_files(dataset):
    folder = next(f for name, f in dataset["folders"].items() if "_docs_" in name)
    return sorted(Path(p) for p in glob.glob(str(Path(folder) / "*train_*.bin")))


def _build(files, tmp_path, dataset, signals=("compression_ratio", "unigram_entropy"), seq_len=64, align="none",
           processes=1, name="index.cidx"):
    return build_index(files, seq_len=seq_len, align=align, doc_max=0, vocab_size=1024, tokenizer=dataset["tokenizer"],
                       signals=list(signals), processes=processes, out=tmp_path / name, progress=False)


def test_the_rows_are_the_shuffled_slots_and_the_aligned_table(docs_files):
    shards = [open_shard(f) for f in docs_files]
    layout = RowLayout.build(shards, docs_files, 64, "none", 0)
    reader = ShuffledRows(docs_files, 64, 0, 1, seed=3)
    rows, positions, _ = reader.take(50)
    # every slot a shuffled pass reads is a row of the layout, with the same tokens
    ids = np.searchsorted(layout.start, positions)
    assert np.array_equal(layout.start[ids], positions)
    assert np.array_equal(layout.read(shards, docs_files, ids), rows)
    assert layout.rows == reader.num_slots
    aligned = RowLayout.build(shards, docs_files, 64, "bos", 0)
    table_reader = AlignedRows(docs_files, 64, 0, 1, "shuffled", 3, 0)
    rows, positions, _ = table_reader.take(20)
    ids = np.searchsorted(aligned.start, positions)
    assert np.array_equal(aligned.read(shards, docs_files, ids), rows)
    assert aligned.rows == table_reader.table.rows


def test_the_file_round_trips_every_column_memory_mapped(docs_files, tmp_path, dataset):
    result = _build(docs_files, tmp_path, dataset)
    index = DifficultyIndex.open(result["path"])
    shards = [open_shard(f) for f in docs_files]
    layout = RowLayout.build(shards, docs_files, 64, "none", 0)
    assert index.rows == layout.rows == result["rows"]
    assert isinstance(index.columns["start"], np.memmap)
    assert np.array_equal(index.columns["start"], layout.start)
    assert index.signals == ["compression_ratio", "unigram_entropy"]
    assert index.parameters("compression_ratio")["zstd_level"] == 3
    assert np.all(np.isfinite(index.columns["compression_ratio"]))
    # small: O(rows), a few bytes per row and signal, not O(tokens)
    assert result["path"].stat().st_size < layout.rows * (8 + 2 * 4) + 4096


def test_a_build_in_the_callers_process_leaves_its_torch_threads_as_they_were(docs_files, tmp_path, dataset):
    """The build scores on every core, and then gives the caller back its own thread count: a
    test that built an index once left its pytest worker on two spinning threads, and the rest of
    that worker's tests ran up to 70 times slower beside the other worker (2-core Xeon)."""
    import torch
    from curriculum import index_build
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads((os.cpu_count() or 1) + 1)  # not what the build sets for itself
        _build(docs_files, tmp_path, dataset)
        assert torch.get_num_threads() == (os.cpu_count() or 1) + 1
        assert not index_build._WORKER  # nor keeps the shards it read
    finally:
        torch.set_num_threads(threads)


def test_several_processes_build_the_same_scores(docs_files, tmp_path, dataset):
    one = DifficultyIndex.open(_build(docs_files, tmp_path, dataset, name="one.cidx")["path"])
    two = DifficultyIndex.open(_build(docs_files, tmp_path, dataset, processes=2, name="two.cidx")["path"])
    for s in one.signals:
        assert np.array_equal(one.columns[s], two.columns[s]), s


def test_a_rebuild_of_some_signals_keeps_the_others_and_add_scores_adds_one(docs_files, tmp_path, dataset):
    path = _build(docs_files, tmp_path, dataset)["path"]
    before = np.array(DifficultyIndex.open(path).columns["compression_ratio"])
    _build(docs_files, tmp_path, dataset, signals=("random",))
    index = DifficultyIndex.open(path)
    assert index.signals == ["compression_ratio", "random", "unigram_entropy"]
    assert np.array_equal(index.columns["compression_ratio"], before)
    add_scores(path, "proxy_loss", np.arange(index.rows, dtype=np.float32), dict(signal="proxy_loss", steps=7))
    index = DifficultyIndex.open(path)
    assert index.parameters("proxy_loss")["steps"] == 7 and index.columns["proxy_loss"][5] == 5
    assert np.array_equal(index.columns["compression_ratio"], before)
    with pytest.raises(ValueError, match="scores for"):
        add_scores(path, "proxy_loss", np.zeros(3, dtype=np.float32), {})


def test_a_run_whose_data_differs_is_told_everything_that_differs(docs_files, tmp_path, dataset):
    path = _build(docs_files, tmp_path, dataset)["path"]
    ok = fingerprint(docs_files, 64, "none", 0, 1024, dataset["tokenizer"])
    open_checked(docs_files, 64, "none", 0, 1024, dataset["tokenizer"], "compression_ratio", str(path))
    other = fingerprint(docs_files[:1], 128, "bos", 0, 1024, None)
    problems = DifficultyIndex.open(path).differences(other)
    assert any("TRAIN_SEQ_LEN: built for 64, this run has 128" in p for p in problems)
    assert any("DATA_ALIGN" in p for p in problems) and any("training shards" in p for p in problems)
    assert not any("tokenizer" in p for p in problems)  # not known: not compared
    fake_tokenizer = tmp_path / "other.model"
    fake_tokenizer.write_bytes(b"not the same tokenizer")
    with pytest.raises(IndexMismatch, match=r"tokenizer .* built for .*; no readability scores \(it holds "
                                            r"compression_ratio, unigram_entropy\)"):
        open_checked(docs_files, 64, "none", 0, 1024, str(fake_tokenizer), "readability", str(path))
    assert ok == DifficultyIndex.open(path).header["fingerprint"]
    # a run's plan names each index problem with the setting that needs the index (curriculum/plan.py)
    on = CurriculumConfig(enabled=True, score="index:proxy_loss")
    plan = DataPlan.of_files(docs_files, 1024, order="curriculum", curriculum=on,
                             index_order=OrderConfig(score="readability", index=str(path)))
    problems = plan.problems(Shape(64, 1024))
    assert len(problems) == 2 and "DATA_ORDER=curriculum" in problems[0] and "tools.proxy_loss" in problems[1]
    spans = DataPlan.of_files(docs_files, 1024, curriculum=CurriculumConfig(enabled=True, score="index:random"))
    assert "sequential" in spans.problems(Shape(64, 1024))[0]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header"])
def test_a_damaged_index_is_named_not_a_traceback(docs_files, tmp_path, dataset, damage):
    path = _build(docs_files, tmp_path, dataset)["path"]
    raw = path.read_bytes()
    path.write_bytes({"garbage": b"\x00\x01" * 100, "truncated": raw[:len(raw) // 2],
                      "header": raw[:40] + b"}{" + raw[42:]}[damage])
    with pytest.raises(IndexMismatch, match=str(path)):
        DifficultyIndex.open(path)


def test_the_default_path_lies_beside_the_first_shard(docs_files):
    assert index_path(docs_files, 256, "none", 0) == docs_files[0].parent / "curriculum_index_seq256_none.cidx"
    assert index_path(docs_files, 256, "bos", 300).name == "curriculum_index_seq256_bos_doc300.cidx"


def test_the_command_builds_every_signal_and_prints_the_rates(docs_files, tmp_path, dataset):
    out = tmp_path / "cli.cidx"
    done = preloaded.run(dict(os.environ), ROOT, module="curriculum.index_build", timeout=300, args=(
        "--train-files", str(docs_files[0]), "--tokenizer", dataset["tokenizer"], "--seq-len", "128", "--processes", "2",
        "--out", str(out)))
    assert done.returncode == 0, done.stderr
    assert DifficultyIndex.open(out).signals == sorted(TOKEN_SIGNALS + TEXT_SIGNALS)
    for s in TOKEN_SIGNALS + TEXT_SIGNALS:
        assert f"index: {s}" in done.stdout and "M tokens/s" in done.stdout
    assert "ETA" in done.stderr and "100.0%" in done.stderr


def test_the_command_reports_every_bad_argument_at_once(tmp_path):
    done = preloaded.run(dict(os.environ), ROOT, module="curriculum.index_build", timeout=60, args=(
        "--train-files", str(tmp_path / "none*.bin"), "--seq-len", "0", "--processes", "0",
        "--signals", "entropy,proxy_loss", "--tokenizer", str(tmp_path / "missing.model")))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    for part in ("--train-files", "--seq-len=0", "--processes=0", "entropy, proxy_loss", "tools.proxy_loss"):
        assert part in done.stderr, part


def test_rows_the_index_does_not_hold_are_an_error_naming_the_position(docs_files, tmp_path, dataset):
    from curriculum.index import ScoreLookup
    path = _build(docs_files, tmp_path, dataset)["path"]
    lookup = ScoreLookup(DifficultyIndex.open(path), "compression_ratio")
    index = DifficultyIndex.open(path)
    assert np.array_equal(lookup(np.asarray(index.columns["start"][[3, 1, 7]])), index.columns["compression_ratio"][[3, 1, 7]])
    with pytest.raises(ValueError, match="stream position 5"):
        lookup(np.asarray([5]))


def test_a_training_set_too_short_for_one_row_has_an_empty_index(tmp_path, dataset):
    shard = tmp_path / "tiny_train_000000.bin"
    write_shard(shard, np.arange(10, dtype=np.uint16))
    result = _build([shard], tmp_path, dataset, seq_len=64)
    assert result["rows"] == 0
    assert DifficultyIndex.open(result["path"]).rows == 0


def test_a_bad_trainer_variable_is_named_with_the_other_problems_not_a_traceback(monkeypatch, capsys):
    from curriculum.index_build import main
    monkeypatch.setenv("VOCAB_SIZE", "abc")
    monkeypatch.setenv("TRAIN_SEQ_LEN", "1.5")
    assert main(["--train-files", "/nowhere/*.bin"]) == 2
    err = capsys.readouterr().err
    assert "VOCAB_SIZE='abc': must be a whole number" in err and "TRAIN_SEQ_LEN='1.5'" in err and "/nowhere" in err
