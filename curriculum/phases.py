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
import glob
import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import CurriculumConfig, Shape, micro_batch_seqs
from .shards import ShardFormatError, shard_token_count

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
                elif value == 1.0 and i < len(raw_phases):
                    errors.append(f"{where}: until_progress=1: the run ends there, so the phases after it would "
                                  f"never run")
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


# ---------------------------------------------------------------------------------------------
# A plan as a run follows it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One phase as the loop runs it."""
    name: str
    seq_len: int
    batch_tokens: int
    micro_batch_seqs: int
    weights: tuple[float, ...]      # over the plan's datasets, in their order
    config: CurriculumConfig
    end: tuple[str, float] | None   # ("until_progress", p), ("steps", n) or ("tokens", n); epochs become steps


def open_phases(path: str, base: CurriculumConfig, run: Shape) -> tuple["RunPhases | None", list[str]]:
    """The phases file as a run follows it and every problem with it and what it names, each
    problem with its phase: the file read once and each dataset's glob resolved once. The plan
    is None where there is a problem. Phases fall back on `run`'s length and batch."""
    plan, errors = load_phases(path, base)
    if plan is None:
        return None, errors
    names = tuple(plan.datasets)
    files, tokens = [], []
    for n in names:
        d = plan.datasets[n]
        found = tuple(Path(f) for f in sorted(glob.glob(d.files)))
        if not found:
            errors.append(f"CURRICULUM_PHASES: dataset {d.name}: files={d.files!r}: no shard matches")
        count = 0
        for f in found:
            try:
                count += shard_token_count(f)
            except ShardFormatError as err:
                errors.append(f"CURRICULUM_PHASES: dataset {d.name}: {err}")
        files.append(found)
        tokens.append(count)
    for i, p in enumerate(plan.phases, 1):
        seq_len, batch = p.seq_len or run.seq_len, p.batch_tokens or run.batch_tokens
        per_micro = run.world_size * run.grad_accum_steps * seq_len
        if per_micro and batch % per_micro:
            errors.append(f"CURRICULUM_PHASES: phase {i} ({p.name}): batch_tokens={batch}: must be a multiple of "
                          f"WORLD_SIZE x GRAD_ACCUM_STEPS x seq_len = {per_micro}")
    if errors or min(run.world_size, run.grad_accum_steps) < 1:
        return None, errors
    stages = []
    for p in plan.phases:
        seq_len, batch = p.seq_len or run.seq_len, p.batch_tokens or run.batch_tokens
        end = p.end
        if end and end[0] == "epochs":  # epochs x the dataset's tokens / (its weight x the phase's batch tokens)
            of = tokens[names.index(p.epochs_of)]
            end = ("steps", float(math.ceil(end[1] * of / (p.mixture[p.epochs_of] * batch))))
        stages.append(Stage(p.name, seq_len, batch, micro_batch_seqs(batch, run.world_size, run.grad_accum_steps, seq_len),
                            tuple(p.mixture.get(n, 0.0) for n in names), p.config, end))
    return RunPhases(str(path), plan, tuple(stages), names, tuple(files), tuple(tokens)), []


@dataclass(frozen=True)
class RunPhases:
    """A checked plan with its files found and counted: the stages, the datasets' mixture."""
    path: str
    plan: PhasePlan
    stages: tuple[Stage, ...]
    names: tuple[str, ...]
    files: tuple[tuple[Path, ...], ...]
    tokens: tuple[int, ...]

    def describe(self) -> str:
        return (f"phases: {self.path} sha256 {self.plan.sha256[:16]}, {len(self.stages)} phases over datasets "
                + ", ".join(f"{n} ({t:,} tokens, on_exhaust {self.plan.datasets[n].on_exhaust})"
                            for n, t in zip(self.names, self.tokens))
                + f"; the filter's schedule runs over the {self.plan.schedule_progress}")


