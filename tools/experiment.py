"""`make compare`: SEEDS x {baseline, curriculum} on the embedded corpus, then the report.

    python -m tools.experiment [--seeds 3] [--budget 150] [--out compare_out]

Every run is train_gpt.py with configs/cpu.env and a wallclock cap of --budget seconds; the
arms alternate (baseline, curriculum, baseline, ...) so that drift of the machine hits both.
Runs already finished in --out are kept (the experiment resumes); then tools.compare writes
report.md and the plots beside the logs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from tools.compare import write_report
from tools.envfile import ROOT, read_env_file

ARMS = (("baseline", "0"), ("curriculum", "1"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1337)
    ap.add_argument("--budget", type=float, default=150.0, help="training seconds per run (MAX_WALLCLOCK_SECONDS)")
    ap.add_argument("--val-every", type=int, default=100, help="steps between evaluations, for the curves")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.env")
    ap.add_argument("--out", type=Path, default=ROOT / "compare_out")
    args = ap.parse_args(argv)
    problems = []
    if args.seeds < 1:
        problems.append(f"--seeds={args.seeds}: must be >= 1")
    if args.budget <= 0:
        problems.append(f"--budget={args.budget}: must be > 0 seconds")
    if args.val_every < 0:
        problems.append(f"--val-every={args.val_every}: must be >= 0")
    if not args.config.is_file():
        problems.append(f"--config={args.config}: no such file")
    if problems:
        print("experiment: invalid settings:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    config = read_env_file(args.config)
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    seeds = [args.first_seed + i for i in range(args.seeds)]
    plan = [(seed, arm, flag) for seed in seeds for arm, flag in ARMS]
    t0 = time.time()
    for k, (seed, arm, flag) in enumerate(plan, 1):
        run_id = f"{arm}-seed{seed}"
        if (logs / f"{run_id}.json").exists():
            print(f"experiment: [{k}/{len(plan)}] {run_id}: already done, kept", flush=True)
            continue
        env = dict(os.environ) | config | dict(
            SEED=str(seed), CURRICULUM=flag, RUN_ID=run_id, LOG_DIR=str(logs),
            MAX_WALLCLOCK_SECONDS=str(args.budget), VAL_LOSS_EVERY=str(args.val_every))
        print(f"experiment: [{k}/{len(plan)}] {run_id}: training for {args.budget:.0f}s "
              f"({time.time() - t0:.0f}s elapsed)", flush=True)
        out = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if out.returncode:
            print(f"experiment: {run_id} failed (exit {out.returncode}):\n{out.stderr[-3000:]}", file=sys.stderr)
            return 1
    print(f"experiment: {len(plan)} runs in {time.time() - t0:.0f}s")
    return write_report(logs, args.out, "experiment")


if __name__ == "__main__":
    sys.exit(main())
