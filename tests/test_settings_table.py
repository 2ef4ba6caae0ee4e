"""trainer/settings.py's declaration: every variable read is declared, every declared rule is
enforced with a message naming it, and docs/settings.md's tables are the declaration's."""
from __future__ import annotations

import math

import pytest

import train_gpt as tg
from tools import settings_table
from trainer.settings import GROUPS, SETTINGS


def test_the_settings_page_is_the_declaration():
    page = settings_table.page_tables(settings_table.PAGE.read_text())
    assert page == settings_table.tables(), "docs/settings.md's tables are stale: python -m tools.settings_table --write"


def test_every_variable_the_trainer_reads_is_declared_once():
    names = [st.name for st in SETTINGS]
    assert len(names) == len(set(names))
    s, errors = tg.parse_settings({})
    assert errors == [] and set(s.env) == set(names)
    assert s.curriculum.enabled is False and s.grad_accum_steps == 8 and s.train_files.endswith("*train_*.bin")


def broken_value(st):
    if st.choices:
        return "not-a-choice"
    if st.minimum is not None and st.kind == "int":
        return str(int(st.minimum) - 1)
    if st.minimum is not None:
        return repr(st.minimum - 0.5)
    if st.maximum is not None:
        return repr(st.maximum + 0.5)
    return None


@pytest.mark.parametrize("st", [st for st in SETTINGS if broken_value(st) is not None], ids=lambda st: st.name)
def test_every_declared_rule_is_enforced_naming_the_variable_and_the_value(st):
    raw = broken_value(st)
    s, errors = tg.parse_settings({st.name: raw})
    errors += s.curriculum.problems()  # the curriculum's rules are its config's (a phases file's values too)
    assert any(e.startswith(f"{st.name}=") and st.rule() in e for e in errors), (st.name, raw, errors)


@pytest.mark.parametrize("kind,raw", [("int", "1.5"), ("float", "nan"), ("bool", "yes")])
def test_a_value_of_the_wrong_kind_is_named_with_the_kind_expected(kind, raw):
    st = next(st for st in SETTINGS if st.kind == kind)
    errors = tg.parse_settings({st.name: raw})[1]
    assert errors and errors[0].startswith(f"{st.name}={raw!r}: must be "), errors


def test_groups_cover_the_torchrun_variables_and_the_curriculum():
    assert [st.name for st in GROUPS["Set by torchrun"]] == ["RANK", "WORLD_SIZE", "LOCAL_RANK"]
    assert all(st.name.startswith("CURRICULUM") for st in GROUPS["Curriculum"])
    assert all(isinstance(st.default, (int, float, str)) or callable(st.default) for st in SETTINGS)
    assert not any(isinstance(st.default, float) and not math.isfinite(st.default) for st in SETTINGS)
