"""The first minutes on a GPU: one command that answers what the CPU cannot.

    python -m tools.gpu_check --prepare          # here, once: gpu_bundle/ (data slice, tokenizer, zstandard wheel)
    python -m tools.gpu_check --dry-run OUT      # anywhere: check the bundle, print the plan, run nothing
    python -m tools.gpu_check OUT                # on the GPU machine (bash tools/gpu_check.sh OUT)

On the GPU it installs the carried zstandard wheel (the machine has no network), runs the
CUDA-marked tests, then short compiled runs at configs/1xh100.env's model and batch for the
baseline, the curriculum (fresh and carry pools), the document mask, and the late records' packed
layout with its document kernel (baseline and the V), and prints a table of step time, data wait,
peak memory, recompiles, the ratio to the baseline and the attention kernel each run got. Everything it
writes goes to OUT (at most 8 files): tests.txt, runs.json, logs.txt, table.txt.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from curriculum.domains import sidecar_path
from curriculum.shards import HEADER_BYTES, TOKEN_DTYPE, open_shard, shard_token_count, write_shard
from tools import launch
from tools.envfile import ROOT, read_env_file

BUNDLE = ROOT / "gpu_bundle"
TRAIN_SHARDS = 2           # of the embedded mix, cut to the room the tree leaves (the runs wrap the stream anyway)
TRAVEL_LIMIT = 64 * 2**20  # what may travel to the GPU machine: the tracked tree and the bundle
GROWTH_BYTES = 2 * 2**20   # kept free, so that a log or a ring committed after --prepare does not stop the call
WHEEL_BYTES = 5_600_000    # the zstandard wheel (5,546,993 bytes), counted where --no-wheel leaves it out
MIN_SHARD_TOKENS = 1 << 20  # a shard of at least one 786,432-token step (configs/1xh100.env), or the check says so
WHEEL = ("zstandard==0.25.0", "3.12", "manylinux2014_x86_64")  # the GPU image's Python lacks it
ARMS = {"baseline": dict(CURRICULUM="0"), "fresh": dict(CURRICULUM="1"),
        "carry": dict(CURRICULUM="1", CURRICULUM_POOL="carry"),
        "document": dict(CURRICULUM="0", ATTENTION_MASK="document"),
        "packed": dict(CURRICULUM="0", DATA_LAYOUT="packed", ATTENTION_MASK="document"),
        "packed_v": dict(CURRICULUM="1", DATA_LAYOUT="packed", ATTENTION_MASK="document")}
RUN_SETTINGS = dict(MAX_WALLCLOCK_SECONDS="20", WARMUP_STEPS="5", VAL_LOSS_EVERY="0", VAL_MAX_TOKENS="32768",
                    EVAL_STRIDE="256", TRAIN_LOG_EVERY="10", CURRICULUM_LOG_EVERY="10", VAL_SETS="")
RUN_TIMEOUT_S = 150


class CheckError(Exception):
    """The bundle or the machine is not what the check needs; the message says what to do."""


def tree_bytes() -> int:
    """The tracked files' bytes: what travels with the bundle."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prepare(bundle: Path, wheel: bool = True, tree: int | None = None) -> int:
    """The wheel, the tokenizer, the validation shard and TRAIN_SHARDS training shards into
    `bundle`, written beside it and renamed. The training shards are cut to what the tracked tree
    (`tree` bytes; its size now if None) leaves of TRAVEL_LIMIT, so the check keeps fitting as the
    project's logs grow; a cut shard travels without its domains sidecar, which describes the
    whole shard (the runs read no domains)."""
    source = ROOT / "data" / "datasets" / "embedded_mix_sp1024"
    tokenizer = ROOT / "data" / "tokenizers" / "embedded_sp1024.model"
    train = sorted(source.glob("*train_*.bin"))[:TRAIN_SHARDS]
    if not train or not tokenizer.is_file():
        raise CheckError(f"{source} or {tokenizer} is missing: run `make data` first")
    tree = tree_bytes() if tree is None else tree
    staging = bundle.with_name(bundle.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "data").mkdir(parents=True)
    try:
        if wheel:
            spec, python, platform = WHEEL
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
                                   "--python-version", python, "--platform", platform, spec, "-d", str(staging / "wheels")],
                                  capture_output=True, text=True)
            if done.returncode:
                raise CheckError(f"pip could not download {spec} for Python {python} ({platform}):\n{done.stderr[-800:]}")
        for path in sorted(source.glob("*val_*.bin")) + [source / "manifest.json"]:
            if path.exists():
                shutil.copy2(path, staging / "data" / path.name)
        shutil.copy2(tokenizer, staging / tokenizer.name)
        room = TRAVEL_LIMIT - GROWTH_BYTES - tree - folder_bytes(staging) - (0 if wheel else WHEEL_BYTES)
        tokens = min(min(shard_token_count(s) for s in train), (room // len(train) - HEADER_BYTES) // TOKEN_DTYPE.itemsize)
        if tokens < MIN_SHARD_TOKENS:
            raise CheckError(f"the tracked tree is {tree / 2**20:.1f} MiB: of the {TRAVEL_LIMIT / 2**20:.0f} MiB that may "
                             f"travel, {max(room, 0) / 2**20:.1f} MiB are left for {len(train)} training shards, under "
                             f"{MIN_SHARD_TOKENS:,} tokens each; move large logs out of the tree or lower TRAIN_SHARDS")
        cut = any(shard_token_count(s) > tokens for s in train)
        for shard in train:
            if cut:
                write_shard(staging / "data" / shard.name, np.asarray(open_shard(shard)[:tokens]))
            else:
                shutil.copy2(shard, staging / "data" / shard.name)
                if sidecar_path(shard).exists():
                    shutil.copy2(sidecar_path(shard), staging / "data" / sidecar_path(shard).name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(bundle, ignore_errors=True)
    os.replace(staging, bundle)
    size = folder_bytes(bundle)
    print(f"gpu_check: {bundle} holds {size / 2**20:.1f} MiB ({len(train)} training shards of {tokens:,} tokens"
          f"{' (cut to fit)' if cut else ''}, the validation shard, the tokenizer"
          f"{', the zstandard wheel' if wheel else ''}); with the {tree / 2**20:.1f} MiB working tree, "
          f"{(size + tree) / 2**20:.1f} MiB travel of the {TRAVEL_LIMIT / 2**20:.0f} MiB allowed"
          f"{'' if wheel else f' ({WHEEL_BYTES / 2**20:.1f} MiB more with the wheel)'}")
    return size


def bundle_problems(bundle: Path) -> list[str]:
    problems = []
    if not sorted((bundle / "data").glob("*train_*.bin")):
        problems.append(f"{bundle}/data: no training shard (python -m tools.gpu_check --prepare)")
    if not sorted((bundle / "data").glob("*val_*.bin")):
        problems.append(f"{bundle}/data: no validation shard")
    if not (bundle / "embedded_sp1024.model").is_file():
        problems.append(f"{bundle}: no tokenizer")
    if not sorted((bundle / "wheels").glob("zstandard-*.whl")):
        problems.append(f"{bundle}/wheels: no zstandard wheel (the GPU machine cannot download it)")
    return problems


def run_env(bundle: Path, arm: str, logs: Path) -> dict:
    """configs/1xh100.env's settings over the trainer's defaults, the bundle's data, a short cap."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURRICULUM", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env |= read_env_file(ROOT / "configs" / "1xh100.env") | RUN_SETTINGS | ARMS[arm]
    env |= dict(DATA_PATH=str(bundle / "data"), TOKENIZER_PATH=str(bundle / "embedded_sp1024.model"), VOCAB_SIZE="1024",
                LOG_DIR=str(logs), RUN_ID=arm, DEVICE="cuda")
    return env


def plan(out: Path, bundle: Path) -> list[tuple[str, list[str] | dict]]:
    steps: list[tuple[str, list[str] | dict]] = [
        ("install zstandard", [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target",
                               str(out / "site"), *map(str, sorted((bundle / "wheels").glob("zstandard-*.whl")))]),
        ("CUDA-marked tests", [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                               "tests/test_cuda.py"])]
    steps += [(f"run {arm}", run_env(bundle, arm, out / "logs")) for arm in ARMS]
    return steps


def table(summaries: dict[str, dict]) -> str:
    base = summaries.get("baseline", {}).get("step_avg_ms")
    lines = [f"{'arm':<10}{'steps':>7}{'step ms':>10}{'vs base':>9}{'wait ms':>9}{'peak MiB':>10}{'recompiles':>11}"
             f"{'val_bpb':>9}  kernel"]
    for arm, s in summaries.items():
        if "error" in s:
            lines.append(f"{arm:<10} FAILED: {s['error'][:100]}")
            continue
        ratio = f"{s['step_avg_ms'] / base:.3f}" if base else "-"
        lines.append(f"{arm:<10}{s['steps']:>7}{s['step_avg_ms']:>10.1f}{ratio:>9}{s['data']['data_wait_ms_per_step']:>9.3f}"
                     f"{s['peak_memory_mb']:>10.0f}{s['recompiles_after_warmup']:>11}{s['roundtrip_val_bpb']:>9.4f}"
                     f"  {s.get('attention_kernel') or 'causal'}")
    return "\n".join(lines)


def run_on_gpu(out: Path, bundle: Path) -> int:
    import torch
    if not torch.cuda.is_available():
        raise CheckError("no CUDA device here: `--dry-run OUT` checks the bundle and prints the plan on any machine")
    out.mkdir(parents=True, exist_ok=True)
    steps = plan(out, bundle)
    install, tests, runs = steps[0][1], steps[1][1], steps[2:]
    subprocess.run(install, check=True)
    pythonpath = os.pathsep.join([str(out / "site"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    t0 = time.time()
    done = subprocess.run(tests, cwd=ROOT, capture_output=True, text=True,
                          env=os.environ | dict(PYTHONPATH=pythonpath, GPU_CHECK_DATA=str(bundle / "data")))
    (out / "tests.txt").write_text(done.stdout + done.stderr)
    print(f"gpu_check: CUDA-marked tests exit {done.returncode} in {time.time() - t0:.0f}s; "
          f"{(done.stdout.strip().splitlines() or ['no output'])[-1]}", flush=True)
    summaries, logs = {}, []
    for name, env in runs:
        arm = name.removeprefix("run ")
        t0 = time.time()
        try:
            proc = launch.run_trainer(env | dict(PYTHONPATH=pythonpath), capture_output=True, text=True,
                                      timeout=RUN_TIMEOUT_S)
            if proc.returncode:
                summaries[arm] = dict(error=proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "exit code")
            else:
                summaries[arm] = json.loads((out / "logs" / f"{arm}.json").read_text())
        except subprocess.TimeoutExpired:
            summaries[arm] = dict(error=f"over {RUN_TIMEOUT_S}s")
        log = out / "logs" / f"{arm}.txt"
        if log.exists():  # the log without the source dump
            text = log.read_text()
            logs.append(f"===== {arm}\n" + text[text.find("=" * 100):][-20000:])
        print(f"gpu_check: {arm} done in {time.time() - t0:.0f}s", flush=True)
    (out / "runs.json").write_text(json.dumps(summaries, indent=1, default=str) + "\n")
    (out / "logs.txt").write_text("\n".join(logs))
    shutil.rmtree(out / "logs", ignore_errors=True)
    shutil.rmtree(out / "site", ignore_errors=True)  # only files come back, and at most 8
    text = f"{torch.cuda.get_device_name()} torch {torch.__version__}\n" + table(summaries)
    (out / "table.txt").write_text(text + "\n")
    print(text)
    return 0 if done.returncode == 0 and all("error" not in s for s in summaries.values()) else 1


def dry_run(out: Path, bundle: Path) -> int:
    problems = bundle_problems(bundle)
    for name, step in plan(out, bundle):
        if isinstance(step, dict):
            changed = {k: v for k, v in step.items() if os.environ.get(k) != v}
            print(f"gpu_check: {name}: train_gpt.py with " + " ".join(f"{k}={v}" for k, v in sorted(changed.items())))
        else:
            print(f"gpu_check: {name}: {' '.join(step)}")
    if not problems:  # each run's settings pass the trainer's checks (DEVICE aside: this machine may have no GPU)
        import train_gpt
        for name, step in plan(out, bundle)[2:]:
            try:
                train_gpt.read_settings(step | dict(DEVICE="auto"))
            except train_gpt.SettingsError as err:
                problems.append(f"{name}: {err}")
    size = folder_bytes(bundle) if bundle.exists() else 0
    print(f"gpu_check: bundle {size / 2**20:.1f} MiB; " + ("ready" if not problems else "not ready:\n  " + "\n  ".join(problems)))
    return 0 if not problems else 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path, help="the output folder (on the GPU machine: $OUT)")
    ap.add_argument("--prepare", action="store_true", help="build the bundle here")
    ap.add_argument("--dry-run", action="store_true", help="check the bundle and print the plan; run nothing")
    ap.add_argument("--bundle", type=Path, default=BUNDLE)
    ap.add_argument("--no-wheel", action="store_true", help="--prepare without downloading the zstandard wheel")
    args = ap.parse_args(argv)
    try:
        if args.prepare:
            prepare(args.bundle, wheel=not args.no_wheel)
            return 0
        if args.out is None:
            ap.error("OUT is required (or --prepare)")
        return dry_run(args.out, args.bundle) if args.dry_run else run_on_gpu(args.out, args.bundle)
    except CheckError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
