"""Runs and arms: what train_gpt.py left in a folder, and which runs may be pooled.

A run is one JSON summary (with its text log for the curves), or a plain text log of the
challenge's format from anyone's script (`challenge_log_summary`). An arm is the runs whose
*canonical* settings are equal: the settings as they change the result, plus what the run
actually ran on (code, torch, device, data). Canonical means:
- settings that cannot change the result are dropped: the run's own name and seed, log and
  evaluation cadence, evaluation batching, the extra validation sets;
- a setting a summary lacks takes the trainer's default, so absent and explicit-default agree;
- paths are replaced by what they name: the training shards' fingerprint, the validation
  tokens' and the tokenizer's sha256;
- DEVICE is replaced by the device the run used (its name: CPU model or GPU);
- curriculum settings are dropped when CURRICULUM=0, and schedule parameters the schedule does
  not read (curriculum.SCHEDULE_PARAMETERS) when it is on;
- CURRICULUM_PHASES (a path) is replaced by the sha256 of the phases file's content, on or off.

The baseline is CURRICULUM=0 with no phases and every TREATMENTS setting at its default. An arm
that changes a treatment (the document mask, aligned rows) is measured against the baseline; an
arm with the curriculum and a treatment prefers a CURRICULUM=0 arm with the same treatment (and
phases), as an arm with a phases file prefers a baseline with its phases.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from curriculum import SCHEDULE_PARAMETERS
from curriculum.config import PACING_PARAMETERS
from tools import loglines


class CompareError(Exception):
    """Input that cannot be compared; the message says why."""


RUN_KEYS = ("SEED", "RUN_ID", "LOG_DIR", "RANK", "LOCAL_RANK")
# settings that change no result: a resumed run and one that wrote checkpoints end bit for bit as
# an uninterrupted run (tests/test_resume.py), so they pool with their peers
NO_EFFECT = ("TRAIN_LOG_EVERY", "CURRICULUM_LOG_EVERY", "VAL_LOSS_EVERY", "VAL_BATCH_SIZE", "VAL_SETS", "VAL_DOMAINS", "EXPECTED_STEP_MS",
             "OVERWRITE", "COLLECTIVE_TIMEOUT", "RESUME", "CHECKPOINT_EVERY")
PATHS = ("DATA_PATH", "TRAIN_FILES", "VAL_FILES", "TOKENIZER_PATH")
CURRICULUM_PREFIX = "CURRICULUM_"
# What a run ran on, beside its settings: never pooled when any differs.
FINGERPRINTS = ("code", "torch", "device", "train data", "validation data", "tokenizer")
REQUIRED = ("run_id", "settings", "roundtrip_val_loss", "roundtrip_val_bpb")
RESULTS = ("roundtrip_val_loss", "roundtrip_val_bpb", "val_loss", "val_bpb")


@dataclass
class Run:
    path: Path
    summary: dict
    log_text: str = ""
    # The device, when devices are blocks (load_runs): the run then pairs only with its seed's runs
    # on the same device, and the device no longer separates arms
    block: str | None = None

    @property
    def run_id(self) -> str:
        return str(self.summary["run_id"])

    @property
    def settings(self) -> dict:
        return self.summary["settings"]

    @property
    def seed(self):
        return self.settings.get("SEED")

    @property
    def pair_key(self):
        """What pairs two runs of two arms: the seed, or the seed on one device when devices are blocks."""
        return self.seed if self.block is None else f"{self.seed} on {self.block}"

    @property
    def provenance(self) -> dict:
        return self.summary.get("provenance") or {}

    @property
    def device(self) -> str | None:
        return self.provenance.get("device_name") or str(self.summary.get("device", "")).split(":")[0] or None


@dataclass
class Arm:
    name: str
    canonical: dict  # what its runs share: canonical settings and fingerprints
    runs: list[Run] = field(default_factory=list)
    separated_by: list[str] = field(default_factory=list)  # from the arms of the same name

    @property
    def key(self) -> tuple:
        return arm_key(self.canonical)

    @property
    def is_baseline(self) -> bool:
        """No filter, no phases, no treatment: the arm the others are measured against."""
        return not self.canonical["CURRICULUM"] and not self.canonical.get("phases") and not treatments(self.canonical)

    def by_seed(self) -> dict:
        return {r.pair_key: r for r in self.runs}


def trainer_defaults() -> dict:
    """Every setting's default as a run's summary records it: the trainer's own, so they can never drift."""
    import train_gpt
    return train_gpt.parse_settings({})[0].env


