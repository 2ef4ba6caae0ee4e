"""Did an arm beat its baseline, by more than noise, on the same work?

    python -m tools.compare LOGS [--out REPORT_DIR] [--unpaired] [--devices-as-blocks] [--no-plots]

Reads every run summary in LOGS (tools/runs.py says which runs form an arm), matches each
curriculum arm with the baseline equal in every other setting and fingerprint, and writes
report.md (and plots, with matplotlib) to REPORT_DIR (default: LOGS). A LOGS folder whose
subfolders hold the runs (a record with several experiments) gets a section per subfolder, and
every comparison stays inside its own experiment.

The test is fixed in advance, never chosen by the input: a paired t-test over the seeds both
arms ran (scipy.stats.ttest_1samp on the per-seed differences). Every run without a partner
is named and left out. Welch's unpaired test runs only when asked (--unpaired), and the
report says so. Runs on different devices never pool into one arm, unless asked
(--devices-as-blocks, for an experiment that ran over several machines): then a run pairs only
with the runs of its own seed on its own device, and the report says so.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from scipy import optimize, stats

from curriculum.shards import write_atomic
from trainer.settings import check_writable_folder
from tools.runs import (FINGERPRINTS, Arm, CompareError, differing, find_baseline, finite, group_arms, load_runs,
                        pair_by_seed, seed_order)

BAR_NATS = 0.005  # the competition's bar: at least this much better, at p < 0.01
BAR_P = 0.01
PAIRED_WHY = ("paired t-test over the seeds both arms ran (scipy.stats.ttest_1samp on the per-seed differences): "
              "a seed fixes the initialisation, so pairing removes the seed-to-seed variation")
UNPAIRED_WHY = "Welch's unpaired t-test over all runs (scipy.stats.ttest_ind, equal_var=False), as asked with --unpaired"
BLOCKS_WHY = ("devices are blocks, as asked with --devices-as-blocks: runs of one arm on several devices pool, "
              "and a pair is two runs of one seed on one device (a seed is written `SEED on DEVICE`), so the "
              "device's own effect cancels in every difference")


# ------------------------------------------------------------------------- statistics


@dataclass
class Difference:
    test: str                  # "paired t", "Welch t" or "none"
    n: tuple[int, int]         # runs used from the arm and from the baseline
    mean_bpb: float            # arm - baseline (negative: the arm is better)
    mean_nats: float
    ci_nats: tuple[float, float]
    p_value: float             # two-sided: any difference
    p_bar: float               # one-sided: better by more than BAR_NATS
    per_seed: list[tuple] = field(default_factory=list)   # (seed, Δ bpb, Δ nats), paired only
    note: str = ""

    @property
    def clears_bar(self) -> bool:
        return self.test != "none" and self.mean_nats <= -BAR_NATS and self.p_bar < BAR_P


NAN = float("nan")


def difference(arm: dict, base: dict, unpaired: bool = False) -> Difference:
    """arm, base: {seed: (nats, bpb)}. Paired over the common seeds unless `unpaired`."""
    if unpaired:
        a, b = list(arm.values()), list(base.values())
        n = (len(a), len(b))
        mean_bpb = statistics.fmean(x[1] for x in a) - statistics.fmean(x[1] for x in b) if a and b else NAN
        mean_nats = statistics.fmean(x[0] for x in a) - statistics.fmean(x[0] for x in b) if a and b else NAN
        if min(n) < 2:
            return Difference("none", n, mean_bpb, mean_nats, (NAN, NAN), NAN, NAN,
                              note=f"too few runs for Welch's test (n = {n[0]} and {n[1]}; at least 2 each)")
        an, bn = [x[0] for x in a], [x[0] for x in b]
        test = stats.ttest_ind(an, bn, equal_var=False)
        bar = stats.ttest_ind(an, [x - BAR_NATS for x in bn], equal_var=False, alternative="less")
        ci = test.confidence_interval(0.95)
        return Difference("Welch t", n, mean_bpb, mean_nats, (ci.low, ci.high), test.pvalue, bar.pvalue,
                          note="unpaired, as asked")
    seeds = sorted(set(arm) & set(base), key=seed_order)
    per_seed = [(s, arm[s][1] - base[s][1], arm[s][0] - base[s][0]) for s in seeds]
    n = (len(seeds), len(seeds))
    mean_bpb = statistics.fmean(d[1] for d in per_seed) if per_seed else NAN
    mean_nats = statistics.fmean(d[2] for d in per_seed) if per_seed else NAN
    if len(seeds) < 2:
        return Difference("none", n, mean_bpb, mean_nats, (NAN, NAN), NAN, NAN, per_seed,
                          note=f"too few paired seeds for a test ({len(seeds)}; at least 2 are needed)")
    diffs = [d[2] for d in per_seed]
    if len(set(diffs)) == 1:  # no variance: the t statistic is undefined
        if diffs[0] == 0:
            return Difference("paired t", n, mean_bpb, mean_nats, (0.0, 0.0), 1.0, 1.0, per_seed,
                              note="identical results")
        return Difference("none", n, mean_bpb, mean_nats, (NAN, NAN), NAN, NAN, per_seed,
                          note="every seed differs by exactly the same amount: no variance, no test")
    test = stats.ttest_1samp(diffs, 0.0)
    bar = stats.ttest_1samp(diffs, -BAR_NATS, alternative="less")
    ci = test.confidence_interval(0.95)
    return Difference("paired t", n, mean_bpb, mean_nats, (ci.low, ci.high), test.pvalue, bar.pvalue, per_seed)


def scores(arm: Arm, val_set: str | None = None) -> dict:
    """{seed: (round-trip nats, round-trip bpb)} for the whole split or one of VAL_SETS."""
    out = {}
    for r in arm.runs:
        s = r.summary if val_set is None else (r.summary.get("val_sets") or {}).get(val_set)
        if isinstance(s, dict) and all(finite(s.get(k)) for k in ("roundtrip_val_loss", "roundtrip_val_bpb")):
            out[r.pair_key] = (s["roundtrip_val_loss"], s["roundtrip_val_bpb"])
    return out


@dataclass
class Comparison:
    arm: Arm
    base: Arm
    overall: Difference
    per_set: dict[str, Difference]


def val_set_names(arms: list[Arm]) -> list[str]:
    names = []
    for a in arms:
        for r in a.runs:
            names += [k for k in (r.summary.get("val_sets") or {}) if k not in names]
    return names


def compare(arm: Arm, base: Arm, sets: list[str], unpaired: bool) -> Comparison:
    return Comparison(arm, base, difference(scores(arm), scores(base), unpaired),
                      {name: difference(scores(arm, name), scores(base, name), unpaired) for name in sets})


# ------------------------------------------------------------------------- report tables


def fmt(values: list[float], digits: int = 4) -> str:
    values = [v for v in values if finite(v)]
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f}" if len(values) < 2 else f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _get(summary: dict, *path):
    for k in path:
        summary = summary.get(k) if isinstance(summary, dict) else None
    return summary


def arm_table(arms: list[Arm]) -> list[str]:
    cols = [("round-trip val_bpb", ("roundtrip_val_bpb",), 4), ("pre-quant val_bpb", ("val_bpb",), 4),
            ("steps", ("steps",), 1), ("tokens trained", ("tokens_seen",), 0), ("step_avg ms", ("step_avg_ms",), 2),
            ("data wait ms/step", ("data", "data_wait_ms_per_step"), 3), ("artifact bytes", ("artifact_bytes",), 0)]
    rows = ["| arm | runs | seeds | " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * (3 + len(cols))]
    for a in arms:
        cells = [fmt([_get(r.summary, *path) for r in a.runs], d) for _, path, d in cols]
        rows.append(f"| {a.name} | {len(a.runs)} | {', '.join(str(r.pair_key) for r in a.runs)} | " + " | ".join(cells) + " |")
    return rows


def _p(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.4g}"


def _ci(d: Difference) -> str:
    return "n/a" if math.isnan(d.ci_nats[0]) else f"[{d.ci_nats[0]:+.5f}, {d.ci_nats[1]:+.5f}]"


def difference_table(comparisons: list[Comparison]) -> list[str]:
    rows = ["| arm | vs | test | Δ val_bpb | Δ val_loss (nats) | 95% CI (nats) | p (two-sided) "
            f"| p (better by ≥ {BAR_NATS} nats) | clears the bar |", "|" + "---|" * 9]
    for c in comparisons:
        d = c.overall
        verdict = "yes" if d.clears_bar else "no"
        rows.append(f"| {c.arm.name} | {c.base.name} | {d.test} (n={d.n[0]}, {d.n[1]}) | {d.mean_bpb:+.5f} "
                    f"| {d.mean_nats:+.5f} | {_ci(d)} | {_p(d.p_value)} | {_p(d.p_bar)} "
                    f"| {verdict}{' — ' + d.note if d.note else ''} |")
    return rows


def per_seed_table(comparisons: list[Comparison]) -> list[str]:
    rows = ["| arm | seed | baseline val_bpb | arm val_bpb | Δ val_bpb | Δ nats |", "|" + "---|" * 6]
    for c in comparisons:
        a, b = scores(c.arm), scores(c.base)
        for seed, d_bpb, d_nats in c.overall.per_seed:
            rows.append(f"| {c.arm.name} | {seed} | {b[seed][1]:.4f} | {a[seed][1]:.4f} | {d_bpb:+.5f} | {d_nats:+.5f} |")
    return rows


POWER = 0.8  # the chance a real effect of the detectable size shows as significant


def detectable_effect(diffs: list[float], alpha: float, two_sided: bool) -> float:
    """The smallest true mean difference (in the diffs' unit) that a paired t-test over this many
    seeds finds at level `alpha` with probability POWER, if the seeds scatter as these did: the
    noncentrality at which the noncentral t passes the test's critical value with that chance,
    times sd / sqrt(n) (exact; the usual (t_a + t_b) sd / sqrt(n) promises 73-77% at 3 seeds).
    NaN below 3 seeds or with no spread."""
    n = len(diffs)
    if n < 3 or len(set(diffs)) == 1:
        return NAN
    df, sd = n - 1, statistics.stdev(diffs)
    crit = stats.t.ppf(1 - alpha / 2 if two_sided else 1 - alpha, df)

    def power(nc: float) -> float:
        below = stats.nct.cdf(-crit, df, nc) if two_sided else 0.0  # the wrong tail: tiny, NaN once it underflows
        return float(stats.nct.sf(crit, df, nc)) + (0.0 if math.isnan(below) else float(below))
    nc = optimize.brentq(lambda x: power(x) - POWER, 0.0, 30.0)
    return float(nc * sd / math.sqrt(n))


def detectable_table(comparisons: list[Comparison]) -> list[str]:
    """Per paired comparison: the spread of its per-seed differences and what the design can see."""
    rows = []
    for c in comparisons:
        diffs = [d[2] for d in c.overall.per_seed]
        mde = detectable_effect(diffs, 0.05, True) if c.overall.test == "paired t" else NAN
        if math.isnan(mde):  # Welch's test, or too few seeds or no spread
            continue
        bar = detectable_effect(diffs, BAR_P, False)
        rows.append(f"| {c.arm.name} | {len(diffs)} | {statistics.stdev(diffs):.5f} | {mde:.5f} "
                    f"| {BAR_NATS + bar:.5f} |")
    if not rows:
        return []
    return [f"What the design can detect (paired t over the seeds; power {POWER:.0%}; sd: of the per-seed Δ nats): "
            f"an effect smaller than the minimum detectable effect (MDE) is likely to be missed; the last column is "
            f"the true improvement that would clear the bar (≥ {BAR_NATS} nats better at p < {BAR_P}, one-sided) "
            f"with power {POWER:.0%}:", "",
            "| arm | seeds | sd (nats) | MDE at p < 0.05, two-sided (nats) | improvement that clears the bar (nats) |",
            "|---|---|---|---|---|", *rows]


def domain_tables(arms: list[Arm], comparisons: list[Comparison], sets: list[str]) -> list[str]:
    rows = ["Round-trip val_bpb per validation set (mean ± std over runs; tokens per set in brackets):", "",
            "| arm | " + " | ".join(f"{s} ({_set_tokens(arms, s):,})" for s in sets) + " |", "|" + "---|" * (1 + len(sets))]
    for a in arms:
        rows.append(f"| {a.name} | " + " | ".join(fmt([v[1] for v in scores(a, s).values()]) for s in sets) + " |")
    rows += ["", "Arm − baseline per validation set, paired by seed as above:", "",
             "| arm | set | test | Δ val_bpb | Δ nats | 95% CI (nats) | p (two-sided) |", "|" + "---|" * 7]
    for c in comparisons:
        for s, d in c.per_set.items():
            rows.append(f"| {c.arm.name} | {s} | {d.test} (n={d.n[0]}, {d.n[1]}) | {d.mean_bpb:+.5f} "
                        f"| {d.mean_nats:+.5f} | {_ci(d)} | {_p(d.p_value)}{' — ' + d.note if d.note else ''} |")
    return rows


def mix_table(arms: list[Arm]) -> list[str]:
    """Each arm's share of rows per domain, as read and as trained on (the loader's counts, summed
    over its runs): what a selection did to the mixture. Empty when no run recorded domains."""
    names = []
    for a in arms:
        for r in a.runs:
            names += [n for n in (_get(r.summary, "data", "domain_names") or []) if n not in names]
    if not names:
        return []

    def shares(a: Arm, key: str) -> str:
        totals = dict.fromkeys(names, 0)
        for r in a.runs:
            for n, c in zip(_get(r.summary, "data", "domain_names") or [], _get(r.summary, "data", key) or []):
                totals[n] += c
        total = sum(totals.values())
        return " | ".join(f"{totals[n] / total:.3f}" if total else "n/a" for n in names)
    rows = ["Share of rows per domain (or phases dataset), read from the stream and trained on, over each arm's runs:", "",
            "| arm | " + " | ".join(f"read {n}" for n in names) + " | " + " | ".join(f"trained {n}" for n in names) + " |",
            "|" + "---|" * (1 + 2 * len(names))]
    rows += [f"| {a.name} | {shares(a, 'read_domain_counts')} | {shares(a, 'trained_domain_counts')} |" for a in arms]
    return rows


QUARTERS = 4


def mix_by_quarter_table(arms: list[Arm]) -> list[str]:
    """The share of trained rows per domain in each quarter of the run (the loader's windows,
    placed by the step each ends at, summed over an arm's runs). A schedule moves the mix over
    time: a whole-run share close to the stream's can hide a quarter spent on one domain, and the
    last quarter is where the learning rate falls. Empty when no run recorded windows."""
    names, per_arm = [], []
    for a in arms:
        quarters = [dict() for _ in range(QUARTERS)]
        for r in a.runs:
            data, steps = r.summary.get("data") or {}, r.summary.get("steps")
            if not isinstance(steps, int) or steps < 1:
                continue
            for w in data.get("mix_windows") or []:
                q = min(QUARTERS - 1, max(0, math.ceil(QUARTERS * w["step"] / steps) - 1))
                for n, c in zip(data.get("domain_names") or [], w["trained"]):
                    quarters[q][n] = quarters[q].get(n, 0) + c
                    names += [n] if n not in names else []
        if any(quarters):
            per_arm.append((a, quarters))
    if not per_arm:
        return []
    rows = ["Share of trained rows per domain in each quarter of the run (by steps, over each arm's runs):", "",
            "| arm | quarter | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    for a, quarters in per_arm:
        for q, counts in enumerate(quarters, 1):
            total = sum(counts.values())
            rows.append(f"| {a.name} | {q} | " + " | ".join(f"{counts.get(n, 0) / total:.3f}" if total else "n/a"
                                                        for n in names) + " |")
    return rows


def mix_weights_table(arms: list[Arm]) -> list[str]:
    """MIX arms: the blend's weights in effect at the end of each quarter of the run (the last
    update before it; the start weights before any), averaged over an arm's runs, to read beside
    the trained mix above. Empty when no run mixed datasets."""
    rows, names = [], None
    for a in arms:
        quarters = [[] for _ in range(QUARTERS)]
        for r in a.runs:
            mix, steps = _get(r.summary, "data", "mix"), r.summary.get("steps")
            if not isinstance(mix, dict) or not isinstance(steps, int) or steps < 1:
                continue
            names = names or mix.get("datasets")
            for q in range(QUARTERS):
                weights = mix.get("start_weights")
                for u in mix.get("updates") or []:
                    if u["step"] <= (q + 1) * steps / QUARTERS:
                        weights = u["weights"]
                quarters[q].append(weights)
        if any(quarters):
            mode = a.canonical.get("MIX")
            for q, ws in enumerate(quarters, 1):
                if ws:
                    mean = [sum(w[i] for w in ws) / len(ws) for i in range(len(ws[0]))]
                    rows.append(f"| {a.name} | {mode} | {q} | " + " | ".join(f"{x:.3f}" for x in mean) + " |")
    if not rows:
        return []
    return ["The mixer's weights at the end of each quarter of the run (MIX arms, the mean over each arm's runs; "
            "the trained shares are in the tables above):", "",
            "| arm | MIX | quarter | " + " | ".join(names) + " |", "|" + "---|" * (3 + len(names)), *rows]


def order_difficulty_table(arms: list[Arm]) -> list[str]:
    """DATA_ORDER=curriculum arms: what each quarter of the run drew from. The band is the share
    of the index's rank order (easiest first) open to draws, its ends averaged over the quarter's
    log windows (a warmup over the first fifth opens it within the first quarter); the score is the
    mean signal of the rows drawn in the quarter (the windows' means weighted by their draws); the
    last column is the most times any row was read in one pass (1: no row twice). Averaged over an
    arm's runs. Empty when no run drew from an index."""
    rows = []
    for a in arms:
        quarters = [dict(lo=[], hi=[], score=0.0, draws=0) for _ in range(QUARTERS)]
        signal, most_reads = None, 0
        for r in a.runs:
            order, steps = _get(r.summary, "data", "order"), r.summary.get("steps")
            if not isinstance(order, dict) or not isinstance(steps, int) or steps < 1:
                continue
            signal = (order.get("config") or {}).get("score", signal)
            most_reads = max(most_reads, order.get("max_reads_in_a_pass") or 0)
            last = 0
            for w in order.get("windows") or []:
                q = min(QUARTERS - 1, max(0, math.ceil(QUARTERS * w["step"] / steps) - 1))
                quarters[q]["score"] += w["score_mean"] * (w["step"] - last)
                quarters[q]["draws"] += w["step"] - last
                quarters[q]["lo"].append(w["band_lo"])
                quarters[q]["hi"].append(w["band_hi"])
                last = w["step"]
        for q, c in enumerate(quarters, 1):
            if c["draws"]:  # every window adds to draws and to the band's ends alike
                band = f"[{sum(c['lo']) / len(c['lo']):.2f}, {sum(c['hi']) / len(c['hi']):.2f}]"
                rows.append(f"| {a.name} | {signal} | {q} | {band} | {c['score'] / c['draws']:.4f} | {most_reads} |")
    if not rows:
        return []
    return ["The difficulty each whole-run order drew from, by quarter of the run (DATA_ORDER=curriculum arms, over "
            "each arm's runs; band: the share of the index's rank order, easiest first, open to draws, averaged over the "
            "quarter's log windows):",
            "", "| arm | signal | quarter | band | mean score drawn | most reads of a row in a pass |",
            "|---|---|---|---|---|---|", *rows]


def _set_tokens(arms: list[Arm], name: str) -> int:
    return max((_get(r.summary, "val_sets", name, "tokens") or 0 for a in arms for r in a.runs), default=0)


def mode_line(arms: list[Arm]) -> str:
    modes = set()
    for a in arms:
        k = a.canonical
        cap = float(k.get("MAX_WALLCLOCK_SECONDS", 0))
        modes.add(f"same wallclock: {cap:g} s of training per run (MAX_WALLCLOCK_SECONDS)" if cap > 0 else
                  f"step-matched: {float(k.get('ITERATIONS', 'nan')):g} steps per run, no wallclock cap")
    return "; ".join(sorted(modes))


def provenance_block(arms: list[Arm]) -> list[str]:
    runs = [r for a in arms for r in a.runs]

    def values(get) -> str:
        seen = []
        for r in runs:
            v = get(r)
            if v not in seen:
                seen.append(v)
        return ", ".join(str(v) for v in seen)
    started = sorted(str(r.provenance.get("started_utc")) for r in runs if r.provenance.get("started_utc"))
    plain = sum(bool(r.summary.get("plain_log")) for r in runs)
    return [
        f"- mode: {mode_line(arms)}",
        f"- logs: {len(runs) - plain} train_gpt.py summaries, {plain} plain challenge logs"
        + (" (a plain challenge log gives settings from its logged environment and its script's hash as the code; "
           "no device, torch or data fingerprints)" if plain else ""),
        f"- seeds: {values(lambda r: r.seed)}",
        f"- code (sha256 of the artifact code: train_gpt.py, curriculum/, trainer/): {values(lambda r: (r.provenance.get('code_sha256') or 'unknown')[:16])}"
        if not plain else
        f"- code (sha256 of each plain log's script source; of train_gpt.py, curriculum/, trainer/ for summaries): "
        f"{values(lambda r: (r.provenance.get('code_sha256') or 'unknown')[:16])}; the curriculum modules a plain "
        f"log's script imported: {values(lambda r: (r.provenance.get('plugin_code_sha256') or 'none')[:16] if r.summary.get('plain_log') else 'all')}",
        f"- git commit: {values(lambda r: r.provenance.get('git_commit') or 'unknown')}",
        f"- torch: {values(lambda r: r.provenance.get('torch') or 'unknown')}; python: "
        f"{values(lambda r: r.provenance.get('python') or 'unknown')}",
        f"- device: {values(lambda r: r.provenance.get('device_name') or r.summary.get('device'))}; "
        f"threads: {values(lambda r: r.provenance.get('threads'))}; world size: {values(lambda r: r.summary.get('world_size'))}",
        f"- hosts: {values(lambda r: r.provenance.get('host') or 'unknown')}",
        f"- started (UTC): {started[0] + ' to ' + started[-1] if started else 'unknown'}",
        f"- training data (sha256 of shard names, sizes, headers, first and last MiB): "
        f"{values(lambda r: (r.provenance.get('train_data_sha256') or 'unknown')[:16])}; corpus fingerprint: "
        f"{values(lambda r: r.provenance.get('corpus_fingerprint') or 'none')}",
        f"- validation tokens (sha256): {values(lambda r: (r.summary.get('val_sha256') or '')[:16] or 'unknown')}, "
        f"{values(lambda r: r.summary.get('val_tokens') or 'unknown')} tokens"
        + (" (a plain challenge log does not record them)" if plain else ""),
    ]


def experiment_folders(folder: Path) -> list[Path] | None:
    """The experiments of a record's logs folder (one subfolder each, in name order), or None
    when the folder holds runs itself. A folder holding both is refused: which runs would form
    which comparison would be a guess."""
    if not folder.is_dir():
        raise CompareError(f"{folder}: no such folder")
    def run_files(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix in (".json", ".txt"))
    own = run_files(folder)
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and run_files(p))
    if own and subs:
        raise CompareError(f"{folder}: holds run files ({own[0].name}, ...) and experiment folders "
                           f"({', '.join(p.name for p in subs)}); keep the runs of each experiment in its own folder")
    return subs or None


