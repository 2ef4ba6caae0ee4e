"""The curriculum's settings and their rules: the same names, defaults and messages wherever the
curriculum is switched on (each declared once as a `Setting`, curriculum/environment.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .environment import EnvReader, Setting
from .order import DATA_ORDERS

DATA_ALIGNS = ("none", "bos")  # curriculum/readers/ read the rows as these say
from .pool import POOLS
from .schedules import SCHEDULES
from .scores import SCORES

# The names the settings accept, and the option groups' dataclasses, live here rather than in the
# modules that implement them, so that reading the settings imports none of those modules: a run
# imports only the parts of curriculum/ its settings use, and a user's artifact counts only those.
TOKEN_SIGNALS = ("unigram_entropy", "distinct_ratio", "repeat_bigram_rate", "unigram_rarity", "random")
TEXT_SIGNALS = ("compression_ratio", "lexical_diversity", "readability")
MODEL_SIGNALS = ("proxy_loss",)  # written by tools/proxy_loss.py, which trains the reference model
SIGNALS = TOKEN_SIGNALS + TEXT_SIGNALS + MODEL_SIGNALS
PACINGS = ("warmup", "linear", "reverse", "v")
PACING_PARAMETERS = dict(warmup=("start", "warmup"), linear=("start",), reverse=("start",), v=("width",))
MIX_MODES = ("", "natural", "stratified", "adaptive")
MIX_RULES = ("odm", "excess_loss")


@dataclass(frozen=True)
class OrderConfig:
    """DATA_ORDER=curriculum's settings (ORDER_SETTINGS below; curriculum/readers/index_order.py draws by them)."""
    score: str = "compression_ratio"   # ORDER_SCORE
    pacing: str = "warmup"             # ORDER_PACING
    start: float = 0.2                 # ORDER_START
    warmup: float = 0.2                # ORDER_WARMUP
    width: float = 0.5                 # ORDER_WIDTH
    index: str = ""                    # ORDER_INDEX ("": beside the shards)

    def parameters(self) -> dict:
        """The settings this pacing reads: two runs that differ only in others ran the same order."""
        return dict(score=self.score, pacing=self.pacing) | {k: getattr(self, k) for k in PACING_PARAMETERS[self.pacing]}


@dataclass(frozen=True)
class MixConfig:
    """MIX's settings (MIX_SETTINGS below; curriculum/mixing.py mixes by them)."""
    mode: str = ""              # MIX
    datasets: str = ""          # MIX_DATASETS: name=glob,...
    rule: str = "odm"           # MIX_RULE
    update_every: int = 8       # MIX_UPDATE_EVERY, micro-batches
    smoothing: float = 0.9      # MIX_SMOOTHING: ODM's reward average
    step_size: float = 1.0      # MIX_STEP_SIZE: excess loss's eta
    min_weight: float = 0.05    # MIX_MIN_WEIGHT: excess loss's floor
    reference: str = ""         # MIX_REFERENCE: name=loss,... or index:<file>

    def named_globs(self) -> list[tuple[str, str]]:
        return [tuple(part.split("=", 1)) for part in self.datasets.split(",") if part.strip()]

    def problems(self, phases: bool = False) -> list[str]:
        """Every invalid MIX* setting; with `phases`, a phases file names the datasets blended."""
        out = []
        parts = [p for p in self.datasets.split(",") if p.strip()]
        if phases and parts:
            out.append(f"MIX_DATASETS={self.datasets!r}: a phases file names the datasets it blends; unset MIX_DATASETS")
        elif self.mode and not parts and not phases:
            out.append(f"MIX={self.mode}: needs MIX_DATASETS=name=glob,name=glob,... (two or more datasets)")
        bad = [p for p in parts if "=" not in p or not p.split("=", 1)[0].strip() or not p.split("=", 1)[1].strip()]
        if bad:
            out.append(f"MIX_DATASETS={self.datasets!r}: each part must be name=glob ({bad[0]!r} is not)")
        names = [p.split("=", 1)[0].strip() for p in parts if "=" in p]
        if len(set(names)) != len(names):
            out.append(f"MIX_DATASETS={self.datasets!r}: a name appears twice")
        if self.mode and 0 < len(parts) < 2 and not phases:
            out.append(f"MIX_DATASETS={self.datasets!r}: a mixture needs two or more datasets")
        if self.mode == "adaptive" and self.rule == "excess_loss" and not self.reference:
            out.append("MIX_RULE=excess_loss: needs MIX_REFERENCE (name=loss,... or index:<file> with proxy_loss: "
                       "python -m tools.proxy_loss writes the per-domain means)")
        if self.reference and not self.reference.startswith("index:"):
            try:
                values = parse_reference(self.reference)
            except ValueError:
                out.append(f"MIX_REFERENCE={self.reference!r}: must be name=loss,... (finite numbers) or index:<file>")
            else:
                missing = [n for n in names if n not in values]
                if missing:
                    out.append(f"MIX_REFERENCE={self.reference!r}: no loss for {', '.join(missing)}")
        return out


