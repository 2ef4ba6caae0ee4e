"""curriculum/index_build.py: building the difficulty index, in this process or in workers, a rebuild
that keeps the other signals, and its command: the rates it prints, every bad argument named
before the build, Ctrl-C ending in one line with nothing written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import preloaded

from curriculum.index import DifficultyIndex, add_scores
from curriculum.signals import TEXT_SIGNALS, TOKEN_SIGNALS
from sources import build_test_index as _build

ROOT = Path(__file__).resolve().parents[1]


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


def _index_command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return preloaded.run(dict(os.environ) | (env or {}), ROOT, module="curriculum.index_build", timeout=300, args=args)


def test_the_command_refuses_a_bad_out_or_vocabulary_before_building(docs_files, tmp_path, dataset):
    files = ("--train-files", str(docs_files[0]), "--tokenizer", dataset["tokenizer"], "--seq-len", "64")
    for out, says in ((tmp_path / "missing" / "x.cidx", "does not exist"), (tmp_path, "is a folder")):
        done = _index_command(*files, "--out", str(out))
        assert done.returncode == 2 and f"--out={str(out)!r}" in done.stderr and says in done.stderr, done.stderr
        assert "index:" not in done.stderr  # refused before the build began
    done = _index_command(*files, "--out", str(tmp_path / "x.cidx"), env=dict(VOCAB_SIZE="70000"))
    assert done.returncode == 2 and "--vocab-size=70000 (VOCAB_SIZE): must be in [2, 65536]" in done.stderr
    done = _index_command(*files, "--signals", "random", "--out", str(tmp_path / "x.cidx"), env=dict(VOCAB_SIZE="100"))
    assert done.returncode == 2 and "holds token id" in done.stderr and "--vocab-size=100" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not list(tmp_path.glob("*.cidx")) and not list(tmp_path.glob(".*"))


def test_ctrl_c_during_the_build_ends_in_one_line_and_writes_nothing(docs_files, tmp_path, dataset):
    out = tmp_path / "x.cidx"
    p = subprocess.Popen([sys.executable, "-m", "curriculum.index_build", "--train-files", str(docs_files[0]), "--tokenizer", dataset["tokenizer"], "--seq-len", "16",
                          "--processes", "2", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = p.stderr.readline()  # the first progress line: the workers are scoring
    assert first.startswith("index:"), first
    os.killpg(p.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the whole group, workers included
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "curriculum.index_build: interrupted; no index was written" in err, err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


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


def test_a_bad_trainer_variable_is_named_with_the_other_problems_not_a_traceback(monkeypatch, capsys):
    from curriculum.index_build import main
    monkeypatch.setenv("VOCAB_SIZE", "abc")
    monkeypatch.setenv("TRAIN_SEQ_LEN", "1.5")
    assert main(["--train-files", "/nowhere/*.bin"]) == 2
    err = capsys.readouterr().err
    assert "VOCAB_SIZE='abc': must be a whole number" in err and "TRAIN_SEQ_LEN='1.5'" in err and "/nowhere" in err
