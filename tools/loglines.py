"""The trainer's log lines as the tools read them: one pattern per kind of line, here only.

Each pattern names its fields; `parse(kind, text)` gives every match as a dict of strings, in
the order of the log. The tests hold every pattern against real logs of each kind of run
(baseline, fresh, carry, phases, resumed, and a plain log of the challenge's own script).
"""
from __future__ import annotations

import re

NUMBER = r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf)"
PATTERNS = {
    "train": re.compile(rf"^step:(?P<step>\d+)/\d+ train_loss:(?P<loss>\S+) train_time:(?P<ms>\d+)ms "
                        rf"step_avg:(?P<avg>\S+)ms", re.M),
    "val": re.compile(r"^step:(?P<step>\d+)/\d+ val_loss:(?P<loss>\S+) val_bpb:(?P<bpb>\S+) train_time:(?P<ms>\d+)ms",
                      re.M),
    # fresh and carry alike: carry adds its waits before data_wait_ms
    "curriculum": re.compile(
        rf"^curriculum step:(?P<step>\d+) progress:(?P<progress>{NUMBER}) target:(?P<target>{NUMBER}) "
        rf"kept_score_mean:(?P<kept_mean>{NUMBER}) kept_score_min:(?P<kept_min>{NUMBER}) "
        rf"kept_score_max:(?P<kept_max>{NUMBER}) pool_score_mean:(?P<pool_mean>{NUMBER})"
        rf"(?: wait_mean:(?P<wait_mean>{NUMBER}) wait_max:(?P<wait_max>{NUMBER}))? "
        rf"data_wait_ms:(?P<data_wait_ms>{NUMBER})", re.M),
    "final_exact": re.compile(r"^final_\w+_roundtrip_exact val_loss:(?P<loss>\S+) val_bpb:(?P<bpb>\S+)", re.M),
    "env": re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$", re.M),
    "resume": re.compile(r"^resume: from (?P<path>\S+) at step:(?P<step>\d+) tokens:(?P<tokens>[\d,]+) "
                         r"train_time:(?P<ms>\d+)ms", re.M),
    "checkpoint": re.compile(r"^checkpoint: step:(?P<step>\d+) (?P<path>\S+)$", re.M),
    # the plugin's closing line in anyone's script (CurriculumTokenLoader.summary)
    "plugin_summary": re.compile(r"^curriculum: summary (?P<json>\{.*\})\s*$", re.M),
    # where a challenge script's logged source ends when no environment follows it
    "source_end": re.compile(r"^={20,}\s*$", re.M),
}


def parse(kind: str, text: str) -> list[dict[str, str]]:
    return [m.groupdict() for m in PATTERNS[kind].finditer(text)]


def after_last_resume(text: str) -> str:
    """A resumed run's log from its last `resume:` line on: the steps that count (lines of the
    interrupted piece between its checkpoint and the kill come before it)."""
    matches = list(PATTERNS["resume"].finditer(text))
    return text[matches[-1].end():] if matches else text
