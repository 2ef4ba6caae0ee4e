"""Difficulty schedules: where in the pool's difficulty ranking each step's batch is centred.

A schedule maps training progress in [0, 1] (the trainer's progress: fraction of the
wallclock budget used, or of ITERATIONS without a cap, the same progress that drives LR
warmdown and SWA) to a target percentile in [0, 1]: 0 keeps the easiest sequences of the
pool, 1 the hardest. All are pure functions of numbers. To add one, write the function and
register it in SCHEDULES with the (progress, peak, target) signature.
"""
from __future__ import annotations

from typing import Callable


def _clip(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)


def v_schedule(progress: float, peak: float = 0.45) -> float:
    """Easy while the LR is high, hardest at `peak`, easy again through warmdown and SWA:
    progress / peak up to the peak, then 1 - (progress - peak) / (1 - peak)."""
    p, peak = _clip(progress), _clip(peak)
    if p <= peak:
        return p / peak if peak > 0 else 1.0
    return _clip(1.0 - (p - peak) / (1.0 - peak))


def linear_schedule(progress: float) -> float:
    """Easy to hard."""
    return _clip(progress)


def reverse_linear_schedule(progress: float) -> float:
    """Hard to easy."""
    return 1.0 - _clip(progress)


def constant_schedule(target: float) -> float:
    """Always the same percentile."""
    return _clip(target)


ScheduleFn = Callable[[float, float, float], float]
SCHEDULES: dict[str, ScheduleFn] = {
    "v": lambda progress, peak, target: v_schedule(progress, peak),
    "linear": lambda progress, peak, target: linear_schedule(progress),
    "reverse_linear": lambda progress, peak, target: reverse_linear_schedule(progress),
    "constant": lambda progress, peak, target: constant_schedule(target),
}


# The settings each schedule reads (CURRICULUM_PEAK, CURRICULUM_TARGET); the others change
# nothing for it, so two runs that differ only in those ran the same curriculum.
SCHEDULE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "v": ("peak",),
    "linear": (),
    "reverse_linear": (),
    "constant": ("target",),
}


def target_percentile(schedule: str, progress: float, peak: float | str, target: float,
                      warmdown_start: float) -> float:
    """The percentile a step aims at. `peak="warmdown"` turns the V exactly where the trainer's
    LR starts to fall (`warmdown_start`, in progress units)."""
    turn = warmdown_start if peak == "warmdown" else float(peak)
    return SCHEDULES[schedule](progress, turn, target)