def report_body(folder: Path, out: Path, unpaired: bool, level: int = 2, plot_prefix: str = "",
                devices_as_blocks: bool = False, draw: bool = True) -> tuple[list[str], list[Comparison]]:
    """One experiment's sections, headed at `level`: its provenance, arms, tests, domains,
    mixture, what was left out, plots and differing settings."""
    runs, failed, problems = load_runs(folder, devices_as_blocks)
    arms = group_arms(runs)
    sets = val_set_names(arms)
    comparisons, unmatched = [], []
    for arm in arms:
        if arm.is_baseline:
            continue
        base, why = find_baseline(arm, arms)
        if base is None and not arm.canonical["CURRICULUM"]:
            continue  # phases without a filter and no plain baseline: the reference of the filtered arms
        if base is None:
            unmatched.append(why)
            continue
        if not unpaired:
            unmatched += pair_by_seed(arm, base)[1]
        comparisons.append(compare(arm, base, sets, unpaired))
    out.mkdir(parents=True, exist_ok=True)
    plots = None
    if draw:  # matplotlib takes nine tenths of a report's time
        from tools.plots import make_plots
        plots = make_plots(arms, comparisons, out, BAR_NATS)
    h = "#" * level
    lines = [f"{len(runs)} runs in {len(arms)} arms.", "",
             f"{h} Provenance", "", *provenance_block(arms), "",
             f"{h} Arms (mean ± std over runs)", "", *arm_table(arms), "", f"{h} Against the baseline", ""]
    if comparisons:
        lines += difference_table(comparisons)
        if not unpaired:
            lines += ["", "Per seed (round-trip val_bpb):", "", *per_seed_table(comparisons)]
            detectable = detectable_table(comparisons)
            lines += ["", *detectable] if detectable else []
    else:
        lines += ["No curriculum arm has a matching baseline."]
    if sets:
        lines += ["", f"{h} Per validation set (VAL_SETS, or the domains of VAL_DOMAINS)", "", *domain_tables(arms, comparisons, sets)]
    mix = mix_table(arms)
    if mix:
        lines += ["", f"{h} The mixture each arm trained on", "", *mix]
        by_quarter = mix_by_quarter_table(arms)
        lines += ["", *by_quarter] if by_quarter else []
        weights = mix_weights_table(arms)
        lines += ["", *weights] if weights else []
        difficulty = order_difficulty_table(arms)
        lines += ["", *difficulty] if difficulty else []
    split = {f"{a.name.rsplit(' #', 1)[0]}: runs not pooled because they differ in {', '.join(a.separated_by)}"
             for a in arms if a.separated_by}
    left_out = [f"failed: {m}" for m in failed] + problems + sorted(split) + unmatched
    if left_out:
        lines += ["", f"{h} Left out or not compared", ""] + [f"- {m}" for m in left_out]
    lines += ["", f"{h} Plots", ""]
    if not draw:
        lines += ["Not drawn (--no-plots)."]
    else:
        lines += [f"![{p}]({plot_prefix}{p})" for p in plots] if plots else \
            ["matplotlib is not installed (`make extras`): no plots."]
    lines += ["", f"{h} Settings and fingerprints that differ between arms", ""]
    diff = differing(arms)
    lines += [f"- `{k}`{' (fingerprint)' if k in FINGERPRINTS else ''}: "
              + "; ".join(f"{a.name}: {v}" for a, v in zip(arms, values)) for k, values in diff.items()] or ["- none"]
    return lines, comparisons


