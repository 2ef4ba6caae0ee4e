"""tools/compare.py: the test it runs, verdicts that never flip on ordinary input, no traceback
for any bad input, the report from real runs, and every committed record re-derived."""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import statistics
from pathlib import Path

import mpmath
import pytest

from tests.conftest import ROOT, run_trainer, trainer_env
from tests.helpers_runs import RECORD, changed, record_runs, summary, write_runs
from tools import compare as cmp

# its module fixture is real runs: one pytest worker builds it once (make test runs -n auto --dist loadgroup)
pytestmark = pytest.mark.xdist_group("compare_real_runs")


def verdict_row(text: str) -> str:
    """The arm's row of the 'Against the baseline' table."""
    return next(line for line in text.splitlines() if line.startswith("| curriculum") and " t (n=" in line
                and "| docs |" not in line)


# ------------------------------------------------------------------------- the first record's numbers


def test_the_record_reads_paired_and_does_not_clear_the_bar(tmp_path):
    text, (c,) = cmp.build_report(write_runs(tmp_path / "logs", record_runs()), tmp_path, draw=False)
    d = c.overall
    assert d.test == "paired t" and d.n == (3, 3) and not d.clears_bar
    assert d.mean_bpb == pytest.approx(statistics.fmean(cur - base for base, cur in RECORD.values()))
    assert d.p_value == pytest.approx(0.050, abs=0.001)
    assert "| no |" in verdict_row(text)
    assert [s for s, _, _ in d.per_seed] == [1337, 1338, 1339]
    assert "| curriculum unigram_entropy/v peak=0.45 x2 | 1338 | 2.3148 | 2.2159 | -0.09890 |" in text


def crashed_curriculum_seed(runs):
    del runs["c1-s1339"]  # its log stays: it crashed before writing the summary
    return runs, ["c1-s1339.txt: a log without a summary", "c0-s1339.json (seed 1339) has no partner"]


def extra_baseline_seed(runs):
    runs["c0-s1340"] = summary(1340, False, 2.30)
    return runs, ["c0-s1340.json (seed 1340) has no partner"]


def other_tokenizer_for_one_baseline(runs):
    runs["c0-s1338"]["tokenizer_sha256"] = "u" * 64
    return runs, ["baseline: runs not pooled because they differ in tokenizer",
                  "c1-s1338.json (seed 1338) has no partner"]


@pytest.mark.parametrize("perturb", [crashed_curriculum_seed, extra_baseline_seed, other_tokenizer_for_one_baseline])
def test_ordinary_input_never_switches_the_test(tmp_path, perturb):
    """Each of these read 'clears the bar: yes' through a silent switch to Welch's test."""
    runs, named = perturb(record_runs())
    folder = write_runs(tmp_path / "logs", runs)
    if perturb is crashed_curriculum_seed:
        (folder / "c1-s1339.txt").write_text("step:1/100000 train_loss:6.9312 train_time:350ms step_avg:350.00ms\n")
    text, comparisons = cmp.build_report(folder, tmp_path, draw=False)
    d = next(c.overall for c in comparisons if len(c.base.runs) > 1)
    assert d.test == "paired t" and not d.clears_bar and "Welch" not in text
    assert "| no" in verdict_row(text)
    for message in named:
        assert message in text


@pytest.mark.parametrize("how", ["copy", "re-run"])
def test_a_seed_twice_in_an_arm_is_an_error_not_an_average(tmp_path, capsys, how):
    runs = record_runs()
    runs["c1-s1338-b"] = runs["c1-s1338"] if how == "copy" else summary(1338, True, 2.25)
    assert cmp.main(["--no-plots", str(write_runs(tmp_path / "logs", runs))]) == 2
    err = capsys.readouterr().err
    assert "seed 1338 in c1-s1338-b.json, c1-s1338.json" in err and "Traceback" not in err


