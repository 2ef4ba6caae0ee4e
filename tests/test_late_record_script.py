"""The README's lines for the late records' scripts, pasted as they are into a script written the
way those scripts are (tests/late_record_script.py: packed `[1, N]` batches, `cu_seqlens` into
attention, a wallclock cap with a reserve, a calibration loader) beside a copy of curriculum/,
trained with and without a cap, and tools.compare on the plain logs it writes."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import preloaded
from pasting import paste, readme_lines

pytestmark = pytest.mark.xdist_group("late_record_script")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("late_record_script.py")
HEADING = "### The late records' scripts"
ANCHORS = {"code_bytes +=": 'code_bytes = len(code.encode("utf-8"))',
           "log0(train_loader.log_line": 'log0(f"step:{step}/{h.iterations} train_loss:',
           "log0(train_loader.summary": 'log0(f"final_int8_zlib_roundtrip_exact '}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, dataset):
    """A user's folder: the pasted script, a copy of curriculum/, the original, and the data
    under the records' folder names."""
    work = tmp_path_factory.mktemp("late_record")
    shutil.copytree(ROOT / "curriculum", work / "curriculum", ignore=shutil.ignore_patterns("__pycache__"))
    text, replaced = paste(SCRIPT.read_text(), readme_lines(HEADING), ANCHORS)
    assert replaced == {"CurriculumDocumentLoader": 2, "CurriculumSequenceLoader": 1}
    (work / "pasted.py").write_text(text)
    (work / "plain.py").write_text(SCRIPT.read_text())
    (work / "data" / "datasets").mkdir(parents=True)
    (work / "data" / "datasets" / "fineweb10B_sp1024").symlink_to(dataset["data_path"] + "_fineweb_names")
    return work


def run(work: Path, script: str, dataset: dict, run_id: str, **env) -> str:
    base = dict(PATH="/usr/bin:/bin", DATA_DIR=str(work / "data"), TOKENIZER_PATH=dataset["tokenizer"], RUN_ID=run_id,
                VOCAB_SIZE="1024", TRAIN_SEQ_LEN="64", TRAIN_BATCH_TOKENS="4096", ITERATIONS="16", WARMUP_STEPS="2",
                MAX_WALLCLOCK_SECONDS="0", TRAIN_LOG_EVERY="4", CURRICULUM_LOG_EVERY="4", OMP_NUM_THREADS="1")
    done = preloaded.run(base | env, work, script=work / script, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return (work / "logs" / f"{run_id}.txt").read_text()


RUNS = {"plain_seed1": ("plain.py", "1", None, "0"), "arm0_seed1": ("pasted.py", "1", "0", "0"),
        "arm0_seed2": ("pasted.py", "2", "0", "0"), "arm1_seed1": ("pasted.py", "1", "1", "0"),
        "arm1_seed2": ("pasted.py", "2", "1", "0"), "capped": ("pasted.py", "1", "1", "5")}


@pytest.fixture(scope="module")
def logs(workdir, dataset) -> dict[str, str]:
    out = {}
    for run_id, (script, seed, arm, cap) in RUNS.items():
        env = dict(SEED=seed, MAX_WALLCLOCK_SECONDS=cap, GPTQ_RESERVE_SECONDS="3") | (
            dict(CURRICULUM=arm) if arm else {})
        out[run_id] = run(workdir, script, dataset, run_id, **env | (dict(ITERATIONS="100000") if cap != "0" else {}))
    return out


def step_losses(log: str) -> list[str]:
    return re.findall(r"^step:\d+/\d+ train_loss:(\S+)", log, re.M)


def test_the_readme_lines_for_the_late_records(workdir):
    lines = readme_lines(HEADING)
    assert [line.split("(")[0].split(" ")[0] for line in lines] == [
        "from", "train_loader", "calib_loader", "code_bytes", "log0", "log0"]


def test_pasted_with_the_curriculum_off_the_script_trains_and_calibrates_exactly_as_before(logs):
    plain, pasted = logs["plain_seed1"], logs["arm0_seed1"]
    assert step_losses(plain) == step_losses(pasted) and len(step_losses(plain)) == 12
    for line in (r"^gptq:calibrated .*$", r"^final_int8_zlib_roundtrip_exact .*$"):
        assert re.search(line, plain, re.M).group(0) == re.search(line, pasted, re.M).group(0)
    assert step_losses(logs["arm0_seed2"]) != step_losses(pasted)
    assert re.search(r"^data step:4 progress:0\.2500 .*documents_per_batch:\S+ pieces_per_batch:", pasted, re.M)


def test_with_the_curriculum_progress_follows_the_iterations_then_the_cap_less_the_reserve(logs, workdir):
    arm1 = logs["arm1_seed1"]
    assert step_losses(arm1) != step_losses(logs["arm0_seed1"])  # other pieces were packed
    progress = [float(p) for p in re.findall(r"^curriculum step:\d+ progress:(\S+)", arm1, re.M)]
    assert progress == [step / 16 for step in (*range(1, 11), 12, 16)]  # step / ITERATIONS at the step logged
    capped = logs["capped"]
    assert re.search(r"^stopping_early: wallclock_cap", capped, re.M)
    train_ms = int(re.search(r"^stopping_early: wallclock_cap train_time:(\d+)ms", capped, re.M).group(1))
    assert 2000 <= train_ms < 4000  # the cap less the reserve: 5 s - 3 s
    timed = [float(p) for p in re.findall(r"^curriculum step:\d+ progress:(\S+)", capped, re.M)]
    assert len(timed) >= 2 and timed == sorted(timed) and timed[-1] <= 1.0
    body = json.loads(re.search(r"^curriculum: summary (\{.*\})$", capped, re.M).group(1))
    size = int(re.search(r"^Code size: (\d+) bytes", capped, re.M).group(1))
    assert size == len((workdir / "pasted.py").read_bytes()) + body["code_bytes"] and body["code_bytes"] > 10_000
    assert body["settings"]["GPTQ_RESERVE_SECONDS"] == 3.0 and body["settings"]["CURRICULUM"] == 1
    assert body["data"]["loader"] == "documents" and body["data"]["tokens_read"] == 2 * body["data"]["tokens_trained"]


def test_compare_pairs_the_late_scripts_plain_logs(logs, tmp_path):
    from tools.compare import build_report

    folder = tmp_path / "logs"
    folder.mkdir()
    for run_id in ("arm0_seed1", "arm0_seed2", "arm1_seed1", "arm1_seed2"):
        (folder / f"{run_id}.txt").write_text(logs[run_id])
    report, comparisons = build_report(folder, tmp_path / "report", draw=False)
    assert len(comparisons) == 1
    c = comparisons[0]
    assert c.overall.n == (2, 2) and len(c.overall.per_seed) == 2 and c.overall.test == "paired t"
