"""tools/experiment.py (`make compare`): arms from the arms file, rotation, precedence of
settings, a fresh folder for a changed plan, and a crash that does not stop the others."""
from __future__ import annotations

import json
from collections import Counter

import preloaded

from tests.conftest import TINY
from tools import experiment
from tools.bad_inputs import wait_for_step_2
from tools.runs import rotated
from tools.envfile import ROOT


def tiny_config(dataset, folder):
    """A config file (`--config`) of the tests' tiny model on the embedded dataset."""
    config = folder / "tiny.env"
    config.write_text("".join(f"{k}={v}\n" for k, v in TINY.items()) + f"DATA_PATH={dataset['data_path']}\n"
                      f"TOKENIZER_PATH={dataset['tokenizer']}\nVOCAB_SIZE=1024\n")
    return config


def test_the_shipped_arms_file_is_valid_and_every_arm_names_curriculum():
    arms, problems = experiment.read_arms(ROOT / "configs" / "arms.toml")
    assert not problems and {"baseline", "v"} <= set(arms)
    assert arms["baseline"]["CURRICULUM"] == "0" and all("CURRICULUM" in a for a in arms.values())


def test_each_arm_takes_each_position_equally_often():
    arms = ["baseline", "v", "linear"]
    positions = Counter((arm, pos) for i in range(6) for pos, arm in enumerate(rotated(arms, i)))
    assert set(positions.values()) == {2} and len(positions) == 9


def test_the_users_environment_wins_over_the_config_and_the_arm_over_both(tmp_path, monkeypatch):
    config = tmp_path / "c.env"
    config.write_text("MODEL_DIM=128\nNUM_LAYERS=4\nCURRICULUM=1\n")
    monkeypatch.setenv("MODEL_DIM", "96")
    monkeypatch.setenv("CURRICULUM", "1")  # left over in the shell: must not turn the baseline on
    base = experiment.base_environment(config)
    assert base["MODEL_DIM"] == "96" and base["NUM_LAYERS"] == "4"
    arms, _ = experiment.read_arms(ROOT / "configs" / "arms.toml")
    assert (base | arms["baseline"])["CURRICULUM"] == "0"


def test_a_changed_budget_arm_or_setting_starts_a_fresh_folder():
    base = dict(MODEL_DIM="128", PATH="/usr/bin")
    arms = dict(baseline=dict(CURRICULUM="0"), v=dict(CURRICULUM="1"))
    first = experiment.experiment_id(base, arms, "time", 150, 100)
    assert first == experiment.experiment_id(base | dict(PATH="/bin"), arms, "time", 150, 100)  # not a setting
    assert first != experiment.experiment_id(base, arms, "time", 30, 100)
    assert first != experiment.experiment_id(base, arms, "steps", 150, 100)
    assert first != experiment.experiment_id(base | dict(MODEL_DIM="96"), arms, "time", 150, 100)
    assert first != experiment.experiment_id(base, arms | dict(v=dict(CURRICULUM="1", CURRICULUM_PEAK="0.7")),
                                             "time", 150, 100)