def parse_reference(raw: str) -> dict[str, float]:
    """MIX_REFERENCE=name=loss,...: a ValueError names the part that is not."""
    out = {}
    for part in raw.split(","):
        name, sep, value = part.partition("=")
        if not sep or not math.isfinite(float(value)):
            raise ValueError(part)
        out[name.strip()] = float(value)
    return out


def micro_batch_seqs(batch_tokens: int, world_size: int, grad_accum_steps: int, seq_len: int) -> int:
    """Sequences each rank trains on per micro-batch: the one formula, for the run and each phase."""
    return batch_tokens // (world_size * grad_accum_steps * seq_len)


@dataclass(frozen=True)
class Shape:
    """The run's batch: its sequence length and tokens per step, and how a step splits over ranks
    and micro-batches (a phase may change the first two; phases.py falls back on them)."""
    seq_len: int
    batch_tokens: int
    world_size: int = 1
    grad_accum_steps: int = 1

    @property
    def micro_batch_seqs(self) -> int:
        return micro_batch_seqs(self.batch_tokens, self.world_size, self.grad_accum_steps, self.seq_len)


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
        """Every invalid setting, named by its environment variable (the rules of
        CURRICULUM_SETTINGS: a phases file's values are checked by the same)."""
        out = [st.problem(getattr(self, st.attribute)) for st in CURRICULUM_SETTINGS]
        if not math.isfinite(self.oversample):
            out.append(f"CURRICULUM_OVERSAMPLE={self.oversample!r}: must be >= 1")
        return [p for p in out if p]

    def pool_size(self, keep: int) -> int:
        """Sequences read per micro-batch to keep `keep`: exactly `keep` when off."""
        if not self.enabled:
            return keep
        return max(keep, math.ceil(self.oversample * keep - 1e-9))