def test_unpaired_only_when_asked_and_the_report_says_so(tmp_path):
    runs = record_runs()
    del runs["c1-s1339"]
    text, (c,) = cmp.build_report(write_runs(tmp_path / "logs", runs), tmp_path, unpaired=True, draw=False)
    assert c.overall.test == "Welch t" and c.overall.n == (2, 3)
    assert "Welch's unpaired t-test over all runs" in text and "as asked with --unpaired" in text


def test_devices_as_blocks_pool_an_experiment_over_two_machines_and_pair_only_within_one(tmp_path, capsys):
    """Seeds 1337-1339 on the EPYC (the record's), 1340-1341 on a Xeon, and seed 1340's curriculum
    run again on the EPYC without its partner: by default the device splits every arm; as blocks
    there are five pairs, each within one machine, and the partnerless run is named."""
    runs = record_runs()
    xeon = {1340: (2.41, 2.36), 1341: (2.38, 2.35)}  # a machine that scores 0.1 higher: the pairs cancel it
    for seed, (base, cur) in xeon.items():
        for flag, bpb in ((0, base), (1, cur)):
            runs[f"c{flag}-s{seed}"] = summary(seed, bool(flag), bpb)
            runs[f"c{flag}-s{seed}"]["provenance"]["device_name"] = "Intel Xeon"
    runs["c1-s1340-epyc"] = summary(1340, True, 2.2)
    folder = write_runs(tmp_path / "logs", runs)
    split_text, split = cmp.build_report(folder, tmp_path / "split", draw=False)
    assert "runs not pooled because they differ in device" in split_text and all(c.overall.n[0] <= 3 for c in split)
    text, (c,) = cmp.build_report(folder, tmp_path / "blocks", devices_as_blocks=True, draw=False)
    expected = [cur - base for base, cur in RECORD.values()] + [cur - base for base, cur in xeon.values()]
    assert c.overall.n == (5, 5) and c.overall.mean_bpb == pytest.approx(statistics.fmean(expected))
    assert [d[0] for d in c.overall.per_seed] == [f"{s} on AMD EPYC" for s in RECORD] + ["1340 on Intel Xeon", "1341 on Intel Xeon"]
    assert "c1-s1340-epyc.json (seed 1340 on AMD EPYC) has no partner" in text
    assert "devices are blocks, as asked with --devices-as-blocks" in text
    assert cmp.main(["--no-plots", str(folder), "--out", str(tmp_path / "cli"), "--devices-as-blocks"]) == 0
    assert table_lines((tmp_path / "cli" / "report.md").read_text()) == table_lines(text)


def test_a_folder_of_experiments_compares_each_inside_itself(tmp_path):
    """A record with several experiments: a section each, and no arm ever meets another
    experiment's baseline, even one that would match it."""
    logs = tmp_path / "logs"
    write_runs(logs / "1_first", record_runs())
    second = {k: v for k, v in record_runs().items() if k.startswith("c1")}  # its baselines crashed
    write_runs(logs / "2_second", second)
    (logs / "2_second" / "c0-s1337.txt").write_text("step:1/430 train_loss:6.9\n")
    text, comparisons = cmp.build_report(logs, tmp_path / "report")
    assert len(comparisons) == 1 and all(r.path.parent.name == "1_first" for r in comparisons[0].base.runs)
    first, second_part = text.split("## 2_second")
    assert "## 1_first" in first and verdict_row(first)
    assert "no baseline run (CURRICULUM=0) in the folder" in second_part
    assert "c0-s1337.txt: a log without a summary" in second_part and "c0-s1337.txt" not in first
    assert (tmp_path / "report" / "1_first" / "paired_differences.png").exists()
    assert "](1_first/paired_differences.png)" in first
    assert (tmp_path / "report" / "report.md").read_text() == text


# ------------------------------------------------------------------------- bad input: one line, never a traceback


