"""The `proxy_loss` signal: each training row's mean loss under a small reference model.

    python -m tools.proxy_loss [--steps 120] [--seed 0]     # the run's settings in the environment

The reference model is trained by our own trainer (train_gpt.py, launched as a user would) for a
short fixed number of steps on a **held-out slice of the training rows only**: `steps` x the
batch's rows, chosen at random (seeded) from the index's rows. The validation split is never
trained on or scored for this (the trainer evaluates a small prefix of it at its end, as it
always does; nothing reads that number). The model is the `REFERENCE` shape below, a fifth of
`configs/cpu.env`'s width x depth, so that scoring every row costs about what evaluating the
training set costs. Then every row of the index is scored with the round-tripped artifact and
the column `proxy_loss` is added to the index. The held-out rows get no score (NaN): a
DATA_ORDER=curriculum run never draws them, and its summary counts them (`unscored_rows`).
The held-out rows are written as one shard in which each row's last target is the next row's
first token: one target in seq_len is off its row.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from curriculum.index import DifficultyIndex, RowLayout, add_scores, fingerprint, index_path
from curriculum.shards import DataError
from curriculum.shards import open_shard, write_atomic, write_shard
from tools import launch
from trainer.host import keep_freed_memory
from tools.envfile import ROOT
from curriculum.environment import EnvReader
from trainer.settings import SETTINGS

REFERENCE = dict(NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="2", NUM_KV_HEADS="1", MLP_MULT="2", BIGRAM_VOCAB_SIZE="0",
                 WARMUP_STEPS="2", CURRICULUM="0", DATA_ORDER="sequential", DATA_ALIGN="none",
                 ATTENTION_MASK="causal", CURRICULUM_PHASES="", VAL_SETS="", EVAL_STRIDE="0", CHECKPOINT_EVERY="0",
                 RESUME="", VAL_DOMAINS="0",
                 # its schedule in steps, whatever configs/cpu.env sets: the reference model stays the one it was
                 WARMDOWN_FRAC="0", MUON_MOMENTUM_WARMUP_FRAC="0", MUON_MOMENTUM_WARMUP_STEPS="100", SWA_EVERY_FRAC="0",
                 SWA_EVERY="10")
SCORE_BATCH_ROWS = 256


def held_out_rows(rows: int, count: int, seed: int) -> np.ndarray:
    """The slice the reference model trains on: `count` rows at random, in row order."""
    rng = np.random.Generator(np.random.PCG64([seed, 20261201]))
    return np.sort(rng.choice(rows, size=min(count, rows), replace=False))


def train_reference(env: dict, shard: Path, steps: int, seed: int, log_dir: Path) -> Path:
    """Our trainer on the slice for `steps` steps; the round-tripped artifact's path."""
    run = env | REFERENCE | dict(TRAIN_FILES=str(shard), ITERATIONS=str(steps), MAX_WALLCLOCK_SECONDS="0",
                                 WARMDOWN_ITERS=str(max(steps // 4, 1)), SEED=str(seed), LOG_DIR=str(log_dir),
                                 RUN_ID="proxy_reference",
                                 VAL_MAX_TOKENS=str(max(int(env.get("VAL_MAX_TOKENS") or 0), 0) or 65536))
    done = launch.run_trainer(run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise SystemExit(f"proxy_loss: the reference run failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
    return log_dir / "proxy_reference.int6.ptz", run


@torch.no_grad()
def score_rows(artifact: Path, run_env: dict, layout: RowLayout, shards, files, progress=True) -> tuple[np.ndarray, float]:
    """Every row's mean loss (nats per target) under the artifact, and the rate in tokens/s."""
    sys.path.insert(0, str(ROOT))
    import train_gpt  # the trainer's own model and artifact format
    from trainer.settings import parse_settings
    s, errors = parse_settings(run_env)
    if errors:
        raise SystemExit("proxy_loss: " + "; ".join(errors))
    keep_freed_memory(s.cpu_malloc)  # as the trainer does: without it a CPU pass spends half its time in page faults
    model = train_gpt.GPT(s)
    packed = train_gpt.load_artifact(artifact.read_bytes())
    model.load_state_dict(train_gpt.dequantize_state(packed, model.state_dict()))
    model.eval()
    forward = torch.compile(model, dynamic=False) if s.torch_compile else model
    bf16 = train_gpt.use_bf16(s, torch.device("cpu"))  # the trainer's evaluation precision
    out = np.zeros(layout.rows, dtype=np.float32)
    t0, shown = time.perf_counter(), -1
    for a in range(0, layout.rows, SCORE_BATCH_ROWS):
        ids = np.arange(a, min(a + SCORE_BATCH_ROWS, layout.rows))
        rows = layout.read(shards, files, np.pad(ids, (0, SCORE_BATCH_ROWS - len(ids)), mode="edge"))  # one shape
        rows = torch.from_numpy(rows.astype(np.int64))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forward(rows[:, :-1], rows[:, 1:])
        out[ids] = loss.float().mean(dim=1).numpy()[:len(ids)]
        tenth = 10 * (ids[-1] + 1) // layout.rows
        if progress and tenth != shown:
            shown = tenth
            rate = (ids[-1] + 1) * layout.seq_len / (time.perf_counter() - t0)
            eta = (layout.rows - ids[-1] - 1) * layout.seq_len / rate
            print(f"proxy_loss: scored {(ids[-1] + 1) / layout.rows:6.1%} of {layout.rows:,} rows, "
                  f"{rate / 1e6:.3f} M tokens/s, ETA {eta:.0f} s", file=sys.stderr, flush=True)
    return out, layout.rows * layout.seq_len / (time.perf_counter() - t0)


def per_domain_means(files: list[Path], layout: RowLayout, scores: np.ndarray) -> dict[str, float] | None:
    """The reference model's mean loss over each domain's scored rows (a row's domain: its middle
    token's, from the shards' sidecars): DoReMi's reference losses for MIX_RULE=excess_loss."""
    from curriculum.domains import DomainIndex
    from curriculum.shards import shard_token_count
    domains = DomainIndex.from_shards(files, [shard_token_count(f) for f in files])
    if domains is None:
        return None
    ids = domains.domains_at(layout.start + (layout.seq_len + 1) // 2)
    scored = np.isfinite(scores)
    return {name: float(scores[scored & (ids == d)].mean()) for d, name in enumerate(domains.names)
            if (scored & (ids == d)).any()}


def main(argv: list[str] | None = None) -> int:
    env = dict(os.environ)
    p = argparse.ArgumentParser(prog="python -m tools.proxy_loss", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=120, help="the reference model's training steps")
    p.add_argument("--seed", type=int, default=0, help="the held-out slice's and the reference model's seed")
    p.add_argument("--index", default="", help="the index file (default: beside the first shard)")
    p.add_argument("--keep-artifact", default="", help="also keep the reference model's artifact here")
    a = p.parse_args(argv)
    data_path = env.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    files = sorted(Path(f) for f in glob.glob(env.get("TRAIN_FILES") or os.path.join(data_path, "*train_*.bin")))
    # the trainer's own declarations, read as it reads them: a bad value is a problem, not a traceback
    declared = {st.name: st for st in SETTINGS}
    e = EnvReader(env)
    seq_len, vocab = e.read(declared["TRAIN_SEQ_LEN"]), e.read(declared["VOCAB_SIZE"])
    batch_tokens, doc_max = e.read(declared["TRAIN_BATCH_TOKENS"]), e.read(declared["DOC_MAX_TOKENS"])
    align, tokenizer = e.read(declared["DATA_ALIGN"]), env.get("TOKENIZER_PATH", "")
    batch_rows = batch_tokens // seq_len
    problems = e.errors + ([f"--steps={a.steps}: must be >= 1"] if a.steps < 1 else [])
    if not files:
        problems.append("TRAIN_FILES: no training shard matches")
    if not Path(tokenizer).is_file():
        problems.append(f"TOKENIZER_PATH={tokenizer!r}: no such file")
    if problems:
        print("proxy_loss: " + "; ".join(problems), file=sys.stderr)
        return 2
    path = Path(a.index) if a.index else index_path(files, seq_len, align, doc_max)
    try:
        index = DifficultyIndex.open(path)
        index.check(fingerprint(files, seq_len, align, doc_max, vocab, tokenizer))
    except DataError as e:
        print(f"proxy_loss: {e}", file=sys.stderr)
        return 2
    shards = [open_shard(f) for f in files]
    layout = RowLayout.build(shards, files, seq_len, align, doc_max)
    held = held_out_rows(layout.rows, a.steps * batch_rows, a.seed)
    with tempfile.TemporaryDirectory(prefix="proxy_loss_") as tmp:
        tmp = Path(tmp)
        slice_rows = layout.read(shards, files, held)
        shard = tmp / "held_out_train_000000.bin"
        write_shard(shard, np.concatenate([slice_rows[:, :-1].ravel(), slice_rows[-1, -1:]]))
        t0 = time.perf_counter()
        artifact, run_env = train_reference(env, shard, a.steps, a.seed, tmp)
        train_s = time.perf_counter() - t0
        print(f"proxy_loss: reference model trained on {len(held):,} held-out rows ({len(held) / layout.rows:.2%} of "
              f"the index's), {a.steps} steps in {train_s:.0f} s", file=sys.stderr)
        scores, rate = score_rows(artifact, run_env, layout, shards, files)
        artifact_sha = hashlib.sha256(artifact.read_bytes()).hexdigest()
        if a.keep_artifact:
            write_atomic(a.keep_artifact, artifact.read_bytes())
    scores[held] = np.nan
    domain_means = per_domain_means(files, layout, scores)
    params = dict(signal="proxy_loss", version=1, measure="mean loss (nats) per target under the reference model",
                  reference={k: v for k, v in REFERENCE.items() if k.isupper() and k in (
                      "NUM_LAYERS", "MODEL_DIM", "NUM_HEADS", "NUM_KV_HEADS", "MLP_MULT")},
                  steps=a.steps, seed=a.seed, held_out_rows=int(len(held)), train_batch_tokens=batch_rows * seq_len,
                  artifact_sha256=artifact_sha, validation_split_used=False, domain_means=domain_means)
    add_scores(path, "proxy_loss", scores, params)
    print(f"proxy_loss: {path}: {layout.rows - len(held):,} rows scored at {rate / 1e6:.3f} M tokens/s; "
          f"{len(held):,} held-out rows left unscored (never drawn by DATA_ORDER=curriculum)")
    if domain_means:
        print("proxy_loss: each domain's mean (MIX_REFERENCE=index:<this index> reads them): "
              + ",".join(f"{k}={v:.4f}" for k, v in domain_means.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