CURRICULUM_SETTINGS = (
    Setting("CURRICULUM", "bool", False, "0: exactly the baseline's batches; 1: select from an oversampled pool",
            field="enabled"),
    Setting("CURRICULUM_SCORE", "text", "unigram_entropy", "difficulty signal (`curriculum/scores.py`); `random` is "
            "the control; `index:<signal>` looks each row's score up in the difficulty index instead (any signal of "
            "`ORDER_SCORE`; needs whole rows: `DATA_ORDER=shuffled` or `curriculum`, or `DATA_ALIGN=bos`)",
            choices=tuple(SCORES) + tuple(f"index:{name}" for name in SIGNALS), field="score",
            only_with=("CURRICULUM=1", "CURRICULUM_PHASES!=")),
    Setting("CURRICULUM_SCHEDULE", "text", "v", "`v` (easy, hardest at the peak, easy again), `linear` (easy to hard), "
            "`reverse_linear`, `constant`", choices=tuple(SCHEDULES), field="schedule",
            only_with=("CURRICULUM=1", "CURRICULUM_PHASES!=")),
    Setting("CURRICULUM_PEAK", "peak", 0.45, "progress where the V turns, or `warmdown`: where the LR starts to fall",
            field="peak", only_with=("CURRICULUM=1", "CURRICULUM_PHASES!=")),
    Setting("CURRICULUM_TARGET", "float", 0.5, "percentile of the `constant` schedule", minimum=0.0, maximum=1.0,
            field="target", only_with=("CURRICULUM=1", "CURRICULUM_PHASES!=")),
    Setting("CURRICULUM_OVERSAMPLE", "float", 2.0, "pool size / sequences kept", minimum=1.0,
            field="oversample", shown_default="2.0", only_with=("CURRICULUM=1", "CURRICULUM_PHASES!=")),
    Setting("CURRICULUM_POOL", "text", "fresh", "`fresh`: every pool is read anew and what is not kept is discarded; "
            "`carry`: what is not kept waits on the device for the next micro-batch, whose pool is the waiting "
            "sequences plus `keep` fresh ones", choices=POOLS, field="pool",
            only_with=("CURRICULUM=1", "CURRICULUM_PHASES!=")),
    Setting("CURRICULUM_LOG_EVERY", "int", 50, "steps between loader lines (both arms; 0: never)", minimum=0,
            field="log_every"),
)
DATA_ORDER = Setting(
    "DATA_ORDER", "text", "sequential", "`sequential`: the challenge's loader, the shards in order, each micro-batch "
    "the next span; `shuffled`: every shard cut into slots of `TRAIN_SEQ_LEN + 1` tokens, all visited once per pass "
    "in a permutation seeded by (`SEED`, pass), each rank its disjoint share (baseline and curriculum alike); "
    "`curriculum`: whole rows drawn from the difficulty index by `ORDER_SCORE` and `ORDER_PACING` (docs/index.md)",
    choices=DATA_ORDERS)
