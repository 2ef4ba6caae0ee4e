"""tools/runs.py: which runs form an arm, which may never be pooled, and every bad input."""
from __future__ import annotations

import copy
import json

import pytest

from tests.helpers_runs import changed, record_runs, summary, write_runs
from tools import runs as rs


def arms_of(tmp_path, runs: dict) -> list[rs.Arm]:
    loaded, _, _ = rs.load_runs(write_runs(tmp_path / "logs", runs))
    return rs.group_arms(loaded)


def seeds(arm: rs.Arm) -> list:
    return [r.seed for r in arm.runs]


def test_the_record_forms_one_baseline_and_one_curriculum_arm(tmp_path):
    arms = arms_of(tmp_path, record_runs())
    assert [a.name for a in arms] == ["baseline", "curriculum unigram_entropy/v peak=0.45 x2"]
    assert seeds(arms[0]) == seeds(arms[1]) == [1337, 1338, 1339]
    assert rs.find_baseline(arms[1], arms) == (arms[0], None)


@pytest.mark.parametrize("stem, setting, value", [
    # curriculum settings on a baseline run do nothing
    ("c0-s1338", "CURRICULUM_PEAK", "0.7"),
    ("c0-s1338", "CURRICULUM_TARGET", 0.9),
    ("c0-s1338", "CURRICULUM_SCORE", "other"),
    # a schedule parameter the schedule does not read: the V has no target
    ("c1-s1338", "CURRICULUM_TARGET", 0.9),
    # evaluation batching and log cadence
    ("c0-s1338", "VAL_BATCH_SIZE", 524288),
    ("c1-s1338", "TRAIN_LOG_EVERY", 7),
    ("c1-s1338", "VAL_LOSS_EVERY", 0),
    # DEVICE=auto and DEVICE=cpu on the same machine ran on the same device
    ("c0-s1338", "DEVICE", "cpu"),
    # an absolute and a relative path naming the same files (same content fingerprints)
    ("c0-s1338", "DATA_PATH", "/work/main/data/mix"),
    ("c1-s1338", "TOKENIZER_PATH", "/work/main/data/tok.model"),
    # a value written as the trainer parses it differently
    ("c1-s1338", "CURRICULUM_PEAK", "0.450"),
    # a resumed run, and one that wrote checkpoints: bit for bit an uninterrupted run
    ("c1-s1338", "RESUME", "logs/c1-s1338.ckpt"),
    ("c0-s1339", "CHECKPOINT_EVERY", 100),
])
def test_settings_that_change_nothing_do_not_split_an_arm(tmp_path, stem, setting, value):
    arms = arms_of(tmp_path, changed(record_runs(), stem, ("settings", setting), value))
    assert len(arms) == 2 and seeds(arms[0]) == seeds(arms[1]) == [1337, 1338, 1339]


def test_a_default_left_out_equals_the_default_written_out(tmp_path):
    runs = record_runs()
    runs["c0-s1338"]["settings"]["MLP_MULT"] = 3  # the trainer's default; the other runs do not say
    runs["c1-s1339"]["settings"]["CURRICULUM_OVERSAMPLE"] = 2.0
    assert len(arms_of(tmp_path, runs)) == 2
    runs["c0-s1338"]["settings"]["MLP_MULT"] = 2  # not the default: another arm
    assert len(arms_of(tmp_path / "b", runs)) == 3


def test_a_schedule_parameter_the_schedule_reads_does_split(tmp_path):
    runs = changed(record_runs(), "c1-s1338", ("settings", "CURRICULUM_PEAK"), 0.7)
    arms = arms_of(tmp_path, runs)
    assert [a.name for a in arms] == ["baseline", "curriculum unigram_entropy/v peak=0.45 x2",
                                      "curriculum unigram_entropy/v peak=0.7 x2"]
    linear = record_runs()
    for stem in ("c1-s1337", "c1-s1338", "c1-s1339"):
        linear[stem]["settings"]["CURRICULUM_SCHEDULE"] = "linear"
    linear["c1-s1338"]["settings"]["CURRICULUM_PEAK"] = 0.7  # the linear schedule has no peak
    assert [a.name for a in arms_of(tmp_path / "b", linear)] == ["baseline", "curriculum unigram_entropy/linear x2"]


@pytest.mark.parametrize("field, value, separator", [
    (("provenance", "code_sha256"), "e" * 64, "code"),
    (("provenance", "torch"), "2.12.0+cpu", "torch"),
    (("provenance", "device_name"), "NVIDIA H100 80GB HBM3", "device"),
    (("provenance", "train_data_sha256"), "f" * 64, "train data"),
    (("val_sha256",), "w" * 64, "validation data"),
    (("tokenizer_sha256",), "u" * 64, "tokenizer"),
])
def test_runs_of_other_code_device_torch_or_data_are_never_pooled(tmp_path, field, value, separator):
    arms = arms_of(tmp_path, changed(record_runs(), "c0-s1338", field, value))
    baselines = [a for a in arms if a.is_baseline]
    assert sorted(len(a.runs) for a in baselines) == [1, 2]
    assert {a.name for a in baselines} == {"baseline #1", "baseline #2"}
    assert all(a.separated_by == [separator] for a in baselines)  # the report names what separated them