def seed_order(seed) -> tuple:
    """Sort key for seeds, which summaries may record as numbers or text."""
    return str(type(seed)), seed


def rotated(items: list, k: int) -> list:
    """The items in the k-th rotation, so that no arm always goes first (or follows the same one)."""
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def load_runs(folder: Path, devices_as_blocks: bool = False) -> tuple[list[Run], list[str], list[str]]:
    """(runs, failed runs, other problems): every file that is not a usable run is named once.
    With `devices_as_blocks`, each run's device is its block (Run.block): for an experiment that
    ran over several machines, runs of one setting pool across devices and pair only within one."""
    if not folder.is_dir():
        raise CompareError(f"{folder}: no such folder")
    runs, failed, problems, named = [], [], [], set()
    known = set(trainer_defaults())  # the settings a plain challenge log's environment may hold
    for path in sorted(folder.glob("*.json")):
        named.add(path.stem)
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as e:  # a folder named *.json, unreadable, not JSON
            problems.append(f"{path.name}: not a readable JSON file ({type(e).__name__}: {e}); left out")
            continue
        missing = [k for k in REQUIRED if not isinstance(summary, dict) or k not in summary]
        if missing or not isinstance(summary.get("settings"), dict):
            problems.append(f"{path.name}: not a train_gpt.py run summary (no {', '.join(missing) or 'settings'}); "
                            f"left out")
            continue
        malformed = summary_shape_problems(summary)
        if malformed:
            problems.append(f"{path.name}: a damaged run summary ({'; '.join(malformed)}); left out")
            continue
        log = path.with_suffix(".txt")
        run = Run(path, summary, log.read_text(errors="replace") if log.exists() else "")
        bad = [f"{k}={summary.get(k)!r}" for k in RESULTS if not finite(summary.get(k))]
        if bad:
            failed.append(f"{path.name} (seed {run.seed}): {', '.join(bad)}: the run failed; left out")
            continue
        runs.append(run)
    for log in sorted(folder.glob("*.txt")):
        if log.stem in named:
            continue
        text = log.read_text(errors="replace")
        if TRAINER_LOG.search(text):  # our own trainer's log: its summary was lost (a full disk, a kill at the end)
            problems.append(f"{log.name}: a train_gpt.py log whose summary {log.stem}.json is missing (the run did not "
                            f"finish writing it); left out, not read as a plain log")
            continue
        summary = challenge_log_summary(text, log.stem, known)
        if summary is not None and not all(finite(summary.get(k)) for k in RESULTS):
            failed.append(f"{log.name}: the final score is not a finite number: the run failed; left out")
            continue
        if summary is None:
            problems.append(f"{log.name}: a log without a summary or a final_*_roundtrip_exact line (the run crashed "
                            f"or is still running); left out")
        else:
            runs.append(Run(log, summary, text))
    if devices_as_blocks:
        for run in runs:
            run.block = run.device or "unknown device"
    if not runs:
        raise CompareError(f"{folder}: no usable run summaries (*.json written by train_gpt.py at the end of a run)"
                           + (": " + "; ".join(failed + problems) if failed or problems else ""))
    return runs, failed, problems


TRAINER_LOG = re.compile(r"^settings: \{", re.M)  # the line train_gpt.py writes after its source


def summary_shape_problems(summary: dict) -> list[str]:
    """What a summary holds in the wrong shape: the tools read these keys as these types."""
    out = [f"{key} is a {type(summary[key]).__name__}, not an object" for key in ("provenance", "val_sets", "data")
           if key in summary and summary[key] is not None and not isinstance(summary[key], dict)]
    settings = summary["settings"]
    out += [f"settings {k}={settings[k]!r} is not a single value" for k in ("SEED", "CURRICULUM")
            if k in settings and (settings[k] is None or isinstance(settings[k], (list, dict)))]
    return out


