"""`make bench`: what the curriculum costs, as ratios against the baseline measured in the same run.

1. Each difficulty signal alone (every entry of SCORES): throughput in tokens/s on one CPU thread, on pools of
   real training text at the CPU configuration's and the 1xH100 shapes.
2. The loader alone: milliseconds per micro-batch with the curriculum off and on (read-ahead,
   transfer, scoring, selection, gather), at the CPU configuration's shapes and at the 1xH100
   shapes of SPEC.md (48 sequences of 2048 tokens per micro-batch).
3. Paired steps: one process, one model, two loaders (curriculum off and on) taking turns
   step by step, so a pair of steps differs only in where its batch came from and machine
   drift cancels: the geometric mean of the per-pair step-time ratios with its 95% CI.
4. Evaluation: one pass over the validation split with the CPU configuration's model, for
   non-overlapping windows and sliding windows at strides 128 and 64, as ratios to the first.
5. The trainer: short runs of train_gpt.py (configs/cpu.env, a fixed number of steps, no cap),
   baseline and curriculum interleaved so drift hits both: step time, time blocked waiting for
   data, peak memory.

    python -m tools.bench [--pairs 60] [--steps 60] [--repeats 2] [--skip-trainer]
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch

import train_gpt as tg  # the trainer's own settings, model, optimisers and step
from curriculum import SCORES, BatchSource, open_shard
from tools.envfile import ROOT, read_env_file


H100_MICRO_SEQS = 48  # 786,432 tokens per step / 8 micro-batches / 2048 tokens (SPEC.md, 1xH100)
ARMS = ("baseline", "curriculum")


def cpu_settings(env: dict) -> tg.Settings:
    """The CPU configuration as the trainer reads it, curriculum on (the arms switch it per loader)."""
    paths = {k: str(ROOT / env[k]) for k in ("DATA_PATH", "TOKENIZER_PATH")}
    return tg.read_settings(dict(os.environ) | env | paths | dict(CURRICULUM="1"))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_source(s: tg.Settings, seq_len: int, seqs: int, arm: str, device) -> BatchSource:
    return BatchSource([Path(p) for p in sorted(glob.glob(s.train_files))], seq_len=seq_len, batch_seqs=seqs,
                       rank=0, world_size=1, vocab_size=s.vocab_size, device=device,
                       config=dataclasses.replace(s.curriculum, enabled=arm == "curriculum"))


def loader_ms_per_batch(source: BatchSource, batches: int, device) -> float:
    try:
        for _ in range(3):  # fill the read-ahead queue, warm the allocator
            source.next_batch(0.3)
        synchronize(device)
        t0 = time.perf_counter()
        for k in range(batches):
            source.next_batch(k / batches)
        synchronize(device)
        return 1000 * (time.perf_counter() - t0) / batches
    finally:
        source.close()


def bench_loader(s: tg.Settings, device) -> list[dict]:
    rows = []
    for label, seq_len, seqs, n in (("cpu config", s.train_seq_len, s.micro_batch_seqs, 200),
                                    ("1xH100 shapes", 2048, H100_MICRO_SEQS, 40)):
        best = {arm: min(loader_ms_per_batch(make_source(s, seq_len, seqs, arm, device), n, device)
                         for _ in range(3)) for arm in ARMS}
        rows.append(dict(shapes=f"{label}: {seqs} x {seq_len}", baseline_ms=best["baseline"],
                         curriculum_ms=best["curriculum"], ratio=best["curriculum"] / best["baseline"]))
    return rows


def scorer_tokens_per_s(score, tokens: torch.Tensor, vocab_size: int, repeats: int = 30) -> float:
    """Best of several timed batches of calls, on one thread: the number a kernel is capable of."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        score(tokens, vocab_size)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(10):
                score(tokens, vocab_size)
            best = min(best, (time.perf_counter() - t0) / 10)
        return tokens.numel() / best
    finally:
        torch.set_num_threads(threads)