def test_without_a_fingerprint_paths_are_resolved_against_the_run_folder(tmp_path):
    runs = record_runs()
    for s in runs.values():
        s["provenance"].pop("train_data_sha256")
        s["settings"]["TRAIN_FILES"] = "data/mix/*train_*.bin"
    runs["c0-s1338"]["settings"]["TRAIN_FILES"] = "/work/main/data/mix/*train_*.bin"
    assert len(arms_of(tmp_path, runs)) == 2
    runs["c0-s1339"]["settings"]["TRAIN_FILES"] = "/elsewhere/*train_*.bin"
    assert len(arms_of(tmp_path / "b", runs)) == 3


@pytest.mark.parametrize("how", ["copied under a second name", "re-run"])
def test_two_runs_of_one_seed_in_one_arm_is_an_error_naming_the_files(tmp_path, how):
    runs = record_runs()
    twin = copy.deepcopy(runs["c1-s1338"])
    if how == "re-run":
        twin["roundtrip_val_bpb"] = twin["roundtrip_val_loss"] = 2.25
    runs["c1-s1338-again"] = twin
    with pytest.raises(rs.CompareError, match=r"seed 1338 in c1-s1338-again.json, c1-s1338.json"):
        arms_of(tmp_path, runs)


def test_unmatched_seeds_are_named_and_left_out(tmp_path):
    runs = record_runs() | {"c0-s1340": summary(1340, False, 2.31)}
    del runs["c1-s1337"]
    arms = arms_of(tmp_path, runs)
    common, unmatched = rs.pair_by_seed(arms[1], arms[0])
    assert common == [1338, 1339]
    assert len(unmatched) == 2 and "c0-s1337.json (seed 1337) has no partner" in unmatched[0] + unmatched[1]
    assert any("c0-s1340.json (seed 1340)" in m for m in unmatched)


def test_a_curriculum_arm_without_its_baseline_says_what_differs(tmp_path):
    runs = record_runs()
    for stem in ("c0-s1337", "c0-s1338", "c0-s1339"):
        runs[stem]["settings"]["MODEL_DIM"] = 256
    arms = arms_of(tmp_path, runs)
    base, why = rs.find_baseline(arms[1], arms)
    assert base is None and "differs in MODEL_DIM" in why


def test_bad_files_are_named_once_each(tmp_path):
    folder = write_runs(tmp_path / "logs", record_runs())
    (folder / "broken.json").write_text("{not json")
    (folder / "broken.txt").write_text("step:1/10 ...")
    (folder / "manifest.json").write_text('{"name": "a dataset manifest"}')
    (folder / "crashed.txt").write_text("step:1/10 ...")
    nan = summary(1340, True, float("nan"))
    (folder / "c1-s1340.json").write_text(json.dumps(nan))  # json writes NaN
    inf = summary(1341, True, 2.2)
    inf["val_bpb"] = float("inf")
    (folder / "c1-s1341.json").write_text(json.dumps(inf))
    runs, failed, problems = rs.load_runs(folder)
    assert len(runs) == 6
    assert len(failed) == 2 and "roundtrip_val_bpb=nan" in failed[0] and "val_bpb=inf" in failed[1]
    assert problems == [
        "broken.json: not a readable JSON file (JSONDecodeError: Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1)); "
        "left out",
        "manifest.json: not a train_gpt.py run summary (no run_id, settings, roundtrip_val_loss, roundtrip_val_bpb); "
        "left out",
        "crashed.txt: a log without a summary or a final_*_roundtrip_exact line (the run crashed or is still running); left out"]


def test_phases_files_group_by_content_not_path(tmp_path):
    runs = record_runs()
    for stem in runs:  # every run used a phases file: the same content under two paths
        runs[stem]["settings"]["CURRICULUM_PHASES"] = f"/somewhere/{stem}.toml"
        runs[stem]["phases_sha256"] = "a" * 64
    arms = arms_of(tmp_path, runs)
    assert len(arms) == 2 and arms[0].canonical["phases"] == "a" * 64
    curriculum = next(a for a in arms if a.canonical["CURRICULUM"])
    assert rs.find_baseline(curriculum, arms)[0] is next(a for a in arms if not a.canonical["CURRICULUM"])
    runs["c1-s1338"]["phases_sha256"] = "b" * 64  # other phases: another arm, never pooled
    arms = arms_of(tmp_path / "b", runs)
    assert len(arms) == 3 and any("(bbbbbbbb)" in a.name for a in arms)


def test_an_arm_with_phases_and_no_filter_is_measured_against_the_plain_baseline(tmp_path):
    runs = record_runs()
    for seed in (1337, 1338, 1339):  # a third arm: no filter, a phases file (a sequence-length warmup)
        s = summary(seed, False, 2.30)
        s["settings"]["CURRICULUM_PHASES"] = "configs/phases/seq_len_warmup_cpu.toml"
        s["phases_sha256"] = "f" * 64
        s["run_id"] = s["settings"]["RUN_ID"] = f"p-s{seed}"
        runs[f"p-s{seed}"] = s
    arms = arms_of(tmp_path, runs)
    phased = next(a for a in arms if a.canonical.get("phases"))
    plain = next(a for a in arms if a.is_baseline)
    assert not phased.is_baseline and phased.name == "baseline phases seq_len_warmup_cpu (ffffffff)"
    assert rs.find_baseline(phased, arms) == (plain, None)
    curriculum = next(a for a in arms if a.canonical["CURRICULUM"])
    assert rs.find_baseline(curriculum, arms) == (plain, None)