def challenge_log_summary(text: str, name: str, known: set[str]) -> dict | None:
    """A run summary from a plain log of the challenge's format, written by any script: the
    script's source, then the environment as KEY=VALUE lines, `step:` lines, and the
    `final_<format>_roundtrip_exact` line (SPEC.md). The settings are the environment's values
    of names in `known` (this trainer's settings) and CURRICULUM*, and over them those the
    plugin's `curriculum: summary` line reports (every setting it read, the seed among them).
    The code fingerprint is the sha256 of the source: the text before the first environment
    line, or before the line of '=' the challenge's scripts write after it. None when the final
    line is missing."""
    final = [(f["loss"], f["bpb"]) for f in loglines.parse("final_exact", text)]
    if not final:
        return None
    env = [(m.start(), m.group("name"), m.group("value")) for m in loglines.PATTERNS["env"].finditer(text)
           if m.group("name") in known or m.group("name").startswith(CURRICULUM_PREFIX)]
    settings = {k: v for _, k, v in env}
    plugin = plugin_summary(text)
    settings |= {k: str(v) for k, v in plugin.get("settings", {}).items()}
    end = env[0][0] if env else next((m.start() for m in loglines.PATTERNS["source_end"].finditer(text)), None)
    source = text[:end].rstrip("\n") if end else ""
    rt_loss, rt_bpb = final[-1]
    vals = [(v["step"], v["loss"], v["bpb"]) for v in loglines.parse("val", text)]
    steps = [(t["step"], t["ms"], t["avg"]) for t in loglines.parse("train", text)]
    summary = dict(run_id=settings.get("RUN_ID", name), settings=settings, plain_log=True,
                   roundtrip_val_loss=_number(rt_loss), roundtrip_val_bpb=_number(rt_bpb),
                   val_loss=_number(vals[-1][1]) if vals else _number(rt_loss),
                   val_bpb=_number(vals[-1][2]) if vals else _number(rt_bpb),
                   provenance=dict(code_sha256=hashlib.sha256(source.encode()).hexdigest() if source else None,
                                   plugin_code_sha256=plugin.get("code_sha256")))
    if isinstance(plugin.get("data"), dict):
        summary["data"] = plugin["data"]
    if steps:
        step, ms, avg = steps[-1]
        summary |= dict(steps=int(step), train_time_ms=float(ms), step_avg_ms=float(avg))
    return summary