def bad_folders(tmp_path) -> dict[str, tuple[Path, str]]:
    out = {}

    def make(name, runs, extra=None):
        folder = write_runs(tmp_path / name, runs)
        for file, text in (extra or {}).items():
            (folder / file).write_text(text)
        return folder

    out["nan result"] = (make("nan", changed(record_runs(), "c1-s1338", ("roundtrip_val_bpb",), float("nan"))),
                         "c1-s1338.json (seed 1338): roundtrip_val_bpb=nan: the run failed")
    out["inf result"] = (make("inf", changed(record_runs(), "c0-s1337", ("roundtrip_val_loss",), float("inf"))),
                         "c0-s1337.json (seed 1337): roundtrip_val_loss=inf: the run failed")
    no_id = record_runs()
    del no_id["c0-s1338"]["run_id"]
    out["no run_id"] = (make("noid", no_id), "c0-s1338.json: not a train_gpt.py run summary (no run_id)")
    no_data = record_runs()
    for s in no_data.values():
        del s["data"]
    out["no data"] = (make("nodata", no_data), "| baseline | 3 | 1337, 1338, 1339 |")
    out["corrupt json"] = (make("corrupt", record_runs(), {"c1-s1340.json": '{"run_id": "c1-s1340", "sett',
                                                           "c1-s1340.txt": "step:1/10"}), "c1-s1340.json: not a readable JSON file")
    out["foreign json"] = (make("foreign", record_runs(), {"bench.json": "[1, 2, 3]"}),
                           "bench.json: not a train_gpt.py run summary")
    folder_json = make("folderjson", record_runs())
    (folder_json / "c1-s1341.json").mkdir()
    out["a folder named .json"] = (folder_json, "c1-s1341.json: not a readable JSON file (IsADirectoryError")
    out["provenance a string"] = (make("provstr", changed(record_runs(), "c1-s1338", ("provenance",), "abc")),
                                  "c1-s1338.json: a damaged run summary (provenance is a str, not an object)")
    out["seed a list"] = (make("seedlist", changed(record_runs(), "c1-s1338", ("settings", "SEED"), [1, 2])),
                          "c1-s1338.json: a damaged run summary (settings SEED=[1, 2] is not a single value)")
    out["curriculum null"] = (make("curnull", changed(record_runs(), "c1-s1338", ("settings", "CURRICULUM"), None)),
                              "settings CURRICULUM=None is not a single value")
    out["val_sets a list"] = (make("valsets", changed(record_runs(), "c1-s1338", ("val_sets",), [1])),
                              "val_sets is a list, not an object")
    out["plain log with nan"] = (make("plainnan", record_runs(), {"p-s7.txt": "SEED=7\nCURRICULUM=0\nstep:1/1 val_loss:1 "
                                 "val_bpb:1 train_time:1ms\nfinal_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan\n"}),
                                 "p-s7.txt: the final score is not a finite number: the run failed")
    out["summary lost"] = (make("lost", record_runs(), {"c1-s1350.txt": "code\nsettings: {\"SEED\": 1350}\n"
                                                       "final_int6_zstd_roundtrip_exact val_loss:2.0 val_bpb:1.5\n"}),
                           "c1-s1350.txt: a train_gpt.py log whose summary c1-s1350.json is missing")
    out["only failed runs"] = (make("allnan", {"c0-s1": summary(1, False, float("nan"))}),
                               "no usable run summaries")
    out["empty folder"] = (make("empty", {}), "no usable run summaries")
    out["missing folder"] = (tmp_path / "nowhere", "no such folder")
    mixed = make("mixed", record_runs())
    write_runs(mixed / "second_experiment", record_runs())
    out["runs beside experiments"] = (mixed, "holds run files (c0-s1337.json, ...) and experiment folders "
                                             "(second_experiment)")
    return out


@pytest.mark.parametrize("case", ["nan result", "inf result", "no run_id", "no data", "corrupt json", "foreign json",
                                  "only failed runs", "empty folder", "missing folder",
                                  "runs beside experiments", "a folder named .json", "provenance a string",
                                  "seed a list", "curriculum null", "val_sets a list", "plain log with nan",
                                  "summary lost"])