def bench_scorer(s: tg.Settings) -> list[dict]:
    stream = np.asarray(open_shard(sorted(glob.glob(s.train_files))[0]))
    rows = []
    for label, seq_len, keep in (("cpu config", s.train_seq_len, s.micro_batch_seqs),
                                 ("1xH100 shapes", 2048, H100_MICRO_SEQS)):
        pool = s.curriculum.pool_size(keep)
        tokens = torch.from_numpy(stream[:pool * (seq_len + 1)].astype(np.int64)).view(pool, seq_len + 1)
        for name, score in SCORES.items():
            rows.append(dict(score=name, shapes=f"{label}: {pool} x {seq_len + 1}",
                             tokens_per_s=scorer_tokens_per_s(score, tokens, s.vocab_size)))
    return rows


def bench_paired_steps(s: tg.Settings, steps: int) -> dict:
    device = tg.pick_device(s)
    compile_fn = torch.compile if s.torch_compile else (lambda f: f)
    torch.manual_seed(s.seed)
    model = tg.GPT(s).to(device)
    step_model = torch.compile(model, dynamic=False) if s.torch_compile else model
    optimizers = tg.build_optimizers(model, s, compile_fn)
    sources = {arm: make_source(s, s.train_seq_len, s.micro_batch_seqs, arm, device) for arm in ARMS}
    bf16 = tg.use_bf16(s, device)

    def timed_step(source: BatchSource, progress: float) -> float:
        synchronize(device)
        t0 = time.perf_counter()
        tg.train_step(step_model, model, optimizers, s, source, progress, 1.0, bf16)
        synchronize(device)
        return 1000 * (time.perf_counter() - t0)

    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    try:
        for arm in ARMS:  # compilation and the allocator
            for _ in range(3):
                timed_step(sources[arm], 0.5)
        for i in range(steps):
            for arm in (ARMS if i % 2 == 0 else ARMS[::-1]):  # neither arm always goes first
                times[arm].append(timed_step(sources[arm], i / steps))
        read = {arm: sources[arm].summary(steps + 3)["sequences_read"] for arm in ARMS}
    finally:
        for source in sources.values():
            source.close()
    log_ratios = np.log(np.array(times["curriculum"]) / np.array(times["baseline"]))
    ci = scipy.stats.ttest_1samp(log_ratios, 0.0).confidence_interval(0.95)
    return dict(pairs=steps, sequences_read=read, baseline_ms=statistics.median(times["baseline"]),
                curriculum_ms=statistics.median(times["curriculum"]), ratio=float(np.exp(log_ratios.mean())),
                ratio_ci95=[float(np.exp(ci.low)), float(np.exp(ci.high))])


def bench_eval_strides(s: tg.Settings) -> list[dict]:
    """Seconds for one evaluation of the whole validation split, per stride (the model is
    untrained: the cost does not depend on the weights)."""
    device = tg.pick_device(s)
    torch.manual_seed(s.seed)
    model = tg.GPT(s).to(device)
    val = tg.load_validation_tokens(s.val_files, s.train_seq_len, s.val_max_tokens)
    tables = tg.ByteTables.from_sentencepiece(s.tokenizer_path, s.vocab_size).to(device)
    bf16 = tg.use_bf16(s, device)
    rows = []
    for stride in (s.train_seq_len, 128, 64):
        t0 = time.perf_counter()
        tg.evaluate(model, s, val, tables, device, bf16, stride)
        synchronize(device)
        rows.append(dict(stride=stride, seconds=time.perf_counter() - t0, tokens=val.numel() - 1))
    for row in rows:
        row["ratio"] = row["seconds"] / rows[0]["seconds"]
    return rows


