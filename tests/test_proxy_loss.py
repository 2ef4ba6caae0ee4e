"""tools/proxy_loss.py: the reference model is trained on a held-out slice only, every other row
is scored as a direct forward of the artifact scores it, and the held-out rows stay unscored."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import torch

import preloaded

from curriculum.index import DifficultyIndex, RowLayout
from curriculum.index_build import build_index
from curriculum.domains import read_sidecar, write_sidecar
from curriculum.shards import open_shard, shard_token_count, write_shard
from tests.conftest import ROOT, TINY
from tools.proxy_loss import held_out_rows


def test_the_held_out_slice_is_seeded_sorted_and_distinct():
    a = held_out_rows(1000, 50, seed=3)
    assert np.array_equal(a, held_out_rows(1000, 50, seed=3)) and not np.array_equal(a, held_out_rows(1000, 50, seed=4))
    assert len(set(a.tolist())) == 50 and np.all(np.diff(a) > 0)
    assert len(held_out_rows(10, 50, seed=0)) == 10


def test_every_row_but_the_slice_is_scored_as_the_artifact_scores_it(dataset, tmp_path):
    folder = next(f for name, f in dataset["folders"].items() if "_docs_" in name)
    first = sorted(Path(p) for p in glob.glob(str(Path(folder) / "*train_*.bin")))[0]
    # the first 8,192 rows of the docs shard, with its sidecar cut to match: scoring is the cost
    files = [tmp_path / "docs_train_000000.bin"]
    write_shard(files[0], np.asarray(open_shard(first))[:8192 * 65])
    starts, ids, names, continues = read_sidecar(first, shard_token_count(first))
    keep = starts < 8192 * 65
    write_sidecar(files[0], starts[keep], ids[keep], list(names), continues)
    index = tmp_path / "docs.cidx"
    build_index(files, seq_len=64, align="none", doc_max=0, vocab_size=1024, tokenizer=dataset["tokenizer"],
                signals=["random"], out=index, progress=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURRICULUM", "MIX", "ORDER_"))} | TINY | dict(
        TRAIN_FILES=str(files[0]), TOKENIZER_PATH=dataset["tokenizer"], VOCAB_SIZE="1024",
        DATA_PATH=dataset["data_path"], TRAIN_SEQ_LEN="64", TRAIN_BATCH_TOKENS="2048")
    artifact = tmp_path / "reference.int6.ptz"
    done = preloaded.run(env, ROOT, module="tools.proxy_loss", timeout=600,
                         args=("--steps", "3", "--index", str(index), "--keep-artifact", str(artifact)))
    assert done.returncode == 0, done.stderr[-3000:]
    idx = DifficultyIndex.open(index)
    scores = np.asarray(idx.columns["proxy_loss"])
    params = idx.parameters("proxy_loss")
    held = held_out_rows(idx.rows, 3 * 32, seed=0)
    assert np.isnan(scores[held]).all() and np.isfinite(np.delete(scores, held)).all()
    assert params["held_out_rows"] == 96 and params["validation_split_used"] is False and params["steps"] == 3
    assert set(params["domain_means"]) == {"docs"} and "random" in idx.signals  # the other columns are kept
    # straightforwardly: the artifact loaded by hand, a few rows one at a time in fp32 and eager, the mean of
    # the model's per-token loss; against the batched (compiled, padded, bf16 where native) scores, to bf16's
    # precision
    import train_gpt as tg
    from trainer.settings import parse_settings
    from tools.proxy_loss import REFERENCE
    s, errors = parse_settings(env | REFERENCE | dict(TORCH_COMPILE="0"))
    assert not errors
    model = tg.GPT(s)
    model.load_state_dict(tg.dequantize_state(tg.load_artifact(artifact.read_bytes()), model.state_dict()))
    model.eval()
    layout = RowLayout.build([open_shard(f) for f in files], files, 64, "none", 0)
    rows = [r for r in (0, 7, 123, 400) if r not in set(held.tolist())]
    for r in rows:
        row = torch.from_numpy(layout.read([open_shard(f) for f in files], files, np.asarray([r])).astype(np.int64))
        with torch.no_grad():
            per_token = model(row[:, :-1], row[:, 1:])
        assert per_token.shape == (1, 64)
        assert abs(float(per_token.mean()) - scores[r]) < 0.03, (r, float(per_token.mean()), scores[r])


def test_a_bad_trainer_variable_is_named_with_the_other_problems_not_a_traceback(monkeypatch, capsys):
    from tools.proxy_loss import main
    monkeypatch.setenv("TRAIN_SEQ_LEN", "x")
    monkeypatch.setenv("TRAIN_FILES", "/nowhere/*.bin")
    assert main(["--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "TRAIN_SEQ_LEN='x': must be" in err and "--steps=0" in err and "TRAIN_FILES" in err
