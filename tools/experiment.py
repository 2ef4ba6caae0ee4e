"""`make compare`: chosen arms x seeds on the embedded corpus, then the report.

    python -m tools.experiment [--arms baseline v] [--seeds 3] [--mode time --budget 150 | --mode steps --steps N]

Each run is train_gpt.py with settings laid in this order, later winning: configs/cpu.env,
then the user's environment, then the arm's settings (configs/arms.toml), then the run's own
(SEED, RUN_ID, LOG_DIR, the budget). `--mode time` gives every run the same wallclock (the
competition's rule); `--mode steps` the same number of optimiser steps and no cap, so that
the step-count noise of a shared machine drops out (step time is still measured).

The order of the arms rotates from seed to seed, so each arm runs in each position equally
often when the seeds are a multiple of the arms. The output folder is named by a hash of
everything that defines the runs (settings, arm definitions, mode, budget, code): changing
any of them starts a fresh folder, and the same experiment resumes where it stopped. A run
that crashes is reported and the others go on; it is not re-run on resume (delete its log
to run it again).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from curriculum.shards import write_atomic
from tools.compare import check_out, write_report
from tools import launch
from tools.envfile import ROOT, read_env_file
from tools.runs import CompareError, rotated, trainer_defaults


def read_arms(path: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    """{arm: {setting: value}} from the arms file, and every problem in it."""
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        return {}, [f"--arms-file={path}: {e}"]
    arms, problems = {}, []
    for name, settings in table.items():
        if not isinstance(settings, dict):
            problems.append(f"{path}: [{name}] must be a table of settings")
            continue
        bad = [k for k, v in settings.items() if not isinstance(v, (str, int, float)) or isinstance(v, bool)]
        if bad or "CURRICULUM" not in settings:
            problems.append(f"{path}: [{name}] " + (f"values of {', '.join(bad)} must be strings or numbers"
                                                    if bad else "must set CURRICULUM"))
            continue
        arms[name] = {k: str(v) for k, v in settings.items()}
    return arms, problems


def base_environment(config: Path) -> dict[str, str]:
    """configs/cpu.env under the user's environment: what the user exported wins."""
    return read_env_file(config) | dict(os.environ)


