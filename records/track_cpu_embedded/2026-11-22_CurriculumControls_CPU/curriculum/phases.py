"""Phases: a run in stages, each with its sequence length, batch, blend of datasets and filter.

`CURRICULUM_PHASES=file.toml` (unset: one phase, today's run):

    schedule_progress = "run"          # the filter's schedule runs over the run, or "phase"
    [datasets.docs]
    files = "./data/datasets/embedded_docs_sp1024/*train_*.bin"
    on_exhaust = "wrap"                # or "drop": leave the mixture, the others re-normalised
    [[phase]]
    name = "short"
    until_progress = 0.3               # or steps = N, tokens = N, epochs = X with epochs_of = "docs"
    seq_len = 128                      # default: TRAIN_SEQ_LEN
    batch_tokens = 8192                # default: TRAIN_BATCH_TOKENS
    mixture = { docs = 1.0 }           # weights summing to 1
    curriculum = true                  # the filter, and any of score, schedule, peak, target,
                                       # oversample, pool (default: the CURRICULUM* settings)

`steps`, `tokens` and `epochs` are the phase's own length; `until_progress` is a point of the
run's progress. Every phase but the last needs an end. Pure: a parsed TOML table in, a plan and
every problem (named by phase and key) out.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .config import CurriculumConfig

ENDS = ("until_progress", "steps", "tokens", "epochs")
FILTER_KEYS = {"curriculum": "enabled", "score": "score", "schedule": "schedule", "peak": "peak",
               "target": "target", "oversample": "oversample", "pool": "pool"}
PHASE_KEYS = {"name", "seq_len", "batch_tokens", "mixture", "epochs_of", *ENDS, *FILTER_KEYS}
ON_EXHAUST = ("wrap", "drop")


@dataclass(frozen=True)
class Dataset:
    name: str
    files: str
    on_exhaust: str = "wrap"


@dataclass(frozen=True)
class Phase:
    name: str
    end: tuple[str, float] | None   # (one of ENDS, its value); None: until the run ends
    epochs_of: str | None
    seq_len: int | None             # None: the run's TRAIN_SEQ_LEN
    batch_tokens: int | None        # None: the run's TRAIN_BATCH_TOKENS
    mixture: dict[str, float]
    config: CurriculumConfig        # the run's CURRICULUM* settings with the phase's overrides


@dataclass(frozen=True)
class PhasePlan:
    datasets: dict[str, Dataset]
    phases: list[Phase]
    schedule_progress: str          # "run" or "phase"
    sha256: str                     # of the file's bytes: what the comparison tool groups by


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_phases(table: dict, base: CurriculumConfig, sha256: str = "") -> tuple[PhasePlan | None, list[str]]:
    """The plan, or None and every problem."""
    errors = [f"unknown key {k!r} (allowed: datasets, phase, schedule_progress)"
              for k in table if k not in ("datasets", "phase", "schedule_progress")]
    schedule_progress = table.get("schedule_progress", "run")
    if schedule_progress not in ("run", "phase"):
        errors.append(f"schedule_progress={schedule_progress!r}: must be 'run' or 'phase'")
    datasets = {}
    raw_datasets = table.get("datasets", {})
    if not isinstance(raw_datasets, dict) or not raw_datasets:
        errors.append("datasets: declare at least one, [datasets.<name>] with files = \"<shard glob>\"")
        raw_datasets = {}
    for name, spec in raw_datasets.items():
        where = f"dataset {name}"
        if not isinstance(spec, dict):
            errors.append(f"{where}: must be a table with files = \"<shard glob>\"")
            continue
        errors += [f"{where}: unknown key {k!r} (allowed: files, on_exhaust)" for k in spec if k not in ("files", "on_exhaust")]
        if not isinstance(spec.get("files"), str) or not spec.get("files"):
            errors.append(f"{where}: files: a shard glob is required")
        if spec.get("on_exhaust", "wrap") not in ON_EXHAUST:
            errors.append(f"{where}: on_exhaust={spec.get('on_exhaust')!r}: must be 'wrap' or 'drop'")
        datasets[name] = Dataset(name, str(spec.get("files", "")), spec.get("on_exhaust", "wrap"))
    raw_phases = table.get("phase", [])
    if not isinstance(raw_phases, list) or not raw_phases:
        errors.append("phase: at least one [[phase]] is required")
        raw_phases = []
    phases, last_point = [], 0.0
    for i, spec in enumerate(raw_phases, 1):
        if not isinstance(spec, dict):
            errors.append(f"phase {i}: must be a table")
            continue
        name = str(spec.get("name", f"phase{i}"))
        where = f"phase {i} ({name})"
        errors += [f"{where}: unknown key {k!r}" for k in spec if k not in PHASE_KEYS]
        ends = [k for k in ENDS if k in spec]
        end = None
        if len(ends) > 1:
            errors.append(f"{where}: {', '.join(ends)}: give one end, not several")
        elif ends:
            key, value = ends[0], spec[ends[0]]
            if key == "until_progress":
                if not (_number(value) and last_point < value <= 1.0):
                    errors.append(f"{where}: until_progress={value!r}: must be in ({last_point:g}, 1], after the "
                                  f"phase before")
                else:
                    last_point = float(value)
            elif key in ("steps", "tokens") and not _positive_int(value):
                errors.append(f"{where}: {key}={value!r}: must be a whole number > 0")
            elif key == "epochs" and not (_number(value) and value > 0):
                errors.append(f"{where}: epochs={value!r}: must be a number > 0")
            end = (key, float(value) if _number(value) else 0.0)
        elif i < len(raw_phases):
            errors.append(f"{where}: needs an end ({', '.join(ENDS)}); only the last phase may run to the end")
        epochs_of = spec.get("epochs_of")
        if end and end[0] == "epochs" and epochs_of not in (spec.get("mixture") or {}):
            errors.append(f"{where}: epochs_of={epochs_of!r}: must name a dataset of this phase's mixture")
        for key in ("seq_len", "batch_tokens"):
            if key in spec and not _positive_int(spec[key]):
                errors.append(f"{where}: {key}={spec[key]!r}: must be a whole number > 0")
        mixture = spec.get("mixture")
        if not isinstance(mixture, dict) or not mixture:
            errors.append(f"{where}: mixture: required, weights over the datasets, e.g. {{ docs = 1.0 }}")
            mixture = {}
        for d, w in mixture.items():
            if d not in raw_datasets:
                errors.append(f"{where}: mixture: {d!r} is not a declared dataset ({', '.join(raw_datasets) or 'none'})")
            if not (_number(w) and w >= 0):
                errors.append(f"{where}: mixture: {d}={w!r}: a weight must be a number >= 0")
        if mixture and all(_number(w) for w in mixture.values()) and abs(sum(mixture.values()) - 1.0) > 1e-6:
            errors.append(f"{where}: mixture: the weights sum to {sum(mixture.values()):.6g}, not 1")
        overrides = {FILTER_KEYS[k]: float(spec[k]) if k in ("peak", "target", "oversample") and _number(spec[k])
                     else spec[k] for k in FILTER_KEYS if k in spec}
        config = dataclasses.replace(base, **overrides)
        if "enabled" in overrides and not isinstance(overrides["enabled"], bool):
            errors.append(f"{where}: curriculum={overrides['enabled']!r}: must be true or false")
        for problem in config.problems():
            key = next((k for k, field in FILTER_KEYS.items() if problem.startswith(f"CURRICULUM_{field.upper()}=")), None)
            errors.append(f"{where}: {key}={problem.split('=', 1)[1]}" if key else f"{where}: {problem}")
        phases.append(Phase(name, end, epochs_of, spec.get("seq_len"), spec.get("batch_tokens"),
                            {d: float(w) for d, w in mixture.items() if _number(w)}, config))
    if errors:
        return None, errors
    return PhasePlan(datasets, phases, schedule_progress, sha256), []


def load_phases(path: str | Path, base: CurriculumConfig) -> tuple[PhasePlan | None, list[str]]:
    """Read and check a phases file; problems are prefixed with CURRICULUM_PHASES and the file."""
    prefix = f"CURRICULUM_PHASES={str(path)!r}"
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return None, [f"{prefix}: cannot read it ({e.strerror})"]
    try:
        table = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        return None, [f"{prefix}: not valid TOML ({e})"]
    plan, errors = parse_phases(table, base, hashlib.sha256(raw).hexdigest())
    return plan, [f"{prefix}: {e}" for e in errors]