def test_bad_input_is_named_never_raised(tmp_path, capsys, case):
    folder, message = bad_folders(tmp_path)[case]
    status = cmp.main(["--no-plots", str(folder), "--out", str(tmp_path / "report")])
    out = capsys.readouterr()
    assert status in (0, 2) and "Traceback" not in out.out + out.err
    assert message in out.out + out.err
    if case == "corrupt json":  # once, not also as a crashed run
        assert (out.out + out.err).count("c1-s1340") == 1


def test_an_out_that_is_a_file_or_unwritable_is_named_before_any_work(tmp_path, capsys):
    folder = write_runs(tmp_path / "runs", record_runs())
    (tmp_path / "a_file").write_text("x")
    for out, message in ((tmp_path / "a_file", "is a file; must be a folder"),
                         (tmp_path / "a_file" / "sub", "is a file, so the folder cannot be made")):
        assert cmp.main(["--no-plots", str(folder), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


# ------------------------------------------------------------------------- statistics, independently


def t_two_sided(t: float, df: float) -> float:
    """Two-sided p of Student's t, from the regularised incomplete beta function."""
    return float(mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True))


def by_seed(losses, seeds):
    return {s: (v, v / math.log(2)) for v, s in zip(losses, seeds)}


def test_paired_test_matches_an_independent_computation():
    base = [2.010, 2.031, 2.002, 2.024, 2.017]
    arm = [2.001, 2.020, 1.999, 2.012, 2.014]
    d = cmp.difference(by_seed(arm, range(1, 6)), by_seed(base, range(1, 6)))
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


def test_welch_test_matches_an_independent_computation():
    a, b = [1.90, 1.92, 1.91, 1.89], [2.00, 2.05, 1.98]
    d = cmp.difference(by_seed(a, [1, 2, 3, 4]), by_seed(b, [7, 8, 9]), unpaired=True)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    assert d.test == "Welch t" and d.p_value == pytest.approx(t_two_sided(t, df), rel=1e-6)
    assert d.clears_bar == (d.p_bar < 0.01)


def test_too_few_pairs_and_degenerate_differences_are_said_plainly():
    d = cmp.difference(by_seed([1.9, 1.8], [1, 2]), by_seed([2.0, 2.1], [1, 3]))
    assert d.test == "none" and "too few paired seeds" in d.note and math.isnan(d.p_value) and not d.clears_bar
    same = cmp.difference(by_seed([1.9, 1.8], [1, 2]), by_seed([1.9, 1.8], [1, 2]))
    assert same.test == "paired t" and same.p_value == 1.0 and same.note == "identical results"
    shifted = cmp.difference(by_seed([1.5, 1.75], [1, 2]), by_seed([2.0, 2.25], [1, 2]))
    assert shifted.test == "none" and "exactly the same amount" in shifted.note


# ------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def real_logs(dataset, tmp_path_factory) -> Path:
    """Four real tiny runs: seeds 1 and 2, baseline and curriculum, with per-domain sets."""
    tmp = tmp_path_factory.mktemp("runs")
    folders = dataset["folders"]
    val_sets = ",".join(f"{d}={folders[f'embedded_{d}_sp1024']}/*val_*.bin" for d in ("docs", "prose", "code"))
    for seed in (1, 2):
        for flag in ("0", "1"):
            env = trainer_env(dataset, tmp, SEED=seed, CURRICULUM=flag, RUN_ID=f"c{flag}-s{seed}", ITERATIONS=20,
                              VAL_LOSS_EVERY=10, CURRICULUM_LOG_EVERY=5, TRAIN_LOG_EVERY=5, VAL_SETS=val_sets)
            out = run_trainer(env)
            assert out.returncode == 0, out.stderr[-2000:]
    return tmp / "logs"


def test_report_from_real_runs_answers_the_question(real_logs, tmp_path):
    text, (c,) = cmp.build_report(real_logs, tmp_path)
    assert (tmp_path / "report.md").read_text() == text
    assert "| baseline | 2 | 1, 2 |" in text and "paired t (n=2, 2)" in text
    for png in ("paired_differences.png", "val_bpb.png", "train_loss.png", "step_time.png", "curriculum_schedule.png"):
        assert (tmp_path / png).stat().st_size > 5000 and f"![{png}]({png})" in text
    # per-domain: each arm's scores and the paired differences, set by set
    assert list(c.per_set) == ["docs", "prose", "code"]
    assert all(d.test == "paired t" and d.n == (2, 2) for d in c.per_set.values())
    rows = [line for line in text.splitlines() if re.match(r"\| curriculum .* \| (docs|prose|code) \| paired t", line)]
    assert len(rows) == 3
    # provenance: the real code hash, device and mode
    run = c.arm.runs[0]
    assert f"code (sha256 of the artifact code: train_gpt.py, curriculum/, trainer/): {run.provenance['code_sha256'][:16]}" in text
    assert f"device: {run.provenance['device_name']}" in text
    assert "mode: step-matched: 20 steps per run, no wallclock cap" in text
    assert "`CURRICULUM`" in text  # the setting that separates the arms is named
    # the mixture each arm read and trained on, from the loader's counts summed over its runs
    counts = {a: [json.loads(p.read_text())["data"] for p in sorted(real_logs.glob(f"c{f}-s*.json"))]
              for a, f in (("baseline", 0), ("curriculum", 1))}
    names = counts["baseline"][0]["domain_names"]
    for arm, data in counts.items():
        trained = [sum(d["trained_domain_counts"][i] for d in data) for i in range(len(names))]
        section = text.split("## The mixture each arm trained on")[1].split("\n## ")[0]
        row = next(line for line in section.splitlines() if line.startswith(f"| {arm}"))
        cells = [c.strip() for c in row.strip("| ").split("|")]
        assert cells[-len(names):] == [f"{t / sum(trained):.3f}" for t in trained]
    # and quarter by quarter: 20 steps, a window every 5, so each window is one quarter
    section = text.split("Share of trained rows per domain in each quarter")[1].split("\n## ")[0]
    for q in range(4):
        window = [sum(d["mix_windows"][q]["trained"][i] for d in counts["curriculum"]) for i in range(len(names))]
        row = next(line for line in section.splitlines() if line.startswith(f"| curriculum") and f"| {q + 1} |" in line)
        assert row.endswith(" | ".join(f"{t / sum(window):.3f}" for t in window) + " |")


def test_every_real_run_has_provenance_and_per_domain_scores(real_logs):
    s = json.loads((real_logs / "c1-s1.json").read_text())
    p = s["provenance"]
    assert len(p["code_sha256"]) == 64 and p["torch"] and p["device_name"] and p["threads"] >= 1
    assert p["train_data_sha256"] == json.loads((real_logs / "c0-s2.json").read_text())["provenance"]["train_data_sha256"]
    assert [Path(x["file"]).name for x in p["train_shards"]][0].endswith("_train_000000.bin")
    log = (real_logs / "c1-s1.txt").read_text()
    assert f'"code_sha256": "{p["code_sha256"]}"' in log
    for name, v in s["val_sets"].items():
        line = re.search(rf"^val_set:{name} tokens:(\d+) val_loss:[\d.]+ val_bpb:([\d.]+) "
                         rf"roundtrip_val_loss:[\d.]+ roundtrip_val_bpb:([\d.]+)$", log, re.M)
        assert int(line.group(1)) == v["tokens"] and float(line.group(3)) == pytest.approx(v["roundtrip_val_bpb"], abs=1e-8)


# ------------------------------------------------------------------------- committed records


RECORDS = sorted(p.parent for p in (ROOT / "records").glob("*/*/logs"))
RECORD3 = ROOT / "records" / "track_cpu_embedded" / "2026-12-02_DataPathMechanisms_CPU"  # ran over two machines


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


@pytest.mark.parametrize("record", RECORDS, ids=[r.name for r in RECORDS])
def test_every_committed_record_is_rederived_from_its_logs(record, tmp_path):
    """By the command its README gives, flags and all."""
    readme = (record / "README.md").read_text()
    command = re.search(rf"python -m tools\.compare \S*{re.escape(record.name)}/logs((?: --[a-z-]+)*)", readme)
    assert command, f"{record.name}: its README gives no python -m tools.compare command for its logs"
    flags = command.group(1).split()
    assert set(flags) <= {"--unpaired", "--devices-as-blocks"}
    text, _ = cmp.build_report(record / "logs", tmp_path, unpaired="--unpaired" in flags,
                               devices_as_blocks="--devices-as-blocks" in flags, draw=False)
    assert "Not drawn (--no-plots)." in text and not list(tmp_path.rglob("*.png"))  # the tables alone, fast
    committed = (record / "report.md").read_text()
    assert table_lines(text) == table_lines(committed)
    arm_rows = [line for line in table_lines(text) if line.startswith(("| baseline", "| curriculum"))]
    assert arm_rows and all(line in readme for line in arm_rows[:2])


def snapshot_sha256(folder: Path) -> str:
    """train_gpt.code_sha256's definition, applied to a record's copy of the code."""
    files = [folder / "train_gpt.py"] + [p for package in ("curriculum", "trainer") for p in sorted((folder / package).rglob("*"))
                                         if p.is_file() and "__pycache__" not in p.parts]
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode() + path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("record", RECORDS, ids=[r.name for r in RECORDS])
def test_every_committed_record_holds_the_code_its_runs_ran(record):
    ran = {json.loads(p.read_text())["provenance"]["code_sha256"] for p in (record / "logs").rglob("*.json")}
    assert ran == {snapshot_sha256(record)}


def test_every_record_with_a_submission_has_its_logs():
    """Each run's summary and its full log: the log beside it in logs/, or byte for byte in the
    record's run_logs_<experiment>.tar.xz (a folder of full logs is too large to commit plain)."""
    import tarfile
    for submission in (ROOT / "records").glob("*/*/submission.json"):
        record = submission.parent
        summaries = sorted((record / "logs").rglob("*.json"))
        assert summaries, f"{record} has no logs"
        archived = {}
        for summary in summaries:
            if summary.with_suffix(".txt").is_file():
                continue
            archive = record / f"run_logs_{summary.parent.name}.tar.xz"
            if archive not in archived:
                with tarfile.open(archive) as tar:
                    archived[archive] = set(tar.getnames())
            assert f"{summary.stem}.txt" in archived[archive], f"{summary}: no full log beside it or in {archive.name}"


def test_a_treatment_arm_is_measured_against_the_baseline_and_a_treated_curriculum_against_its_treatment(tmp_path):
    runs = {}
    for seed, (base, cur) in RECORD.items():
        runs[f"c0-s{seed}"] = summary(seed, False, base)
        runs[f"doc-s{seed}"] = summary(seed, False, base - 0.01, ATTENTION_MASK="document")
        runs[f"bos-s{seed}"] = summary(seed, False, base + 0.2, DATA_ALIGN="bos", DOC_MAX_TOKENS=64)
        runs[f"c1doc-s{seed}"] = summary(seed, True, cur, ATTENTION_MASK="document")
    text, comparisons = cmp.build_report(write_runs(tmp_path / "runs", runs), tmp_path / "out", draw=False)
    pairs = {(c.arm.name, c.base.name) for c in comparisons}
    assert ("ATTENTION_MASK=document", "baseline") in pairs
    assert ("DATA_ALIGN=bos DOC_MAX_TOKENS=64", "baseline") in pairs
    assert any(a.startswith("curriculum ") and a.endswith("ATTENTION_MASK=document") and b == "ATTENTION_MASK=document"
               for a, b in pairs), pairs
    assert "| baseline | 3 | 1337, 1338, 1339 |" in text and "baseline #" not in text


EXPERIMENTS = sorted(p.parent for p in (ROOT / "experiments").glob("*/logs"))


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[e.name for e in EXPERIMENTS])
def test_every_committed_experiment_is_rederived_from_its_logs(experiment, tmp_path):
    text, _ = cmp.build_report(experiment / "logs", tmp_path, draw=False)
    assert table_lines(text) == table_lines((experiment / "report.md").read_text())


