"""curriculum/index.py: the difficulty index's rows, its file, its fingerprint and its lookup (the build and
its command: tests/test_index_build.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curriculum.index import (MAGIC, DifficultyIndex, IndexMismatch, RowLayout, fingerprint,
                              index_path, open_checked)
from curriculum.config import CurriculumConfig, OrderConfig
from curriculum.plan import DataPlan, Shape
from curriculum.readers.aligned import AlignedRows
from curriculum.readers.shuffled import ShuffledRows
from curriculum.shards import open_shard, write_shard
from sources import build_test_index as _build

ROOT = Path(__file__).resolve().parents[1]


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


def test_an_index_is_refused_once_a_shard_changes_in_its_middle_at_its_size(docs_files, tmp_path, dataset):
    copy = tmp_path / "x_train_000000.bin"
    tokens = open_shard(docs_files[0]).copy()
    write_shard(copy, tokens)
    path = _build([copy], tmp_path, dataset, signals=("unigram_entropy",))["path"]
    open_checked([copy], 64, "none", 0, 1024, dataset["tokenizer"], "unigram_entropy", str(path))
    tokens[len(tokens) // 2] = (tokens[len(tokens) // 2] + 1) % 1024
    write_shard(copy, tokens)
    with pytest.raises(IndexMismatch, match="the training shards"):
        open_checked([copy], 64, "none", 0, 1024, dataset["tokenizer"], "unigram_entropy", str(path))


def _edit_header(raw: bytes, edit) -> bytes:
    """The index with its JSON header changed by `edit(header)`, the columns' bytes after it."""
    size = int.from_bytes(raw[len(MAGIC):len(MAGIC) + 8], "little")
    header = json.loads(raw[len(MAGIC) + 8:len(MAGIC) + 8 + size])
    edit(header)
    text = json.dumps(header).encode()
    return MAGIC + len(text).to_bytes(8, "little") + text + raw[len(MAGIC) + 8 + size:]


@pytest.mark.parametrize("damage, says", [
    ("garbage", "not a curriculum index"), ("truncated", "truncated"), ("header", "a damaged index header"),
    ("negative offset", "offset -64 is not past the header"), ("offset past the end", "runs past the end"),
    ("negative rows", "rows must be a whole number"), ("columns a list", "columns a table")])
def test_a_damaged_index_is_named_not_a_traceback(docs_files, tmp_path, dataset, damage, says):
    path = _build(docs_files, tmp_path, dataset)["path"]
    raw = path.read_bytes()
    first = lambda h: next(iter(h["columns"].values()))
    path.write_bytes({"garbage": lambda: b"\x00\x01" * 100, "truncated": lambda: raw[:len(raw) // 2],
                      "header": lambda: raw[:40] + b"}{" + raw[42:],
                      "negative offset": lambda: _edit_header(raw, lambda h: first(h).update(offset=-64)),
                      "offset past the end": lambda: _edit_header(raw, lambda h: first(h).update(offset=len(raw))),
                      "negative rows": lambda: _edit_header(raw, lambda h: h.update(rows=-3)),
                      "columns a list": lambda: _edit_header(raw, lambda h: h.update(columns=[1, 2])),
                      }[damage]())
    with pytest.raises(IndexMismatch, match=str(path)) as err:
        DifficultyIndex.open(path)
    assert says in str(err.value)


def test_the_default_path_lies_beside_the_first_shard(docs_files):
    assert index_path(docs_files, 256, "none", 0) == docs_files[0].parent / "curriculum_index_seq256_none.cidx"
    assert index_path(docs_files, 256, "bos", 300).name == "curriculum_index_seq256_bos_doc300.cidx"


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
