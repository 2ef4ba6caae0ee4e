"""curriculum/schedules.py"""
from __future__ import annotations

import pytest

from curriculum import SCHEDULE_PARAMETERS, SCHEDULES, target_percentile, v_schedule


@pytest.mark.parametrize("progress, expected", [
    (0.0, 0.0), (0.225, 0.5), (0.45, 1.0), (0.725, 0.5), (1.0, 0.0), (-0.3, 0.0), (1.7, 0.0),
])
def test_v_schedule_default_peak(progress, expected):
    assert v_schedule(progress) == pytest.approx(expected, abs=1e-12)


def test_v_schedule_other_peaks_stay_in_unit_interval():
    assert v_schedule(0.3, peak=0.6) == pytest.approx(0.5)
    assert v_schedule(0.8, peak=0.6) == pytest.approx(0.5)
    assert v_schedule(0.0, peak=0.0) == 1.0 and v_schedule(0.5, peak=0.0) == pytest.approx(0.5)
    assert v_schedule(0.5, peak=1.0) == pytest.approx(0.5) and v_schedule(1.0, peak=1.0) == 1.0
    assert all(0.0 <= v_schedule(p / 100, peak=k / 10) <= 1.0 for p in range(-10, 111) for k in range(11))


def test_registered_schedules():
    assert set(SCHEDULES) == {"v", "linear", "reverse_linear", "constant"}
    assert SCHEDULES["linear"](0.3, 0.45, 0.9) == pytest.approx(0.3)
    assert SCHEDULES["reverse_linear"](0.3, 0.45, 0.9) == pytest.approx(0.7)
    assert SCHEDULES["constant"](0.3, 0.45, 0.9) == pytest.approx(0.9)
    assert SCHEDULES["v"](0.3, 0.6, 0.9) == pytest.approx(0.5)


def test_warmdown_peak_turns_where_the_lr_starts_to_fall():
    assert target_percentile("v", 0.7, "warmdown", 0.5, warmdown_start=0.7) == 1.0
    assert target_percentile("v", 0.35, "warmdown", 0.5, warmdown_start=0.7) == pytest.approx(0.5)
    assert target_percentile("v", 0.85, "warmdown", 0.5, warmdown_start=0.7) == pytest.approx(0.5)
    assert target_percentile("v", 0.35, 0.45, 0.5, warmdown_start=0.7) == pytest.approx(0.35 / 0.45)


def test_schedule_parameters_name_exactly_what_each_schedule_reads():
    """The comparison tool ignores the parameters a schedule does not read; this keeps the table true."""
    assert set(SCHEDULE_PARAMETERS) == set(SCHEDULES)
    base = dict(progress=0.3, peak=0.45, target=0.9)
    for name, fn in SCHEDULES.items():
        for param, other in (("peak", 0.8), ("target", 0.1)):
            changed = fn(**(base | {param: other})) != fn(**base)
            assert changed == (param in SCHEDULE_PARAMETERS[name]), (name, param)
