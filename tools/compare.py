"""Did the curriculum beat the baseline, by more than noise, at the same wallclock?

    python -m tools.compare logs/ [--out report/]

Reads every run's JSON summary (and its text log, for curves), groups runs into arms by their
settings minus SEED, RUN_ID and LOG_DIR, finds each arm's baseline (CURRICULUM=0, every other
setting equal) and writes report.md with tables and, when matplotlib is installed, plots.
Runs evaluated with another tokenizer or on another validation set are never pooled.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

from curriculum.shards import write_atomic

RUN_KEYS = ("SEED", "RUN_ID", "LOG_DIR")
CURRICULUM_KEYS = ("CURRICULUM", "CURRICULUM_SCORE", "CURRICULUM_SCHEDULE", "CURRICULUM_PEAK",
                   "CURRICULUM_TARGET", "CURRICULUM_OVERSAMPLE")
DISPLAY_ONLY = ("CURRICULUM_LOG_EVERY", "TRAIN_LOG_EVERY")  # change no result, never split arms
BAR_NATS = 0.005  # the competition's bar: at least this much better, at p < 0.01
BAR_P = 0.01


class CompareError(Exception):
    """Input that cannot be compared; the message says why."""


@dataclass
class Run:
    run_id: str
    summary: dict
    log_text: str

    @property
    def settings(self) -> dict:
        return self.summary["settings"]

    @property
    def seed(self):
        return self.settings.get("SEED")


@dataclass
class Arm:
    name: str
    key: tuple
    runs: list[Run] = field(default_factory=list)

    @property
    def is_baseline(self) -> bool:
        return not self.runs[0].settings.get("CURRICULUM", False)


def load_runs(folder: Path) -> tuple[list[Run], list[str]]:
    """Runs with a summary, and a message for each log left without one (a crash)."""
    if not folder.is_dir():
        raise CompareError(f"{folder}: no such folder")
    runs, problems = [], []
    for path in sorted(folder.glob("*.json")):
        try:
            summary = json.loads(path.read_text())
        except ValueError as e:
            problems.append(f"{path.name}: not valid JSON ({e}); left out")
            continue
        if not isinstance(summary, dict) or "settings" not in summary or "roundtrip_val_bpb" not in summary:
            continue  # not a train_gpt.py summary (a bench file, a manifest)
        log = path.with_suffix(".txt")
        runs.append(Run(summary["run_id"], summary, log.read_text() if log.exists() else ""))
    with_summary = {r.run_id for r in runs}
    for log in sorted(folder.glob("*.txt")):
        if log.stem not in with_summary:
            problems.append(f"{log.name}: a log without a summary (the run crashed or is still running); left out")
    if not runs:
        raise CompareError(f"{folder}: no run summaries (*.json written by train_gpt.py at the end of a run)"
                           + (": " + "; ".join(problems) if problems else ""))
    return runs, problems


def arm_key(run: Run) -> tuple:
    s = run.settings
    settings = tuple(sorted((k, json.dumps(v)) for k, v in s.items() if k not in RUN_KEYS + DISPLAY_ONLY))
    return settings + (("tokenizer_sha256", run.summary.get("tokenizer_sha256")),
                       ("val_sha256", run.summary.get("val_sha256")))


def arm_name(run: Run) -> str:
    s = run.settings
    if not s.get("CURRICULUM", False):
        return "baseline"
    return (f"curriculum {s.get('CURRICULUM_SCORE', 'unigram_entropy')}/{s.get('CURRICULUM_SCHEDULE', 'v')}"
            f" peak={s.get('CURRICULUM_PEAK', '0.45')} x{s.get('CURRICULUM_OVERSAMPLE', 2.0)}")


def group_arms(runs: list[Run]) -> list[Arm]:
    arms: dict[tuple, Arm] = {}
    for run in runs:
        arms.setdefault(arm_key(run), Arm(arm_name(run), arm_key(run))).runs.append(run)
    out = sorted(arms.values(), key=lambda a: (not a.is_baseline, a.name))
    names = Counter(a.name for a in out)
    numbered = Counter()
    for a in out:  # arms that share a name differ in another setting, listed in the report
        if names[a.name] > 1:
            numbered[a.name] += 1
            a.name = f"{a.name} #{numbered[a.name]}"
    return out


def without(key: tuple, names: tuple) -> tuple:
    return tuple(kv for kv in key if kv[0] not in names)


def find_baseline(arm: Arm, arms: list[Arm]) -> tuple[Arm | None, str | None]:
    """The baseline arm with every setting equal but the curriculum's, or why there is none."""
    target = without(arm.key, CURRICULUM_KEYS + ("tokenizer_sha256", "val_sha256"))
    same_settings = [b for b in arms if b.is_baseline
                     and without(b.key, CURRICULUM_KEYS + ("tokenizer_sha256", "val_sha256")) == target]
    if not same_settings:
        return None, f"{arm.name}: no baseline run with the same settings (CURRICULUM=0, all else equal)"
    for b in same_settings:
        if dict(b.key)["tokenizer_sha256"] == dict(arm.key)["tokenizer_sha256"] and \
                dict(b.key)["val_sha256"] == dict(arm.key)["val_sha256"]:
            return b, None
    return None, (f"{arm.name}: its baseline runs used another tokenizer or validation set "
                  f"(sha256 differ): not comparable, not compared")


