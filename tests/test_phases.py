"""curriculum/phases.py: the phases file and every way it can be wrong."""
from __future__ import annotations

import pytest

from curriculum import CurriculumConfig
from curriculum.phases import load_phases, parse_phases

BASE = CurriculumConfig()
DATASETS = {"docs": {"files": "d/*train_*.bin"}, "prose": {"files": "p/*train_*.bin", "on_exhaust": "drop"}}


def test_a_good_file_gives_phases_with_their_overrides(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('''
schedule_progress = "phase"
[datasets.docs]
files = "d/*train_*.bin"
[datasets.prose]
files = "p/*train_*.bin"
on_exhaust = "drop"
[[phase]]
name = "short"
until_progress = 0.3
seq_len = 128
mixture = { docs = 0.5, prose = 0.5 }
[[phase]]
name = "long"
mixture = { prose = 1.0 }
curriculum = true
peak = 0.6
oversample = 3
''')
    plan, errors = load_phases(path, BASE)
    assert errors == [] and plan.schedule_progress == "phase" and len(plan.sha256) == 64
    short, long = plan.phases
    assert short.end == ("until_progress", 0.3) and short.seq_len == 128 and short.batch_tokens is None
    assert not short.config.enabled and long.end is None
    assert long.config == CurriculumConfig(enabled=True, peak=0.6, oversample=3.0)
    assert plan.datasets["prose"].on_exhaust == "drop"


def test_every_problem_is_named_with_its_phase_and_key():
    table = dict(datasets=dict(DATASETS, bad={"files": "", "on_exhaust": "loop"}), colour="red", phase=[
        dict(name="a", steps=0, seq_len=-1, mixture={"docs": 0.7, "prose": 0.2}),
        dict(name="b", until_progress=0.5, tokens=10, mixture={"nope": 1.0}),
        dict(name="c", mixture={"docs": -0.5, "prose": 1.5}, schedule="zigzag", pool="stale", curriculum="yes"),
        dict(name="d", epochs=2, epochs_of="code", mixture={"docs": 1.0}, sparkle=1),
        dict(name="e", until_progress=1.5, mixture={"docs": 1.0}),
    ])
    plan, errors = parse_phases(table, BASE)
    text = "\n".join(errors)
    assert plan is None
    for expected in ["unknown key 'colour'", "dataset bad: files: a shard glob is required",
                     "dataset bad: on_exhaust='loop': must be 'wrap' or 'drop'",
                     "phase 1 (a): steps=0: must be a whole number > 0", "phase 1 (a): seq_len=-1",
                     "phase 1 (a): mixture: the weights sum to 0.9, not 1",
                     "phase 2 (b): until_progress, tokens: give one end, not several",
                     "phase 2 (b): mixture: 'nope' is not a declared dataset",
                     "phase 3 (c): needs an end", "phase 3 (c): mixture: docs=-0.5: a weight must be a number >= 0",
                     "phase 3 (c): schedule='zigzag': must be one of", "phase 3 (c): pool='stale'",
                     "phase 3 (c): curriculum='yes': must be true or false",
                     "phase 4 (d): epochs_of='code': must name a dataset of this phase's mixture",
                     "phase 4 (d): unknown key 'sparkle'", "phase 5 (e): until_progress=1.5: must be in (0, 1]"]:
        assert expected in text, expected


def test_a_phase_after_the_end_of_the_run_is_refused():
    table = dict(datasets=DATASETS, phase=[dict(name="all", until_progress=1.0, mixture={"docs": 1.0}),
                                           dict(name="never", mixture={"docs": 1.0})])
    plan, errors = parse_phases(table, BASE)
    assert plan is None and errors == ["phase 1 (all): until_progress=1: the run ends there, so the phases after it "
                                       "would never run"]
    plan, errors = parse_phases(dict(datasets=DATASETS, phase=table["phase"][:1]), BASE)
    assert errors == [] and plan.phases[0].end == ("until_progress", 1.0)


def test_unreadable_or_malformed_files_say_so(tmp_path):
    _, errors = load_phases(tmp_path / "missing.toml", BASE)
    assert "cannot read it" in errors[0] and "CURRICULUM_PHASES=" in errors[0]
    bad = tmp_path / "bad.toml"
    bad.write_text("[[phase]\n")
    _, errors = load_phases(bad, BASE)
    assert "not valid TOML" in errors[0]
    _, errors = parse_phases({}, BASE)
    assert any("declare at least one" in e for e in errors) and any("at least one [[phase]]" in e for e in errors)
