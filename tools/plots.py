"""The comparison's plots, drawn from the runs' text logs and summaries (matplotlib, optional).

Every seed is drawn whole (no mean that stops where the shortest run stops), the round-trip
score the test uses is marked at each run's end, and step time is drawn from zero without
the first ten steps, whose intervals hold compilation and per-step logging.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from tools.loglines import parse

SPIKE_STEPS = 10  # the trainer logs every one of the first 10 steps


def val_curve(run) -> list[tuple[int, float, float]]:
    """(step, train_time_s, val_bpb) for every evaluation in the log (pre-quant, before SWA)."""
    return [(int(v["step"]), int(v["ms"]) / 1000, float(v["bpb"])) for v in parse("val", run.log_text)]


def train_curve(run) -> list[tuple[int, float]]:
    return [(int(t["step"]), float(t["loss"])) for t in parse("train", run.log_text)]


def step_times(run) -> list[tuple[int, float]]:
    """(step, ms per step over the interval since the previous train line)."""
    points = [(int(t["step"]), int(t["ms"])) for t in parse("train", run.log_text)]
    return [(s1, (t1 - t0) / (s1 - s0)) for (s0, t0), (s1, t1) in zip(points, points[1:]) if s1 > s0]


CURVE_FIELDS = ("step", "progress", "target", "kept_mean", "kept_min", "kept_max", "pool_mean")


def curriculum_curve(run) -> list[tuple[float, ...]]:
    """(step, progress, target, kept mean, kept min, kept max, pool mean) per curriculum line, either pool."""
    return [tuple(float(c[k]) for k in CURVE_FIELDS) for c in parse("curriculum", run.log_text)]


def tokens_per_step(run) -> float:
    return run.summary.get("tokens_seen", 0) / max(run.summary.get("steps", 1), 1)


def make_plots(arms, comparisons, out: Path, bar_nats: float) -> list[str]:
    """PNG files written into `out`; an empty list without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    colours = {a.name: f"C{i % 10}" for i, a in enumerate(arms)}
    made = []

    if comparisons:
        fig, ax = plt.subplots(figsize=(max(4.5, 2.2 * len(comparisons) + 2), 4.5))
        for i, c in enumerate(comparisons):
            d = c.overall
            diffs = [x[2] for x in d.per_seed]
            offsets = [(k - (len(diffs) - 1) / 2) * 0.06 for k in range(len(diffs))]
            ax.scatter([i + o for o in offsets], diffs, color=colours[c.arm.name], zorder=3, label="each seed" if i == 0 else None)
            if diffs:
                low, high = d.ci_nats
                if low == low:  # not NaN: a test ran
                    ax.errorbar([i + 0.3], [d.mean_nats], yerr=[[d.mean_nats - low], [high - d.mean_nats]], fmt="D",
                                color="black", capsize=5, label="mean, 95% CI" if i == 0 else None)
                else:
                    ax.scatter([i + 0.3], [d.mean_nats], marker="D", color="black")
        ax.axhline(0, color="grey", lw=1)
        ax.axhline(-bar_nats, color="red", ls="--", lw=1, label=f"the bar: {bar_nats} nats better")
        ax.set_xticks(range(len(comparisons)), [c.arm.name for c in comparisons], fontsize=7, rotation=10)
        ax.set(ylabel="Δ round-trip val_loss (nats), arm − baseline",
               title="Paired differences by seed\n(below zero: the arm is better)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
        made.append(_save(fig, out / "paired_differences.png"))

    fig, (by_tokens, by_time) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for a in arms:
        for k, r in enumerate(a.runs):
            curve, colour = val_curve(r), colours[a.name]
            label = f"{a.name} (n={len(a.runs)})" if k == 0 else None
            if curve:
                tps = tokens_per_step(r)
                by_tokens.plot([s * tps / 1e6 for s, _, _ in curve], [b for _, _, b in curve], color=colour, lw=0.8,
                               marker="o", ms=3, alpha=0.7, label=label)
                by_time.plot([t for _, t, _ in curve], [b for _, _, b in curve], color=colour, lw=0.8, marker="o",
                             ms=3, alpha=0.7)
            if "tokens_seen" in r.summary:  # a plain challenge log does not say
                by_tokens.scatter([r.summary["tokens_seen"] / 1e6], [r.summary["roundtrip_val_bpb"]], marker="*", s=70,
                                  color=colour, zorder=3,
                                  label="round-trip score (the test's)" if a is arms[0] and k == 0 else None)
            by_time.scatter([r.summary.get("train_time_ms", 0) / 1000], [r.summary["roundtrip_val_bpb"]], marker="*",
                            s=70, color=colour, zorder=3)
    by_tokens.set(xlabel="training tokens (millions)", ylabel="val_bpb", title="val_bpb against tokens (each seed)")
    by_time.set(xlabel="training time (s)", title="val_bpb against training time (each seed)")
    for ax in (by_tokens, by_time):
        ax.grid(alpha=0.3)
    if by_tokens.get_legend_handles_labels()[0]:  # plain challenge logs have no curves to name
        by_tokens.legend(fontsize=7)
    made.append(_save(fig, out / "val_bpb.png"))

    def each_seed(ax, points, label=lambda a: a.name) -> None:
        for a in arms:
            for k, r in enumerate(a.runs):
                xy = points(r)
                ax.plot([x for x, _ in xy], [y for _, y in xy], color=colours[a.name], lw=0.7, alpha=0.7,
                        label=label(a) if k == 0 else None)

    fig, ax = plt.subplots(figsize=(7, 4))
    each_seed(ax, train_curve)
    ax.set(xlabel="step", ylabel="train loss (nats)", title="Training loss (each seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    made.append(_save(fig, out / "train_loss.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    each_seed(ax, lambda r: [(s, ms) for s, ms in step_times(r) if s > SPIKE_STEPS],
              lambda a: f"{a.name}: step_avg {statistics.fmean(x.summary.get('step_avg_ms', 0) for x in a.runs):.1f} ms")
    ax.set_ylim(bottom=0)
    ax.set(xlabel="step", ylabel="ms per step (between train lines)",
           title=f"Step time (each seed; from 0, steps after {SPIKE_STEPS})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    made.append(_save(fig, out / "step_time.png"))

    curriculum = [(a, curriculum_curve(a.runs[0])) for a in arms if curriculum_curve(a.runs[0])]
    if curriculum:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
        for a, rows in curriculum:
            p, colour = [r[1] for r in rows], colours[a.name]
            ax1.plot(p, [r[2] for r in rows], color=colour, label=a.name)
            ax2.plot(p, [r[3] for r in rows], color=colour, label=f"{a.name}: kept mean")
            ax2.fill_between(p, [r[4] for r in rows], [r[5] for r in rows], alpha=0.2, color=colour)
            ax2.plot(p, [r[6] for r in rows], ls="--", color=colour, label=f"{a.name}: pool mean")
        ax1.set(ylabel="target percentile", title="The schedule and what it kept (first seed of each arm)")
        ax2.set(xlabel="training progress", ylabel="score; band: kept min–max")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        made.append(_save(fig, out / "curriculum_schedule.png"))
    return made


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path.name