@dataclass
class PhaseState:
    index: int = 0
    start: dict = field(default_factory=lambda: dict(step=0, tokens=0, progress=0.0, ms=0.0))
    done: list = field(default_factory=list)
    mix_at_start: list = field(default_factory=list)   # [read, trained] per domain when the phase began


class PhaseTracker:
    """Which phase the run is in, when it ends, and what each phase did. Bookkeeping only: the
    loader switches its shape, filter and mixture when `advance` says so."""

    def __init__(self, phases: RunPhases):
        self.phases, self.stages = phases, phases.stages
        self.s = PhaseState()

    @property
    def stage(self) -> Stage:
        return self.stages[self.s.index]

    def line(self, step: int, tokens: int) -> str:
        st = self.stage
        return (f"phase:{self.s.index + 1}/{len(self.stages)} name:{st.name} step:{step} tokens:{tokens:,} "
                f"seq_len:{st.seq_len} batch_tokens:{st.batch_tokens} mixture:"
                + ",".join(f"{n}={w:.2f}" for n, w in zip(self.phases.names, st.weights))
                + f" curriculum:{int(st.config.enabled)}" + (f" ends:{st.end[0]}={st.end[1]:g}" if st.end else ""))

    def _is_last(self) -> bool:
        return self.stage.end is None or self.s.index == len(self.stages) - 1  # the last runs until the run ends

    def ended(self, step: int, tokens: int, progress: float) -> bool:
        if self._is_last():
            return False
        kind, value = self.stage.end
        if kind == "until_progress":
            return progress >= value
        return (step - self.s.start["step"] if kind == "steps" else tokens - self.s.start["tokens"]) >= value

    def local_progress(self, step: int, tokens: int, progress: float) -> float:
        """How far through its own phase the run is, in [0, 1]."""
        start = self.s.start
        if self._is_last():
            return min(max((progress - start["progress"]) / max(1.0 - start["progress"], 1e-9), 0.0), 1.0)
        kind, value = self.stage.end
        done = (progress - start["progress"]) / max(value - start["progress"], 1e-9) if kind == "until_progress" else \
            (step - start["step"] if kind == "steps" else tokens - start["tokens"]) / value
        return min(max(done, 0.0), 1.0)

    def schedule_progress(self, step: int, tokens: int, progress: float) -> float:
        """The progress the filter's schedule follows: the run's, or the phase's own."""
        return self.local_progress(step, tokens, progress) if self.phases.plan.schedule_progress == "phase" else progress

    def progress_text(self, step: int, tokens: int, progress: float) -> str:
        return f" phase:{self.s.index + 1}/{len(self.stages)} phase_progress:{self.local_progress(step, tokens, progress):.1%}"

    def record(self, mix: tuple, step: int, tokens: int, ms: float) -> None:
        """The phase that ends here: its steps, tokens, time and what it read and trained per dataset."""
        read, trained = mix
        before = self.s.mix_at_start or [[0] * len(read), [0] * len(trained)]
        self.s.done.append(dict(
            name=self.stage.name, steps=step - self.s.start["step"], tokens=tokens - self.s.start["tokens"],
            time_ms=round(ms - self.s.start["ms"], 3), seq_len=self.stage.seq_len, batch_tokens=self.stage.batch_tokens,
            read=dict(zip(self.phases.names, (np.asarray(read) - before[0]).tolist())),
            trained=dict(zip(self.phases.names, (np.asarray(trained) - before[1]).tolist()))))
        self.s.mix_at_start = [np.asarray(read).tolist(), np.asarray(trained).tolist()]

    def next_phase(self, step: int, tokens: int, progress: float, ms: float) -> None:
        self.s.index += 1
        self.s.start = dict(step=step, tokens=tokens, progress=progress, ms=ms)

    def state_dict(self) -> dict:
        return dataclasses.asdict(self.s)

    def load_state_dict(self, state: dict) -> None:
        self.s = PhaseState(**state)
