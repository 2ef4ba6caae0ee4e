"""tools/compare.py: parsing and grouping real runs, the statistics, every bad input."""
from __future__ import annotations

import copy
import json
import math
import shutil
import statistics
from pathlib import Path

import mpmath
import pytest

from tests.conftest import run_trainer, trainer_env
from tools import compare as cmp


@pytest.fixture(scope="module")
def real_logs(dataset, tmp_path_factory) -> Path:
    """Four real tiny runs: seeds 1 and 2, baseline and curriculum."""
    tmp = tmp_path_factory.mktemp("runs")
    for seed in (1, 2):
        for flag in ("0", "1"):
            env = trainer_env(dataset, tmp, SEED=seed, CURRICULUM=flag, RUN_ID=f"c{flag}-s{seed}", ITERATIONS=20,
                              VAL_LOSS_EVERY=10, CURRICULUM_LOG_EVERY=5, TRAIN_LOG_EVERY=5)
            out = run_trainer(env)
            assert out.returncode == 0, out.stderr[-2000:]
    return tmp / "logs"


def copy_runs(src: Path, dst: Path, names=None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.suffix in (".json", ".txt") and (names is None or p.stem in names):
            shutil.copy(p, dst)
    return dst


def test_groups_real_runs_into_a_baseline_and_a_curriculum_arm(real_logs, tmp_path):
    runs, problems = cmp.load_runs(real_logs)
    assert len(runs) == 4 and not problems
    arms = cmp.group_arms(runs)
    assert [a.name for a in arms] == ["baseline", "curriculum unigram_entropy/v peak=0.45 x2.0"]
    assert sorted(r.seed for r in arms[0].runs) == [1, 2] and sorted(r.seed for r in arms[1].runs) == [1, 2]
    base, why = cmp.find_baseline(arms[1], arms)
    assert base is arms[0] and why is None
    run = next(r for r in runs if r.run_id == "c1-s1")
    assert [s for s, _, _ in cmp.val_curve(run)] == [10, 20]
    assert len(cmp.curriculum_curve(run)) == 4 and cmp.curriculum_curve(run)[0][0] == 5
    assert [s for s, _ in cmp.step_times(run)] == [*range(2, 11), 15, 20]  # every step up to 10, then every 5


def test_report_has_tables_and_plots(real_logs, tmp_path):
    text, pairs = cmp.build_report(real_logs, tmp_path)
    assert (tmp_path / "report.md").read_text() == text
    assert "| baseline | 2 | " in text and "paired t (n=2, 2)" in text
    for png in ("val_bpb_vs_time.png", "curriculum_schedule.png", "step_time.png"):
        assert (tmp_path / png).stat().st_size > 5000 and f"![{png}]({png})" in text
    (arm, base, d), = pairs
    bpb = lambda a: statistics.fmean(r.summary["roundtrip_val_bpb"] for r in a.runs)  # noqa: E731
    assert d.mean_bpb == pytest.approx(bpb(arm) - bpb(base))
    assert "`CURRICULUM`" in text  # the setting that separates the arms is named


def t_two_sided(t: float, df: float) -> float:
    """Two-sided p of Student's t, from the regularised incomplete beta function."""
    return float(mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True))


def fake_arm(name, losses, seeds, curriculum):
    runs = [cmp.Run(f"{name}{s}", dict(settings=dict(SEED=s, CURRICULUM=curriculum), roundtrip_val_loss=v,
                                       roundtrip_val_bpb=v / math.log(2)), "") for v, s in zip(losses, seeds)]
    return cmp.Arm(name, (), runs)


