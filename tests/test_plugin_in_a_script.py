"""The README's plugin lines, pasted as they are into a challenge-style script
(tests/challenge_script.py) beside a copy of curriculum/, trained with and without a wallclock
cap, and tools.compare on the plain logs the script writes."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import preloaded
from pasting import paste, readme_lines

# its module fixtures are real runs: one pytest worker builds them once (make test runs -n auto --dist loadgroup)
pytestmark = pytest.mark.xdist_group("pasted_script")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("challenge_script.py")


HEADING = "## The curriculum in your own trainer"
# where each of the other README lines goes: after the script's line holding this text
ANCHORS = {"code_bytes +=": 'code_bytes = len(code.encode("utf-8"))',
           "log0(train_loader.log_line": 'log0(f"step:{step}/{args.iterations} train_loss:',
           "log0(train_loader.summary": 'log0(f"final_fp32_zlib_roundtrip_exact '}


def pasted_script() -> str:
    text, replaced = paste(SCRIPT.read_text(), readme_lines(HEADING), ANCHORS)
    assert replaced == {"CurriculumTokenLoader": 2}, "the script builds its loader twice, as the challenge's do"
    return text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, dataset):
    """A folder as a user's: the pasted script, a copy of curriculum/ beside it, and the original."""
    work = tmp_path_factory.mktemp("challenge")
    shutil.copytree(ROOT / "curriculum", work / "curriculum", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "plain.py").write_text(SCRIPT.read_text())
    (work / "pasted.py").write_text(pasted_script())
    return work


def run(work: Path, script: str, dataset: dict, run_id: str, **env) -> str:
    names = Path(dataset["data_path"] + "_fineweb_names")
    base = dict(PATH="/usr/bin:/bin", DATA_PATH=str(names), TOKENIZER_PATH=dataset["tokenizer"], RUN_ID=run_id,
                TRAIN_SEQ_LEN="64", TRAIN_BATCH_TOKENS="2048", ITERATIONS="16", WARMUP_STEPS="2", WARMDOWN_ITERS="6",
                MAX_WALLCLOCK_SECONDS="0", TRAIN_LOG_EVERY="4", CURRICULUM_LOG_EVERY="4", OMP_NUM_THREADS="1")
    done = preloaded.run(base | env, work, script=work / script, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return (work / "logs" / f"{run_id}.txt").read_text()


def step_losses(log: str) -> list[str]:
    return re.findall(r"^step:\d+/\d+ train_loss:(\S+)", log, re.M)


# every run the tests read, made once: (script, SEED, CURRICULUM, MAX_WALLCLOCK_SECONDS)
RUNS = {"plain_seed1": ("plain.py", "1", None, "0"), "arm0_seed1": ("pasted.py", "1", "0", "0"),
        "arm0_seed2": ("pasted.py", "2", "0", "0"), "arm1_seed1": ("pasted.py", "1", "1", "0"),
        "arm1_seed2": ("pasted.py", "2", "1", "0"), "capped": ("pasted.py", "1", "1", "2")}


@pytest.fixture(scope="module")
def logs(workdir, dataset) -> dict[str, str]:
    out = {}
    for run_id, (script, seed, arm, cap) in RUNS.items():
        env = dict(SEED=seed, MAX_WALLCLOCK_SECONDS=cap) | (dict(CURRICULUM=arm) if arm else {})
        out[run_id] = run(workdir, script, dataset, run_id, **env | (dict(ITERATIONS="100000") if cap != "0" else {}))
    return out


def test_the_readme_lines_are_the_ones_pasted():
    lines = readme_lines(HEADING)
    assert [line.split("(")[0].split(" ")[0] for line in lines] == [
        "from", "train_loader", "code_bytes", "log0", "log0"]
    assert "set_progress" not in "\n".join(lines)  # no call is needed: the loader reads the script's budget


def test_pasted_with_the_curriculum_off_the_script_trains_exactly_as_before(logs):
    plain, pasted = logs["plain_seed1"], logs["arm0_seed1"]
    assert step_losses(plain) == step_losses(pasted) and len(step_losses(plain)) == 12  # steps 1-10, 12, 16
    final = re.compile(r"^final_fp32_zlib_roundtrip_exact .*$", re.M)
    assert final.search(plain).group(0) == final.search(pasted).group(0)
    assert step_losses(logs["arm0_seed2"]) != step_losses(pasted)  # the seed is the script's own


def test_with_the_curriculum_the_progress_follows_the_iterations_and_then_the_cap(logs, workdir):
    progress = [float(p) for p in re.findall(r"^curriculum step:\d+ progress:(\S+)", logs["arm1_seed1"], re.M)]
    assert progress == [step / 16 for step in (*range(1, 11), 12, 16)]  # step / ITERATIONS at the step logged, no lag
    capped = logs["capped"]
    assert re.search(r"^stopping_early: wallclock_cap", capped, re.M)
    timed = [float(p) for p in re.findall(r"^curriculum step:\d+ progress:(\S+)", capped, re.M)]
    assert len(timed) >= 2 and timed == sorted(timed) and 0 < timed[0] and timed[-1] <= 1.0
    size = int(re.search(r"^Code size: (\d+) bytes", capped, re.M).group(1))
    script = len((workdir / "pasted.py").read_bytes())
    body = json.loads(re.search(r"^curriculum: summary (\{.*\})$", capped, re.M).group(1))
    assert size == script + body["code_bytes"] and body["code_bytes"] > 20_000  # the copied modules count
    assert body["settings"]["SEED"] == 1 and body["settings"]["CURRICULUM"] == 1
    assert body["settings"]["MAX_WALLCLOCK_SECONDS"] == 2.0 and body["data"]["micro_batches"] > 0


def test_compare_pairs_the_pasted_scripts_plain_logs_with_no_other_change(logs, tmp_path):
    from tools.compare import build_report

    folder = tmp_path / "logs"
    folder.mkdir()
    for run_id in ("arm0_seed1", "arm0_seed2", "arm1_seed1", "arm1_seed2"):
        (folder / f"{run_id}.txt").write_text(logs[run_id])
    report, comparisons = build_report(folder, tmp_path / "report")
    assert len(comparisons) == 1
    c = comparisons[0]
    assert c.overall.n == (2, 2) and len(c.overall.per_seed) == 2 and c.overall.test == "paired t"
    assert "seed None" not in report and "curriculum unigram_entropy/v" in report
    assert "plain challenge log" in report and "does not record them" in report