def build_report(folder: Path, out: Path, unpaired: bool = False,
                 devices_as_blocks: bool = False, draw: bool = True) -> tuple[str, list[Comparison]]:
    """report.md for a folder of runs, or for a folder of experiments (a section each, its plots
    in a subfolder of `out` of the same name): every comparison is made inside one experiment."""
    intro = [f"Differences are arm − baseline on the round-trip (int6+zstd) score: negative is better. "
             f"The competition's bar is {BAR_NATS} nats better at p < {BAR_P}.", "",
             f"Test: {UNPAIRED_WHY if unpaired else PAIRED_WHY}"
             + (f"; {BLOCKS_WHY}" if devices_as_blocks else "") + ".", ""]
    experiments = experiment_folders(folder)
    if experiments is None:
        body, comparisons = report_body(folder, out, unpaired, devices_as_blocks=devices_as_blocks, draw=draw)
        lines = [f"# Arms against their baseline: {folder.name}", "", *intro, *body]
    else:
        lines = [f"# Experiments, each arm against its own experiment's baseline: {folder.name}", "", *intro,
                 "Experiments: " + ", ".join(p.name for p in experiments) + ".", ""]
        comparisons = []
        for sub in experiments:
            body, found = report_body(sub, out / sub.name, unpaired, level=3, plot_prefix=f"{sub.name}/",
                                      devices_as_blocks=devices_as_blocks, draw=draw)
            lines += [f"## {sub.name}", "", *body, ""]
            comparisons += found
    text = "\n".join(lines).rstrip("\n") + "\n"
    write_atomic(out / "report.md", text.encode())
    return text, comparisons


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", type=Path, help="folder of train_gpt.py logs (*.json summaries, *.txt logs) or of plain "
                                            "challenge-format logs from any script, or of such folders, one per experiment")
    ap.add_argument("--out", type=Path, help="where report.md and the plots go (default: beside the logs, never among "
                                             "them: the folder above a folder named logs, else LOGS_report)")
    ap.add_argument("--unpaired", action="store_true", help="Welch's test over all runs instead of pairing by seed")
    ap.add_argument("--devices-as-blocks", action="store_true",
                    help="for an experiment run over several machines: runs on different devices pool into one "
                         "arm, and a run pairs only with its seed's runs on its own device")
    ap.add_argument("--no-plots", action="store_true",
                    help="the tables only, no plots (drawing them is nine tenths of a report's time)")
    args = ap.parse_args(argv)
    return write_report(args.logs, args.out or default_out(args.logs), "compare", args.unpaired,
                        args.devices_as_blocks, draw=not args.no_plots)


def default_out(logs: Path) -> Path:
    """Beside the logs: an experiment's folder above its logs/, else a sibling LOGS_report."""
    logs = Path(logs)
    return logs.resolve().parent if logs.name == "logs" else logs.with_name(logs.name + "_report")


def check_out(out: Path) -> None:
    """--out must be a folder this user can write, or one that can be made: checked before any work."""
    problems = check_writable_folder(str(out), "--out")
    if problems:
        raise CompareError(problems[0])


def write_report(logs: Path, out: Path, who: str, unpaired: bool = False, devices_as_blocks: bool = False,
                 draw: bool = True) -> int:
    """Build the report and print it, or say why it cannot be built: a command's exit status."""
    try:
        check_out(out)
        text, _ = build_report(logs, out, unpaired, devices_as_blocks, draw)
    except CompareError as e:
        print(f"{who}: {e}", file=sys.stderr)
        return 2
    print(text)
    print(f"{who}: report written to {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