# ------------------------------------------------------------------------- statistics


def describe(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else float("nan")


@dataclass
class Difference:
    test: str            # "paired t", "Welch t" or "none"
    n: tuple[int, int]
    mean_bpb: float      # arm - baseline (negative: the arm is better)
    mean_nats: float
    ci_nats: tuple[float, float]
    p_value: float       # two-sided, any difference
    p_bar: float         # one-sided: better by more than BAR_NATS
    note: str = ""

    @property
    def clears_bar(self) -> bool:
        return self.test != "none" and self.mean_nats <= -BAR_NATS and self.p_bar < BAR_P


def compare_arms(arm: Arm, base: Arm) -> Difference:
    """Paired by seed when both arms ran the same seeds, Welch's test otherwise (scipy.stats)."""
    a_bpb = {r.seed: r.summary["roundtrip_val_bpb"] for r in arm.runs}
    b_bpb = {r.seed: r.summary["roundtrip_val_bpb"] for r in base.runs}
    a_nat = {r.seed: r.summary["roundtrip_val_loss"] for r in arm.runs}
    b_nat = {r.seed: r.summary["roundtrip_val_loss"] for r in base.runs}
    n = (len(arm.runs), len(base.runs))
    mean_bpb = statistics.fmean(a_bpb.values()) - statistics.fmean(b_bpb.values())
    mean_nats = statistics.fmean(a_nat.values()) - statistics.fmean(b_nat.values())
    paired = sorted(a_nat) == sorted(b_nat) and len(a_nat) == n[0] == n[1]
    nan = float("nan")
    if (paired and n[0] < 2) or (not paired and min(n) < 2):
        return Difference("none", n, mean_bpb, mean_nats, (nan, nan), nan, nan,
                          note=f"too few runs for a test (n = {n[0]} and {n[1]}; at least 2 each are needed)")
    if paired:
        seeds = sorted(a_nat)
        a, b = [a_nat[s] for s in seeds], [b_nat[s] for s in seeds]
        if all(x == y for x, y in zip(a, b)):  # no variance to test: the t statistic is undefined
            return Difference("paired t", n, mean_bpb, mean_nats, (0.0, 0.0), 1.0, 1.0, note="identical results")
        test = stats.ttest_rel(a, b)
        bar = stats.ttest_rel(a, [x - BAR_NATS for x in b], alternative="less")
        ci = test.confidence_interval(0.95)
        return Difference("paired t", n, mean_bpb, mean_nats, (ci.low, ci.high), test.pvalue, bar.pvalue)
    a, b = list(a_nat.values()), list(b_nat.values())
    test = stats.ttest_ind(a, b, equal_var=False)
    bar = stats.ttest_ind(a, [x - BAR_NATS for x in b], equal_var=False, alternative="less")
    ci = test.confidence_interval(0.95)
    return Difference("Welch t", n, mean_bpb, mean_nats, (ci.low, ci.high), test.pvalue, bar.pvalue,
                      note="seeds differ between the arms: unpaired")


# ------------------------------------------------------------------------- logs → curves

VAL_LINE = re.compile(r"^step:(\d+)/\d+ val_loss:([\d.]+) val_bpb:([\d.]+) train_time:(\d+)ms", re.M)
TRAIN_LINE = re.compile(r"^step:(\d+)/\d+ train_loss:([\d.]+) train_time:(\d+)ms step_avg:([\d.]+)ms", re.M)
CURRICULUM_LINE = re.compile(
    r"^curriculum step:(\d+) progress:([\d.]+) target:([\d.]+) kept_score_mean:([\d.]+) kept_score_min:([\d.]+) "
    r"kept_score_max:([\d.]+) pool_score_mean:([\d.]+) data_wait_ms:([\d.]+)", re.M)


def val_curve(run: Run) -> list[tuple[int, float, float]]:
    """(step, train_time_s, val_bpb) for every evaluation in the log."""
    return [(int(s), int(t) / 1000, float(bpb)) for s, _, bpb, t in VAL_LINE.findall(run.log_text)]


def step_times(run: Run) -> list[tuple[int, float]]:
    """(step, ms per step over the interval since the previous log line)."""
    points = [(int(s), int(t)) for s, _, t, _ in TRAIN_LINE.findall(run.log_text)]
    return [(s1, (t1 - t0) / (s1 - s0)) for (s0, t0), (s1, t1) in zip(points, points[1:]) if s1 > s0]


def curriculum_curve(run: Run) -> list[tuple[float, ...]]:
    return [tuple(map(float, m)) for m in CURRICULUM_LINE.findall(run.log_text)]


# ------------------------------------------------------------------------- report


def fmt(mean: float, std: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def arm_table(arms: list[Arm]) -> list[str]:
    rows = ["| arm | runs | seeds | round-trip val_bpb | pre-quant val_bpb | steps | tokens seen | step_avg ms "
            "| data wait ms/step | artifact bytes |", "|" + "---|" * 10]
    for a in arms:
        col = lambda get, d=4: fmt(*describe([get(r.summary) for r in a.runs]), d)  # noqa: E731
        rows.append(f"| {a.name} | {len(a.runs)} | {', '.join(str(r.seed) for r in a.runs)} "
                    f"| {col(lambda s: s['roundtrip_val_bpb'])} | {col(lambda s: s['val_bpb'])} "
                    f"| {col(lambda s: s['steps'], 1)} | {col(lambda s: s['tokens_seen'], 0)} "
                    f"| {col(lambda s: s['step_avg_ms'], 2)} | {col(lambda s: s['data']['data_wait_ms_per_step'], 3)} "
                    f"| {col(lambda s: s['artifact_bytes'], 0)} |")
    return rows


def difference_table(pairs: list[tuple[Arm, Arm, Difference]]) -> list[str]:
    rows = ["| arm | vs | test | Δ val_bpb | Δ val_loss (nats) | 95% CI (nats) | p (two-sided) "
            f"| p (better by ≥ {BAR_NATS} nats) | clears the bar |", "|" + "---|" * 9]
    for arm, base, d in pairs:
        ci = "n/a" if math.isnan(d.ci_nats[0]) else f"[{d.ci_nats[0]:+.5f}, {d.ci_nats[1]:+.5f}]"
        p = "n/a" if math.isnan(d.p_value) else f"{d.p_value:.4g}"
        pb = "n/a" if math.isnan(d.p_bar) else f"{d.p_bar:.4g}"
        verdict = "yes" if d.clears_bar else "no"
        rows.append(f"| {arm.name} | {base.name} | {d.test} (n={d.n[0]}, {d.n[1]}) | {d.mean_bpb:+.5f} "
                    f"| {d.mean_nats:+.5f} | {ci} | {p} | {pb} | {verdict}{' — ' + d.note if d.note else ''} |")
    return rows


def make_plots(arms: list[Arm], out: Path) -> list[str]:
    """PNG plots; an empty list (and a note in the report) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a in arms:
        curves = [c for c in (val_curve(r) for r in a.runs) if c]
        if not curves:
            continue
        # the mean (and min-max band) where every seed evaluated at the same step ...
        steps = sorted(set.intersection(*[{s for s, _, _ in c} for c in curves]))
        t = [statistics.fmean(dict((s, tt) for s, tt, _ in c)[k] for c in curves) for k in steps]
        v = [[dict((s, b) for s, _, b in c)[k] for c in curves] for k in steps]
        line, = ax.plot(t, [statistics.fmean(x) for x in v], marker="o", ms=3, label=f"{a.name} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(t, [min(x) for x in v], [max(x) for x in v], alpha=0.2, color=line.get_color())
        for c in curves:  # ... and every run whole, its last evaluation included
            ax.plot([tt for _, tt, _ in c], [b for _, _, b in c], lw=0.7, alpha=0.6, color=line.get_color())
    ax.set(xlabel="training time (s)", ylabel="val_bpb (pre-quant)",
           title="val_bpb against training time (thick: mean, band: min–max; thin: each seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    made.append(_save(fig, out / "val_bpb_vs_time.png"))

    curriculum = [(a, curriculum_curve(r)) for a in arms for r in a.runs[:1] if curriculum_curve(r)]
    if curriculum:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
        for a, rows in curriculum:
            p = [r[1] for r in rows]
            ax1.plot(p, [r[2] for r in rows], label=a.name)
            line, = ax2.plot(p, [r[3] for r in rows], label=f"{a.name}: kept mean")
            ax2.fill_between(p, [r[4] for r in rows], [r[5] for r in rows], alpha=0.2, color=line.get_color())
            ax2.plot(p, [r[6] for r in rows], ls="--", color=line.get_color(), label=f"{a.name}: pool mean")
        ax1.set(ylabel="target percentile", title="the schedule and what it kept (first seed of each arm)")
        ax2.set(xlabel="training progress", ylabel="score (bits); band: kept min–max")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        made.append(_save(fig, out / "curriculum_schedule.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for a in arms:
        per_run = [step_times(r) for r in a.runs]
        if any(per_run):
            steps = sorted({s for pr in per_run for s, _ in pr})
            mean = [statistics.fmean([dict(pr)[s] for pr in per_run if s in dict(pr)]) for s in steps]
            ax.plot(steps, mean, label=f"{a.name}: mean {statistics.fmean(r.summary['step_avg_ms'] for r in a.runs):.1f} ms")
    ax.set(xlabel="step", ylabel="ms per step (between log lines)", title="step time per arm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    made.append(_save(fig, out / "step_time.png"))
    return made


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path.name


def build_report(folder: Path, out: Path) -> tuple[str, list[tuple[Arm, Arm, Difference]]]:
    runs, problems = load_runs(folder)
    arms = group_arms(runs)
    pairs, unmatched = [], []
    for arm in arms:
        if arm.is_baseline:
            continue
        base, why = find_baseline(arm, arms)
        if base is None:
            unmatched.append(why)
        else:
            pairs.append((arm, base, compare_arms(arm, base)))
    baselines = [a for a in arms if a.is_baseline]
    if len(baselines) > 1:
        problems.append(f"{len(baselines)} baseline arms with different settings or data: each curriculum arm "
                        f"is compared only with the baseline that matches it")
    out.mkdir(parents=True, exist_ok=True)
    plots = make_plots(arms, out)
    first = runs[0].summary
    lines = [f"# Curriculum against baseline: {folder}", "",
             f"{len(runs)} runs in {len(arms)} arms; device {first.get('device')}, world size {first.get('world_size')}, "
             f"validation {first.get('val_tokens'):,} tokens. Differences are arm − baseline on the round-trip "
             f"(int6+zstd) score: negative is better. The competition's bar is {BAR_NATS} nats at p < {BAR_P}.", "",
             "## Arms (mean ± std over runs)", "", *arm_table(arms), "", "## Against the baseline", ""]
    lines += difference_table(pairs) if pairs else ["No curriculum arm has a matching baseline."]
    if problems or unmatched:
        lines += ["", "## Left out or not compared", ""] + [f"- {m}" for m in problems + unmatched]
    lines += ["", "## Plots", ""]
    lines += [f"![{p}]({p})" for p in plots] if plots else ["matplotlib is not installed (`make extras`): no plots."]
    lines += ["", "## Settings that differ between arms", ""]
    differing = sorted({k for a in arms for k, _ in a.key if len({dict(b.key).get(k) for b in arms}) > 1})
    lines += [f"- `{k}`: " + "; ".join(f"{a.name}: {dict(a.key).get(k)}" for a in arms) for k in differing] or ["- none"]
    text = "\n".join(lines) + "\n"
    write_atomic(out / "report.md", text.encode())
    return text, pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", type=Path, help="folder of train_gpt.py logs (*.json summaries, *.txt logs)")
    ap.add_argument("--out", type=Path, help="where report.md and the plots go (default: the logs folder)")
    args = ap.parse_args(argv)
    return write_report(args.logs, args.out or args.logs, "compare")


def write_report(logs: Path, out: Path, who: str) -> int:
    """Build the report and print it, or say why it cannot be built: a command's exit status."""
    try:
        text, _ = build_report(logs, out)
    except CompareError as e:
        print(f"{who}: {e}", file=sys.stderr)
        return 2
    print(text)
    print(f"{who}: report written to {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
