"""tools/launch.py: the trainer started as a user starts it, and `python -m tools.launch`, torchrun
ending as one process does: a failed rank's status and a Ctrl-C in the ranks' lines and one of its
own, never the agent's traceback."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import trainer_env
from tools import launch
from tools.bad_inputs import wait_for_step_2


def test_a_rank_that_fails_ends_the_launch_in_its_line_and_its_status(dataset, tmp_path):
    done = launch.run_trainer(trainer_env(dataset, tmp_path, NUM_HEADS="0"), 2, capture_output=True, text=True,
                              timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "NUM_HEADS='0'" in done.stderr and re.search(r"launch: ranks? .*ended with exit status 2", done.stderr)


def test_ctrl_c_ends_every_rank_in_its_line_and_the_launch_in_one(dataset, tmp_path):
    env = trainer_env(dataset, tmp_path, ITERATIONS="100000")
    p = launch.start_trainer(env, 2, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = Path(env["LOG_DIR"]) / f"{env['RUN_ID']}.txt"
    wait_for_step_2(lambda: [log], time.perf_counter(), 240)
    os.killpg(p.pid, signal.SIGINT)  # a terminal's Ctrl-C: the launcher, its agent and the ranks alike
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "train_gpt.py: interrupted" in err and "train_gpt.py (rank 1): interrupted" in err
    assert "launch: SIGINT: the ranks were stopped" in err