def experiment_id(base: dict, arms: dict, mode: str, amount: float, val_every: int) -> str:
    """A hash of everything that defines the runs; the seeds are left out so that more can be added."""
    import train_gpt
    names = set(trainer_defaults()) - {"SEED", "RUN_ID", "LOG_DIR", "RANK", "WORLD_SIZE", "LOCAL_RANK"}
    plan = dict(settings={k: v for k, v in sorted(base.items()) if k in names}, arms=arms, mode=mode,
                amount=amount, val_every=val_every, code=train_gpt.code_sha256())
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:10]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", nargs="+", default=["baseline", "v"], help="arm names from --arms-file")
    ap.add_argument("--arms-file", type=Path, default=ROOT / "configs" / "arms.toml")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1337)
    ap.add_argument("--mode", choices=("time", "steps"), default="time")
    ap.add_argument("--budget", type=float, default=150.0, help="--mode time: training seconds per run")
    ap.add_argument("--steps", type=int, default=0, help="--mode steps: optimiser steps per run")
    ap.add_argument("--val-every", type=int, default=100, help="steps between evaluations, for the curves")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.env")
    ap.add_argument("--out", type=Path, default=ROOT / "compare_out")
    args = ap.parse_args(argv)
    defined, problems = read_arms(args.arms_file) if args.arms_file.is_file() else \
        ({}, [f"--arms-file={args.arms_file}: no such file"])
    unknown = [a for a in args.arms if a not in defined]
    if unknown and defined:
        problems.append(f"--arms: {', '.join(unknown)} not defined in {args.arms_file} "
                        f"(defined: {', '.join(defined)})")
    if len(set(args.arms)) != len(args.arms):
        problems.append(f"--arms={' '.join(args.arms)}: an arm is named twice")
    if args.seeds < 1:
        problems.append(f"--seeds={args.seeds}: must be >= 1")
    if not 0 <= args.first_seed <= 2**32 - max(args.seeds, 1):  # the trainer's SEED: in [0, 2**32 - 1]
        problems.append(f"--first-seed={args.first_seed}: must be in [0, {2**32 - max(args.seeds, 1)}] (the trainer's "
                        f"SEED is in [0, 4294967295], and --seeds={args.seeds} seeds follow it)")
    if args.mode == "time" and not (math.isfinite(args.budget) and args.budget > 0):
        problems.append(f"--budget={args.budget}: must be a finite number > 0 seconds with --mode time")
    if args.mode == "steps" and args.steps < 1:
        problems.append(f"--steps={args.steps}: must be >= 1 with --mode steps")
    if args.val_every < 0:
        problems.append(f"--val-every={args.val_every}: must be >= 0")
    if not args.config.is_file():
        problems.append(f"--config={args.config}: no such file")
    try:
        check_out(args.out)
    except CompareError as err:
        problems.append(str(err))
    if problems:
        print("experiment: invalid settings:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2

    base = base_environment(args.config)
    arms = {a: defined[a] for a in args.arms}
    amount = args.budget if args.mode == "time" else args.steps
    budget = dict(MAX_WALLCLOCK_SECONDS=str(args.budget)) if args.mode == "time" else \
        dict(MAX_WALLCLOCK_SECONDS="0", ITERATIONS=str(args.steps))
    tag = f"{'-'.join(args.arms)}_{args.mode}{amount:g}_{experiment_id(base, arms, args.mode, amount, args.val_every)}"
    folder = args.out / tag
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "plan.json", (json.dumps(dict(arms=arms, mode=args.mode, budget=budget,
                                                         val_every=args.val_every, config=str(args.config)),
                                                    indent=2) + "\n").encode())
    seeds = [args.first_seed + i for i in range(args.seeds)]
    plan = [(seed, arm) for i, seed in enumerate(seeds) for arm in rotated(args.arms, i)]
    print(f"experiment: {len(plan)} runs into {folder}", flush=True)
    t0, failed, ran = time.time(), [], 0
    for k, (seed, arm) in enumerate(plan, 1):
        run_id = f"{arm}-seed{seed}"
        head = f"experiment: [{k}/{len(plan)}] {run_id}:"
        if (logs / f"{run_id}.json").exists():
            print(f"{head} done earlier, kept", flush=True)
            continue
        earlier = logs / f"{run_id}.txt"
        ended = last_error(earlier)
        if ended and "interrupted" not in ended:
            print(f"{head} failed earlier, kept as failed ({ended[:200]}; delete {earlier} to run it again)", flush=True)
            failed.append(run_id)
            continue
        env = base | arms[arm] | budget | dict(SEED=str(seed), RUN_ID=run_id, LOG_DIR=str(logs),
                                                VAL_LOSS_EVERY=str(args.val_every))
        if earlier.exists():  # interrupted, or stopped before it could say why: run again from the start
            env["OVERWRITE"] = "1"
            print(f"{head} {'interrupted' if ended else 'left unfinished'} earlier, run again", flush=True)
        print(f"{head} training ({progress_text(time.time() - t0, ran, len(plan) - k + 1)})", flush=True)
        try:
            out = launch.run_trainer(env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        except KeyboardInterrupt:  # the run ended in its own line (tools/launch.py); this one says what is kept
            print(f"experiment: interrupted during {run_id}; the same command goes on from there (the {k - 1} runs "
                  f"before it are kept, {run_id} runs again)", file=sys.stderr, flush=True)
            return 130
        ran += 1
        if out.returncode:
            failed.append(run_id)
            print(f"{head} FAILED (exit {out.returncode}); going on with the others:\n{out.stderr[-2000:]}",
                  file=sys.stderr, flush=True)
    print(f"experiment: {len(plan)} runs, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; "
          f"{time.time() - t0:.0f}s", flush=True)
    status = write_report(logs, folder, "experiment")
    return status or (1 if failed else 0)


def last_error(log: Path) -> str:
    """The error line a run's log ends with (train_gpt.py writes one on every way out it sees), or ''."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return lines[-1][len("error: "):] if lines and lines[-1].startswith("error: ") else ""


def progress_text(elapsed_s: float, ran: int, left: int) -> str:
    """'95s elapsed, about 4m 45s left': the runs left at the mean time of those run so far."""
    if not ran:
        return f"{elapsed_s:.0f}s elapsed"
    rest = round(elapsed_s / ran * left)
    return f"{elapsed_s:.0f}s elapsed, about {rest // 60}m {rest % 60:02d}s left for {left} runs"


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where a shell started it with SIGINT ignored
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("experiment: interrupted; the same command goes on from where it stopped", file=sys.stderr)
        sys.exit(130)