def test_the_report_goes_beside_the_logs_never_among_them(tmp_path):
    assert cmp.default_out(tmp_path / "exp" / "logs") == (tmp_path / "exp").resolve()
    assert cmp.default_out(tmp_path / "runs") == tmp_path / "runs_report"


def test_the_difficulty_each_whole_run_order_drew_from_is_reported_by_quarter(tmp_path):
    """From committed real runs (record 3's): each quarter's band and mean score are
    the runs' log windows, averaged directly here."""
    logs = RECORD3 / "logs" / "1_step_matched"
    text, _ = cmp.build_report(logs, tmp_path, devices_as_blocks=True, draw=False)
    section = text.split("The difficulty each whole-run order drew from")[1].split("\n## ")[0]
    runs = [json.loads(p.read_text()) for p in sorted(logs.glob("order_warmup_compression-seed*.json"))]
    for q in range(4):
        lo, hi, score, draws = [], [], 0.0, 0
        for r in runs:
            last = 0
            for w in r["data"]["order"]["windows"]:
                if min(3, math.ceil(4 * w["step"] / r["steps"]) - 1) == q:
                    lo.append(w["band_lo"])
                    hi.append(w["band_hi"])
                    score += w["score_mean"] * (w["step"] - last)
                    draws += w["step"] - last
                last = w["step"]
        row = f"| order compression_ratio/warmup | compression_ratio | {q + 1} | [{sum(lo) / len(lo):.2f}, " \
              f"{sum(hi) / len(hi):.2f}] | {score / draws:.4f} | 1 |"
        assert row in section
    assert "[0.00, 0.75]" in section and "| order random/warmup | random | 1 |" in section  # the warmup opens in Q1
    assert "| baseline |" not in section