def test_every_bad_argument_is_listed(capsys, tmp_path):
    assert experiment.main(["--seeds", "0", "--budget", "-1", "--arms", "baseline", "nope", "baseline",
                            "--config", str(tmp_path / "none.env"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    for message in ("--seeds=0", "--budget=-1.0", "none.env: no such file", "nope not defined",
                    "an arm is named twice"):
        assert message in err
    assert experiment.main(["--mode", "steps", "--out", str(tmp_path)]) == 2
    assert "--steps=0: must be >= 1 with --mode steps" in capsys.readouterr().err
    for first in ("-1", str(2**32 - 2)):  # beyond the trainer's SEED, the first seed or the third
        assert experiment.main(["--first-seed", first, "--seeds", "3", "--out", str(tmp_path)]) == 2
        assert f"--first-seed={first}: must be in [0, 4294967293]" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    for budget in ("nan", "inf"):
        assert experiment.main(["--budget", budget, "--out", str(tmp_path / "a_file")]) == 2
        err = capsys.readouterr().err
        assert f"--budget={float(budget)}: must be a finite number > 0" in err and "is a file; must be a folder" in err
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]  # nothing written: no plan.json, no logs/
    bad = tmp_path / "arms.toml"
    bad.write_text("[x]\nMODEL_DIM = 96\n[y]\nCURRICULUM = [1]\n")
    arms, problems = experiment.read_arms(bad)
    assert not arms and "[x] must set CURRICULUM" in problems[0] and "[y] values of CURRICULUM" in problems[1]


def test_a_crashed_run_is_reported_and_the_others_go_on(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(experiment.launch, "run_trainer", preloaded.run_like_launch)  # each run forked, torch imported
    for k in [k for k in __import__("os").environ if k.startswith("CURRICULUM")]:
        monkeypatch.delenv(k)
    config = tiny_config(dataset, tmp_path)
    arms = tmp_path / "arms.toml"
    arms.write_text("[baseline]\nCURRICULUM = 0\n[broken]\nCURRICULUM = 1\nCURRICULUM_OVERSAMPLE = 0.5\n")
    argv = ["--arms", "broken", "baseline", "--arms-file", str(arms), "--seeds", "2", "--mode", "steps",
            "--steps", "4", "--val-every", "0", "--config", str(config), "--out", str(tmp_path / "out")]
    assert experiment.main(argv) == 1
    out = capsys.readouterr()
    assert out.err.count("FAILED (exit 2)") == 2 and "CURRICULUM_OVERSAMPLE=0.5" in out.err
    assert "4 runs, 2 failed: broken-seed1337, broken-seed1338" in out.out
    (folder,) = (tmp_path / "out").iterdir()
    assert folder.name.startswith("broken-baseline_steps4_")
    assert sorted(p.name for p in (folder / "logs").glob("*.json")) == ["baseline-seed1337.json", "baseline-seed1338.json"]
    assert "| baseline | 2 | 1337, 1338 |" in (folder / "report.md").read_text()
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["budget"] == dict(MAX_WALLCLOCK_SECONDS="0", ITERATIONS="4")
    # the same experiment again resumes: the finished runs are kept, nothing is trained twice
    assert experiment.main(argv) == 1
    assert capsys.readouterr().out.count("done earlier, kept") == 2


def test_the_progress_line_estimates_what_is_left_from_the_runs_so_far():
    from tools.experiment import progress_text

    assert progress_text(3.2, 0, 5) == "3s elapsed"
    assert progress_text(100, 2, 3) == "100s elapsed, about 2m 30s left for 3 runs"
    assert progress_text(61, 1, 1) == "61s elapsed, about 1m 01s left for 1 runs"


def test_an_interrupted_or_unfinished_run_is_run_again_and_a_failed_one_kept(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(experiment.launch, "run_trainer", preloaded.run_like_launch)
    for k in [k for k in __import__("os").environ if k.startswith("CURRICULUM")]:
        monkeypatch.delenv(k)
    config = tiny_config(dataset, tmp_path)
    argv = ["--arms", "baseline", "--seeds", "3", "--mode", "steps", "--steps", "2", "--val-every", "0",
            "--config", str(config), "--out", str(tmp_path / "out")]
    assert experiment.main(argv) == 0
    (folder,) = (tmp_path / "out").iterdir()
    logs = folder / "logs"
    endings = {1337: "error: train_gpt.py: interrupted; the log is complete up to here",  # Ctrl-C
               1338: "step:1/2 train_loss:6.9",                                             # kill -9: no last word
               1339: "error: train_gpt.py: diverged at step 1"}                              # a real failure
    for seed, last in endings.items():
        (logs / f"baseline-seed{seed}.json").unlink()
        (logs / f"baseline-seed{seed}.txt").write_text(f"settings...\n{last}\n")
    capsys.readouterr()
    assert experiment.main(argv) == 1
    out = capsys.readouterr().out
    assert "baseline-seed1337: interrupted earlier, run again" in out
    assert "baseline-seed1338: left unfinished earlier, run again" in out
    assert "baseline-seed1339: failed earlier, kept as failed (train_gpt.py: diverged at step 1" in out
    assert sorted(p.name for p in logs.glob("*.json")) == ["baseline-seed1337.json", "baseline-seed1338.json"]


def test_ctrl_c_ends_the_experiment_in_one_line_and_the_run_in_its_own(dataset, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tiny_config(dataset, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURRICULUM")}
    p = subprocess.Popen([sys.executable, "-m", "tools.experiment", "--arms", "baseline", "--seeds", "1", "--mode",
                          "steps", "--steps", "100000", "--val-every", "0", "--config", str(config), "--out",
                          str(tmp_path / "out")], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    wait_for_step_2(lambda: (tmp_path / "out").glob("*/logs/baseline-seed1337.txt"), time.perf_counter(), 120)
    os.killpg(p.pid, signal.SIGINT)  # a terminal's Ctrl-C: the experiment and its run alike
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert "experiment: interrupted during baseline-seed1337" in err
    (log,) = (tmp_path / "out").glob("*/logs/baseline-seed1337.txt")
    assert experiment.last_error(log).startswith("train_gpt.py: interrupted")
