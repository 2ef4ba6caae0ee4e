"""The curriculum's settings, their rules, and the environment reader the trainer and the plugin
share: the same names, defaults and messages wherever the curriculum is switched on."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from .order import DATA_ORDERS
from .pool import POOLS
from .schedules import SCHEDULES
from .scores import SCORES


@dataclass(frozen=True)
class CurriculumConfig:
    enabled: bool = False           # CURRICULUM
    score: str = "unigram_entropy"  # CURRICULUM_SCORE
    schedule: str = "v"             # CURRICULUM_SCHEDULE
    peak: float | str = 0.45        # CURRICULUM_PEAK: a progress in [0, 1] or "warmdown"
    target: float = 0.5             # CURRICULUM_TARGET, for the constant schedule
    oversample: float = 2.0         # CURRICULUM_OVERSAMPLE: pool size / sequences kept
    pool: str = "fresh"             # CURRICULUM_POOL: fresh (drop the rest) or carry (the rest waits)
    log_every: int = 50             # CURRICULUM_LOG_EVERY: steps between loader log lines

    def problems(self) -> list[str]:
        """Every invalid setting, named by its environment variable."""
        out = []
        if self.score not in SCORES:
            out.append(f"CURRICULUM_SCORE={self.score!r}: must be one of {', '.join(SCORES)}")
        if self.schedule not in SCHEDULES:
            out.append(f"CURRICULUM_SCHEDULE={self.schedule!r}: must be one of {', '.join(SCHEDULES)}")
        if self.peak != "warmdown" and not (isinstance(self.peak, float) and 0.0 <= self.peak <= 1.0):
            out.append(f"CURRICULUM_PEAK={self.peak!r}: must be a number in [0, 1] or 'warmdown'")
        if not 0.0 <= self.target <= 1.0:
            out.append(f"CURRICULUM_TARGET={self.target!r}: must be in [0, 1]")
        if not (math.isfinite(self.oversample) and self.oversample >= 1.0):
            out.append(f"CURRICULUM_OVERSAMPLE={self.oversample!r}: must be a number >= 1")
        if self.pool not in POOLS:
            out.append(f"CURRICULUM_POOL={self.pool!r}: must be one of {', '.join(POOLS)}")
        if self.log_every < 0:
            out.append(f"CURRICULUM_LOG_EVERY={self.log_every!r}: must be >= 0 (0: never)")
        return out

    def pool_size(self, keep: int) -> int:
        """Sequences read per micro-batch to keep `keep`: exactly `keep` when off."""
        if not self.enabled:
            return keep
        return max(keep, math.ceil(self.oversample * keep - 1e-9))


def _finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _zero_or_one(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError(raw)
    return raw == "1"


class EnvReader:
    """Reads typed settings from an environment mapping, collecting every problem."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ, self.errors, self.values = environ, [], {}

    def _read(self, name: str, default, parse, expected: str, allowed=lambda v: True, rule: str = ""):
        raw = (self.environ.get(name) or "").strip()
        value = default
        if raw:
            try:
                value = parse(raw)
            except ValueError:
                self.errors.append(f"{name}={raw!r}: must be {expected}")
            else:
                if not allowed(value):
                    self.errors.append(f"{name}={raw!r}: must be {rule}")
        self.values[name] = value
        return value

    def env_int(self, name: str, default: int, minimum: int | None = None) -> int:
        return self._read(name, default, int, "an integer", lambda v: minimum is None or v >= minimum, f">= {minimum}")

    def env_float(self, name: str, default: float, minimum: float = -math.inf, maximum: float = math.inf) -> float:
        return self._read(name, default, _finite_float, "a finite number", lambda v: minimum <= v <= maximum,
                          f"in [{minimum}, {maximum}]")

    def env_bool(self, name: str, default: bool) -> bool:
        return self._read(name, default, _zero_or_one, "0 or 1")

    def env_str(self, name: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        return self._read(name, default, str, "text", lambda v: choices is None or v in choices,
                          f"one of {', '.join(choices or ())}")


def read_curriculum(e: EnvReader) -> CurriculumConfig:
    """The CURRICULUM* settings; a value that does not parse is in `e.errors`, one that breaks a
    rule in the config's `problems()`."""
    peak_raw = e.env_str("CURRICULUM_PEAK", "0.45")
    try:
        peak: float | str = peak_raw if peak_raw == "warmdown" else float(peak_raw)
    except ValueError:
        peak = peak_raw
    return CurriculumConfig(
        enabled=e.env_bool("CURRICULUM", False),
        score=e.env_str("CURRICULUM_SCORE", "unigram_entropy"),
        schedule=e.env_str("CURRICULUM_SCHEDULE", "v"),
        peak=peak,
        target=e.env_float("CURRICULUM_TARGET", 0.5),
        oversample=e.env_float("CURRICULUM_OVERSAMPLE", 2.0),
        pool=e.env_str("CURRICULUM_POOL", "fresh"),
        log_every=e.env_int("CURRICULUM_LOG_EVERY", 50),
    )


def read_data_order(e: EnvReader) -> str:
    """DATA_ORDER: the order rows are read in, for the baseline and the curriculum alike."""
    return e.env_str("DATA_ORDER", "sequential", choices=DATA_ORDERS)
