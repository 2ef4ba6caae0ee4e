"""curriculum/environment.py: typed settings read from an environment, every problem collected,
computed defaults, and a setting read twice reported once."""
from __future__ import annotations

from curriculum.environment import EnvReader, Setting

DECLARED = (
    Setting("WIDTH", "int", 8, "how wide", minimum=1),
    Setting("HEIGHT", "int", lambda v: 2 * v["WIDTH"], "twice the width unless set", shown_default="2 x WIDTH"),
    Setting("MODE", "text", "fast", "how", choices=("fast", "slow")),
    Setting("RATE", "float", 0.5, "a fraction", minimum=0.0, maximum=1.0),
    Setting("ON", "bool", False, "a switch"),
)


def test_values_and_computed_defaults_are_read_in_order():
    e = EnvReader(dict(WIDTH="5", ON="1"))
    assert e.read_all(DECLARED) == dict(width=5, height=10, mode="fast", rate=0.5, on=True)
    assert e.errors == [] and e.values["HEIGHT"] == 10


def test_every_bad_value_is_named_with_what_is_allowed():
    e = EnvReader(dict(WIDTH="0", HEIGHT="tall", MODE="medium", RATE="nan", ON="yes"))
    e.read_all(DECLARED)
    assert e.errors == ["WIDTH='0': must be >= 1", "HEIGHT='tall': must be an integer",
                        "MODE='medium': must be one of fast, slow", "RATE='nan': must be a finite number",
                        "ON='yes': must be 0 or 1"]


def test_a_setting_read_again_keeps_its_first_value_and_problem():
    e = EnvReader(dict(WIDTH="-3"))
    assert e.read(DECLARED[0]) == -3
    assert e.read(DECLARED[0]) == -3 and len(e.errors) == 1
    assert DECLARED[1].shown() == "2 x WIDTH" and DECLARED[3].rule() == "in [0, 1]"