@pytest.mark.parametrize("alpha, two_sided", [(0.05, True), (cmp.BAR_P, False)])
def test_the_minimum_detectable_effect_is_found_that_often_in_simulated_experiments(alpha, two_sided):
    """At the MDE the paired t-test rejects in POWER of simulated experiments with the same seeds
    and spread: an independent check by simulation (numpy's normal draws, scipy's t-test)."""
    import numpy as np
    from scipy import stats
    diffs = [0.0141, 0.0022, -0.0632, 0.0097, -0.0163]  # five per-seed Δ nats of record 3's first runs, rounded
    mde = cmp.detectable_effect(diffs, alpha, two_sided)
    sd, n, trials = statistics.stdev(diffs), len(diffs), 40_000
    draws = np.random.default_rng(0).normal(-mde, sd, size=(trials, n))  # an improvement: below zero
    test = stats.ttest_1samp(draws, 0.0, axis=1, alternative="two-sided" if two_sided else "less")
    assert abs((test.pvalue < alpha).mean() - cmp.POWER) < 0.01
    assert math.isnan(cmp.detectable_effect(diffs[:2], alpha, two_sided))


def test_the_report_says_what_the_design_can_detect(tmp_path):
    logs = RECORD3 / "logs" / "1_step_matched"
    text, comparisons = cmp.build_report(logs, tmp_path, devices_as_blocks=True, draw=False)  # as the record's README does
    section = text.split("What the design can detect")[1].split("\n\n", 2)[1]
    for c in comparisons:
        diffs = [d[2] for d in c.overall.per_seed]
        row = next(line for line in section.splitlines() if line.startswith(f"| {c.arm.name} |"))
        mde = cmp.detectable_effect(diffs, 0.05, True)
        assert row == (f"| {c.arm.name} | {len(diffs)} | {statistics.stdev(diffs):.5f} | {mde:.5f} "
                       f"| {cmp.BAR_NATS + cmp.detectable_effect(diffs, cmp.BAR_P, False):.5f} |")
        assert mde > c.overall.ci_nats[1] - c.overall.mean_nats  # 80% power needs more than the CI's half-width