ORDER_SETTINGS = (
    Setting("ORDER_SCORE", "text", "compression_ratio", "with `DATA_ORDER=curriculum`, the index's signal that "
            "orders the rows (`random`: the same machinery in no order, the control)", choices=SIGNALS,
            field="score", only_with=("DATA_ORDER=curriculum",)),
    Setting("ORDER_PACING", "text", "warmup", "`warmup`: the easiest `ORDER_START` of the rows at first, every row "
            "after `ORDER_WARMUP` of the run; `linear`: the same growth over the whole run; `reverse`: hardest first; "
            "`v`: a band `ORDER_WIDTH` wide that follows the V", choices=PACINGS, field="pacing",
            only_with=("DATA_ORDER=curriculum",)),
    Setting("ORDER_START", "float", 0.2, "fraction of the rows (easiest first) drawn from at the start", minimum=0.01,
            maximum=1.0, field="start", only_with=("DATA_ORDER=curriculum",)),
    Setting("ORDER_WARMUP", "float", 0.2, "fraction of the run over which `warmup` widens to every row", minimum=0.0,
            maximum=1.0, field="warmup", only_with=("DATA_ORDER=curriculum",)),
    Setting("ORDER_WIDTH", "float", 0.5, "width of the `v` pacing's band, as a fraction of the rows", minimum=0.01,
            maximum=1.0, field="width", only_with=("DATA_ORDER=curriculum",)),
    Setting("ORDER_INDEX", "text", "", "the index file (empty: `curriculum_index_seq<L>_<align>.cidx` beside the "
            "first training shard; `make index` builds it)", field="index",
            only_with=("DATA_ORDER=curriculum", "CURRICULUM_SCORE=index:*", "CURRICULUM_PHASES!=")),
)
MIX_SETTINGS = (
    Setting("MIX", "text", "", "empty: `TRAIN_FILES` as one stream; `natural`: the `MIX_DATASETS` blended row by row "
            "at random in proportion to their sizes; `stratified`: the same proportions held exactly in every "
            "micro-batch; `adaptive`: weights that follow each dataset's training loss (`MIX_RULE`; docs/mixing.md)",
            choices=MIX_MODES, field="mode"),
    Setting("MIX_DATASETS", "text", "", "the datasets `MIX` blends: `name=glob,name=glob,...` (with "
            "`CURRICULUM_PHASES`, refused: a phases file names its own)", field="datasets", only_with=("MIX!=",)),
    Setting("MIX_RULE", "text", "odm", "`MIX=adaptive`'s rule: `odm` (EXP3 over the smoothed loss) or `excess_loss` "
            "(DoReMi-style, the loss above `MIX_REFERENCE`)", choices=MIX_RULES, field="rule",
            only_with=("MIX=adaptive",)),
    Setting("MIX_UPDATE_EVERY", "int", 8, "micro-batches between weight updates", minimum=1, field="update_every",
    only_with=("MIX=adaptive",)),
    Setting("MIX_SMOOTHING", "float", 0.9, "`odm`: the reward's moving average (beta)", minimum=0.0, maximum=0.999,
            field="smoothing", only_with=("MIX=adaptive",)),
    Setting("MIX_STEP_SIZE", "float", 1.0, "`excess_loss`: the step size (eta) on the excess loss in nats",
            minimum=0.0, field="step_size", only_with=("MIX=adaptive",)),
    Setting("MIX_MIN_WEIGHT", "float", 0.05, "`excess_loss`: every dataset's weight floor", minimum=0.0, maximum=0.3,
            field="min_weight", only_with=("MIX=adaptive",)),
    Setting("MIX_REFERENCE", "text", "", "`excess_loss`: each dataset's reference loss, `name=nats,...`, or "
            "`index:<file>`: the per-domain means of that index's `proxy_loss`", field="reference",
            only_with=("MIX_RULE=excess_loss",)),
)
DATA_ALIGN = Setting(
    "DATA_ALIGN", "text", "none", "`none`: rows are spans of the stream wherever they fall; `bos`: every row begins "
    "at a document's BOS and holds it and the next documents, each cut to `DOC_MAX_TOKENS`, cut at the row's end; "
    "the next row begins at the next document, and every token skipped is counted (log and summary); with "
    "`shuffled` the permuted unit is the aligned row", choices=DATA_ALIGNS)
DOC_MAX_TOKENS = Setting("DOC_MAX_TOKENS", "int", 0, "with `DATA_ALIGN=bos`, the most tokens of a document a row "
                         "holds (0: the row's length)", minimum=0, only_with=("DATA_ALIGN=bos",))
DATA_LAYOUT = Setting(
    "DATA_LAYOUT", "text", "rows", "`rows`: micro-batches of sequences [B, TRAIN_SEQ_LEN] (`DATA_ORDER`, `DATA_ALIGN`, "
    "`MIX`, phases); `packed`: the late records' layout, one [1, N] stream per rank read as their document-"
    "packing loader reads it, documents cut every `TRAIN_SEQ_LEN` tokens and their boundaries (`cu_seqlens`) "
    "given to attention with `ATTENTION_MASK=document`; the curriculum selects document pieces there "
    "(docs/plugin.md)", choices=("rows", "packed"))
CURRICULUM_PHASES = Setting(
    "CURRICULUM_PHASES", "text", "", "a phases file (docs/phases.md): the run in stages with their own sequence "
    "length, batch, blend of datasets and filter; empty: one stage, exactly today's run", field="phases")
SEED = Setting("SEED", "int", 1337, "model initialisation, and the slot order of `DATA_ORDER=shuffled` (the sequential "
               "order and the selection have no randomness)", minimum=0, maximum=2**32 - 1)


def read_curriculum(e: EnvReader) -> CurriculumConfig:
    """The CURRICULUM* settings; a value that does not parse is in `e.errors`, one that breaks a
    rule in the config's `problems()`."""
    return CurriculumConfig(**e.read_all(CURRICULUM_SETTINGS, check=False))
