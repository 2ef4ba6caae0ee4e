"""The curriculum's settings and their rules, checked together with the trainer's."""
from __future__ import annotations

import math
from dataclasses import dataclass

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