def test_paired_test_matches_an_independent_computation():
    base = [2.010, 2.031, 2.002, 2.024, 2.017]
    arm = [2.001, 2.020, 1.999, 2.012, 2.014]
    d = cmp.compare_arms(fake_arm("c", arm, [1, 2, 3, 4, 5], True), fake_arm("b", base, [1, 2, 3, 4, 5], False))
    diffs = [a - b for a, b in zip(arm, base)]
    n, mean, sd = len(diffs), statistics.fmean(diffs), statistics.stdev(diffs)
    t = mean / (sd / math.sqrt(n))
    assert d.test == "paired t" and d.mean_nats == pytest.approx(mean)
    assert d.p_value == pytest.approx(t_two_sided(t, n - 1), rel=1e-6)
    q = float(mpmath.findroot(lambda x: mpmath.betainc(2, 0.5, 0, 4 / (4 + x * x), regularized=True) - 0.05, 2.7))
    assert d.ci_nats[0] == pytest.approx(mean - q * sd / math.sqrt(n), rel=1e-6)
    assert d.ci_nats[1] == pytest.approx(mean + q * sd / math.sqrt(n), rel=1e-6)
    t_bar = (mean + cmp.BAR_NATS) / (sd / math.sqrt(n))  # one-sided: is it better by more than the bar?
    one_sided = t_two_sided(t_bar, n - 1) / 2 if t_bar < 0 else 1 - t_two_sided(t_bar, n - 1) / 2
    assert d.p_bar == pytest.approx(one_sided, rel=1e-6)
    assert not d.clears_bar  # about 0.008 nats better, but five seeds are not enough for p < 0.01 on the bar


def test_welch_test_when_seeds_differ_matches_an_independent_computation():
    a, b = [1.90, 1.92, 1.91, 1.89], [2.00, 2.05, 1.98]
    d = cmp.compare_arms(fake_arm("c", a, [1, 2, 3, 4], True), fake_arm("b", b, [7, 8, 9], False))
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    assert d.test == "Welch t" and "unpaired" in d.note
    assert d.p_value == pytest.approx(t_two_sided(t, df), rel=1e-6)
    assert d.clears_bar == (d.p_bar < 0.01)


def test_too_few_runs_is_said_plainly():
    d = cmp.compare_arms(fake_arm("c", [1.9], [1], True), fake_arm("b", [2.0], [1], False))
    assert d.test == "none" and "too few runs" in d.note and math.isnan(d.p_value) and not d.clears_bar
    rows = cmp.difference_table([(fake_arm("c", [1.9], [1], True), fake_arm("b", [2.0], [1], False), d)])
    assert "n/a" in rows[-1] and "too few runs" in rows[-1]


def test_an_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(cmp.CompareError, match="no run summaries"):
        cmp.load_runs(tmp_path)
    assert cmp.main([str(tmp_path / "missing")]) == 2


def test_a_crashed_run_is_reported_and_left_out(real_logs, tmp_path):
    logs = copy_runs(real_logs, tmp_path / "logs")
    (logs / "c1-s2.json").unlink()  # its log stays: it crashed before writing the summary
    text, pairs = cmp.build_report(logs, tmp_path)
    assert "c1-s2.txt: a log without a summary" in text
    (arm, base, d), = pairs
    assert len(arm.runs) == 1 and d.test == "none" and "too few runs" in d.note  # 1 run cannot be tested


def test_runs_on_another_validation_set_or_tokenizer_are_never_pooled(real_logs, tmp_path):
    logs = copy_runs(real_logs, tmp_path / "logs")
    for run_id, field in (("c0-s2", "val_sha256"), ("c1-s2", "tokenizer_sha256")):
        path = logs / f"{run_id}.json"
        summary = json.loads(path.read_text())
        summary[field] = "0" * 64
        path.write_text(json.dumps(summary))
    runs, _ = cmp.load_runs(logs)
    arms = cmp.group_arms(runs)
    assert len(arms) == 4 and all(len(a.runs) == 1 for a in arms)  # nothing pooled
    text, pairs = cmp.build_report(logs, tmp_path)
    assert "another tokenizer or validation set" in text
    assert all(cmp.arm_key(base.runs[0])[-2:] == cmp.arm_key(arm.runs[0])[-2:] for arm, base, _ in pairs)


def test_a_curriculum_arm_without_a_matching_baseline_is_named(real_logs, tmp_path):
    logs = copy_runs(real_logs, tmp_path / "logs", names={"c1-s1", "c1-s2"})
    text, pairs = cmp.build_report(logs, tmp_path)
    assert not pairs and "no baseline run with the same settings" in text


def test_identical_arms_give_no_false_difference(real_logs):
    runs, _ = cmp.load_runs(real_logs)
    base = next(a for a in cmp.group_arms(runs) if a.is_baseline)
    twin = cmp.Arm("twin", base.key, [copy.deepcopy(r) for r in base.runs])
    d = cmp.compare_arms(twin, base)
    assert d.mean_nats == 0 and d.p_value == 1.0 and not d.clears_bar