def plugin_summary(text: str) -> dict:
    """The last `curriculum: summary {...}` line's content ({} without one, or when it is damaged)."""
    for found in reversed(loglines.parse("plugin_summary", text)):
        try:
            body = json.loads(found["json"])
        except ValueError:
            continue
        if isinstance(body, dict) and isinstance(body.get("settings", {}), dict):
            return body
    return {}


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(v):
    """'0.45' and 0.45 and 0.450 are one value."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def canonical(run: Run, defaults: dict) -> dict:
    """The settings and fingerprints that define the run's arm (see the module's docstring)."""
    s = defaults | run.settings
    out = {k: _number(v) for k, v in s.items()
           if k not in RUN_KEYS + NO_EFFECT + PATHS + ("DEVICE",) and not k.startswith(CURRICULUM_PREFIX)}
    # the index order's and the mixer's settings count only where they are read
    pacing_reads = {f"ORDER_{p.upper()}" for p in PACING_PARAMETERS.get(out.get("ORDER_PACING"), ())}
    unread = [k for k in out if (k.startswith("ORDER_") and out.get("DATA_ORDER") != "curriculum")
              or (k in ("ORDER_START", "ORDER_WARMUP", "ORDER_WIDTH") and k not in pacing_reads)
              or (k.startswith("MIX_") and not out.get("MIX"))
              or (k in ("MIX_RULE", "MIX_UPDATE_EVERY", "MIX_SMOOTHING", "MIX_STEP_SIZE", "MIX_MIN_WEIGHT",
                        "MIX_REFERENCE") and out.get("MIX") != "adaptive")]
    for k in unread:
        del out[k]
    out["phases"] = run.summary.get("phases_sha256") if s.get("CURRICULUM_PHASES") else None
    out["CURRICULUM"] = bool(_number(s.get("CURRICULUM", 0)))
    if out["CURRICULUM"]:
        schedule = s.get("CURRICULUM_SCHEDULE")
        unused = {f"CURRICULUM_{p.upper()}" for p in ("peak", "target")} - \
                 {f"CURRICULUM_{p.upper()}" for p in SCHEDULE_PARAMETERS.get(schedule, ("peak", "target"))}
        out |= {k: _number(v) for k, v in s.items()
                if k.startswith(CURRICULUM_PREFIX) and k not in unused and k not in NO_EFFECT and k != "CURRICULUM_PHASES"}
    p, summary = run.provenance, run.summary
    out["code"] = p.get("code_sha256")
    out["torch"] = p.get("torch")
    out["device"] = run.device if run.block is None else "blocks: pairs within one device"
    out["train data"] = p.get("train_data_sha256") or _resolved(s.get("TRAIN_FILES"), p.get("cwd"))
    out["validation data"] = summary.get("val_sha256")
    out["tokenizer"] = summary.get("tokenizer_sha256")
    return out


def _resolved(path, cwd) -> str | None:
    if path is None:
        return None
    return str(Path(cwd or ".", path)) if not Path(path).is_absolute() else str(path)


# data-path and model settings an arm may change against the baseline, with their defaults
TREATMENTS = {"ATTENTION_MASK": "causal", "DATA_ALIGN": "none", "DOC_MAX_TOKENS": 0.0}


def treatments(c: dict) -> str:
    """The arm's non-default treatments as text ("" for none); DOC_MAX_TOKENS only where rows are
    aligned; a whole-run order from the index (measured against the shuffled order) and a mixture
    of named datasets (MIX) are treatments too."""
    changed = [(k, c.get(k, d)) for k, d in TREATMENTS.items() if _number(c.get(k, d)) != _number(d)]
    if c.get("DATA_ALIGN", "none") == "none":
        changed = [(k, v) for k, v in changed if k != "DOC_MAX_TOKENS"]
    text = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changed]
    if c.get("DATA_ORDER") == "curriculum":
        text.append(f"order {c.get('ORDER_SCORE')}/{c.get('ORDER_PACING')}")
    if c.get("MIX"):
        text.append(f"MIX={c['MIX']}" + (f" {c.get('MIX_RULE')}" if c["MIX"] == "adaptive" else ""))
    return " ".join(text)


def is_treatment_setting(k: str) -> bool:
    return k in TREATMENTS or k.startswith(("ORDER_", "MIX"))


def arm_name(c: dict, phases_file: str | None = None) -> str:
    """A readable name; a phases file shows by its name (as the first run gave it) and content hash."""
    phases = ""
    if c.get("phases"):
        stem = Path(phases_file).stem if phases_file else ""
        phases = f" phases {stem} ({c['phases'][:8]})" if stem else f" phases {c['phases'][:8]}"
    treated = treatments(c)
    if not c["CURRICULUM"]:
        return (treated or "baseline") + phases
    def show(v) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)
    schedule = c.get("CURRICULUM_SCHEDULE")
    params = "".join(f" {p}={show(c.get('CURRICULUM_' + p.upper()))}" for p in SCHEDULE_PARAMETERS.get(schedule, ()))
    pool = c.get("CURRICULUM_POOL")
    return (f"curriculum {c.get('CURRICULUM_SCORE')}/{schedule}{params} x{show(c.get('CURRICULUM_OVERSAMPLE'))}"
            + (f" {pool}" if pool not in (None, "fresh") else "") + (f" {treated}" if treated else "") + phases)


def arm_key(c: dict) -> tuple:
    return tuple(sorted((k, json.dumps(v)) for k, v in c.items()))


def group_arms(runs: list[Run]) -> list[Arm]:
    """Arms, baselines first; two runs of one seed in one arm is an error naming both files."""
    defaults = trainer_defaults()
    arms: dict[tuple, Arm] = {}
    for run in runs:
        c = canonical(run, defaults)
        arms.setdefault(arm_key(c), Arm(arm_name(c, run.settings.get("CURRICULUM_PHASES")), c)).runs.append(run)
    out = sorted(arms.values(), key=lambda a: (not a.is_baseline, a.name, a.key))
    duplicates = []
    for a in out:
        seeds = defaultdict(list)
        for r in a.runs:
            seeds[r.pair_key].append(r.path.name)
        duplicates += [f"{a.name}: seed {seed} in {', '.join(files)}" for seed, files in seeds.items() if len(files) > 1]
        a.runs.sort(key=lambda r: seed_order(r.pair_key))
    if duplicates:
        raise CompareError("two runs of one seed in one arm (a re-run, or one summary copied under two names); "
                           "keep one of each and compare again:\n  " + "\n  ".join(duplicates))
    names = defaultdict(list)
    for a in out:
        names[a.name].append(a)
    for same in names.values():  # arms of one name differ in another setting or fingerprint
        if len(same) > 1:
            split = list(differing(same))
            for i, a in enumerate(same, 1):
                a.name, a.separated_by = f"{a.name} #{i}", split
    return out


def differing(arms: list[Arm]) -> dict[str, list]:
    """{setting or fingerprint: [value in each arm, in order]} for what is not equal across the arms."""
    out = {}
    for k in sorted({k for a in arms for k in a.canonical}):
        values = [a.canonical.get(k, "(absent)") for a in arms]
        if len({json.dumps(v) for v in values}) > 1:
            out[k] = values
    return out


def find_baseline(arm: Arm, arms: list[Arm]) -> tuple[Arm | None, str | None]:
    """The baseline arm equal in every setting and fingerprint but the curriculum's (and, for an
    arm with a phases file, its phases), or why none is."""
    def rest(a: Arm) -> dict:
        out = {k: v for k, v in a.canonical.items()
               if k not in ("CURRICULUM", "phases") and not is_treatment_setting(k) and not k.startswith(CURRICULUM_PREFIX)}
        if out.get("DATA_ORDER") == "curriculum":  # the index order's baseline reads the same whole rows, shuffled
            out["DATA_ORDER"] = "shuffled"
        return out
    target = rest(arm)
    unfiltered = [b for b in arms if not b.canonical["CURRICULUM"] and b is not arm]
    same = [b for b in unfiltered if b.canonical.get("phases") == arm.canonical.get("phases")
            and treatments(b.canonical) == treatments(arm.canonical)]
    for b in same + [b for b in unfiltered if b.is_baseline]:  # the same phases and treatments first, then none
        if rest(b) == target:
            return b, None
    baselines = [b for b in arms if b.is_baseline]
    if not baselines:
        return None, f"{arm.name}: no baseline run (CURRICULUM=0) in the folder"
    closest = min(baselines, key=lambda b: sum(rest(b).get(k) != v for k, v in target.items()))
    diff = [k for k in sorted(set(target) | set(rest(closest))) if target.get(k) != rest(closest).get(k)]
    return None, (f"{arm.name}: no baseline with the same settings and fingerprints; the closest, "
                  f"{closest.name}, differs in {', '.join(diff)}")


def pair_by_seed(arm: Arm, base: Arm) -> tuple[list, list[str]]:
    """The seeds both arms ran, and a line for every run left without a partner."""
    a, b = arm.by_seed(), base.by_seed()
    seeds = sorted(set(a) & set(b), key=seed_order)
    unmatched = [f"{arm.name} vs {base.name}: {r.path.name} (seed {seed}) has no partner in {other.name}; "
                 f"left out of the paired test"
                 for this, other in ((a, base), (b, arm)) for seed, r in sorted(this.items(), key=lambda kv: str(kv[0]))
                 if seed not in seeds]
    return seeds, unmatched