def bench_trainer(env: dict, steps: int, repeats: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"baseline": [], "curriculum": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for arm, flag in (("baseline", "0"), ("curriculum", "1")):
                run_env = dict(os.environ) | env | dict(
                    CURRICULUM=flag, ITERATIONS=str(steps), MAX_WALLCLOCK_SECONDS="0", WARMDOWN_ITERS=str(steps // 3),
                    VAL_MAX_TOKENS="32769", TRAIN_LOG_EVERY="0", CURRICULUM_LOG_EVERY="0",
                    RUN_ID=f"bench-{arm}-{r}", LOG_DIR=tmp)
                out = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], env=run_env, cwd=ROOT,
                                     capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"bench: the {arm} run failed:\n{out.stderr[-2000:]}")
                summary = json.loads((Path(tmp) / f"bench-{arm}-{r}.json").read_text())
                results[arm].append(summary)
                print(f"bench: {arm} run {r + 1}/{repeats}: step_avg {summary['step_avg_ms']:.1f}ms, "
                      f"data wait {summary['data']['data_wait_ms_per_step']:.3f}ms/step", flush=True)
    return results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=60, help="paired steps per arm in one process")
    ap.add_argument("--skip-trainer", action="store_true")
    ap.add_argument("--scorers-only", action="store_true", help="only the difficulty signals' throughput")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    env = read_env_file(ROOT / "configs" / "cpu.env")
    s = cpu_settings(env)
    device = tg.pick_device(s)
    report: dict = dict(device=str(device), torch=torch.__version__)

    print("== each difficulty signal alone, one CPU thread (best of 30, tokens/s; goal >= 300M)")
    report["scorer"] = bench_scorer(s)
    for row in report["scorer"]:
        print(f"  {row['score']:<20} {row['shapes']:<28} {row['tokens_per_s'] / 1e6:8.1f}M tokens/s")
    if args.scorers_only:
        return
    print(f"== loader alone on {device} (best of 3, ms per micro-batch)")
    report["loader"] = bench_loader(s, device)
    for row in report["loader"]:
        print(f"  {row['shapes']:<28} baseline {row['baseline_ms']:8.3f}  curriculum {row['curriculum_ms']:8.3f}"
              f"  ratio {row['ratio']:.3f}")
    print(f"== paired steps in one process, configs/cpu.env, {args.pairs} pairs (median ms per step)")
    paired = report["paired_steps"] = bench_paired_steps(s, args.pairs)
    print(f"  baseline {paired['baseline_ms']:.2f}  curriculum {paired['curriculum_ms']:.2f}  "
          f"ratio {paired['ratio']:.4f}  95% CI [{paired['ratio_ci95'][0]:.4f}, {paired['ratio_ci95'][1]:.4f}]"
          f"  (goal <= 1.01; the experiment we beat: 1.089)")
    print(f"== evaluation of the validation split, configs/cpu.env's model (seconds per pass)")
    report["eval_strides"] = bench_eval_strides(s)
    for row in report["eval_strides"]:
        kind = "non-overlapping" if row["stride"] == s.train_seq_len else f"sliding, stride {row['stride']}"
        print(f"  {kind:<28} {row['seconds']:8.2f}s  ratio {row['ratio']:.2f}  ({row['tokens']:,} tokens)")
    if not args.skip_trainer:
        print(f"== train_gpt.py, configs/cpu.env, {args.steps} steps x {args.repeats} interleaved runs per arm")
        runs = bench_trainer(env, args.steps, args.repeats)

        def mean(arm, get):
            return statistics.mean(get(run) for run in runs[arm])
        metrics = {"step_avg_ms": lambda run: run["step_avg_ms"],
                   "data_wait_ms_per_step": lambda run: run["data"]["data_wait_ms_per_step"],
                   "peak_memory_mb": lambda run: run["peak_memory_mb"]}
        report["trainer"] = {}
        for name, get in metrics.items():
            b, c = mean("baseline", get), mean("curriculum", get)
            report["trainer"][name] = dict(baseline=b, curriculum=c, ratio=c / b if b else float("nan"))
            print(f"  {name:<24} baseline {b:10.3f}  curriculum {c:10.3f}  ratio {c / b if b else float('nan'):.3f}")
        # The loader's extra cost per step, against the measured step: the overhead the
        # end-to-end ratio above cannot resolve when it is smaller than run-to-run noise.
        row = report["loader"][0]
        extra = (row["curriculum_ms"] - row["baseline_ms"]) * s.grad_accum_steps
        step = report["trainer"]["step_avg_ms"]["baseline"]
        spread = [run["step_avg_ms"] for run in runs["baseline"]]
        report["trainer"]["selection_ms_per_step"] = dict(ms=extra, fraction_of_step=extra / step)
        print(f"  selection cost per step  {extra:.3f}ms = {100 * extra / step:.3f}% of the baseline step "
              f"(baseline runs themselves spread {min(spread):.1f}..{max(spread):.1f}ms)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
