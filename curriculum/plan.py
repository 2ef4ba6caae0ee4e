"""The data plan: every setting of the data path, read once from the environment by one function
(`read_data_plan`), the files those settings name found and opened once (`DataPlan.problems`),
and the one constructor of the data path (`open_data_path`).

    plan, errors = read_data_plan(EnvReader(os.environ), train_files=..., vocab_size=..., tokenizer=...)
    errors += plan.problems(shape)           # every rule between settings and against the files
    batches = open_data_path(plan, shape, device, rank)

The trainer's checks, the trainer's construction and the March-era plugin all go through it, so
a rule is written once and a file is opened once: what `problems` opened (the shards a glob
resolves to, MIX's datasets, the phases file, the difficulty index) is what the build uses.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

from .config import (CURRICULUM_PHASES, CURRICULUM_SETTINGS, DATA_ALIGN, DATA_LAYOUT, DATA_ORDER, DOC_MAX_TOKENS,
                     MIX_SETTINGS, ORDER_SETTINGS, SEED, CurriculumConfig, MixConfig, OrderConfig,
                     Shape, read_curriculum)
from .environment import EnvReader
from .readers.base import Mixture
from .shards import DataError, ShardFormatError, shard_token_count

# What a run's data settings are read from: the names the plan reads, in the order it reads them
DATA_SETTINGS = (SEED, DATA_ORDER, *ORDER_SETTINGS, *MIX_SETTINGS, DATA_ALIGN, DOC_MAX_TOKENS, DATA_LAYOUT,
                 *CURRICULUM_SETTINGS, CURRICULUM_PHASES)


@dataclass
class Opened:
    """What the plan found on disk, each once: the build uses these, not the files again."""
    shards: dict = field(default_factory=dict)       # glob -> (paths, tokens, problems)
    mixture: Mixture | None = None                   # MIX's datasets, resolved
    phases: dict = field(default_factory=dict)       # Shape -> curriculum.phases.RunPhases
    indexes: dict = field(default_factory=dict)      # (seq_len, signal) -> DifficultyIndex, or the DataError
    checked: set = field(default_factory=set)        # the shapes `problems` found nothing wrong with


@dataclass(frozen=True)
class DataPlan:
    """Every setting of the data path and the files they name (see the module's text)."""
    train_files: str                                 # TRAIN_FILES: a glob
    vocab_size: int
    tokenizer: str | None = None                     # the index's fingerprint names it (None: not compared)
    layout: str = "rows"                             # DATA_LAYOUT
    order: str = "sequential"                        # DATA_ORDER
    align: str = "none"                              # DATA_ALIGN
    doc_max_tokens: int = 0                          # DOC_MAX_TOKENS
    seed: int = 1337                                 # SEED
    curriculum: CurriculumConfig = CurriculumConfig()
    index_order: OrderConfig = OrderConfig()
    mix: MixConfig = MixConfig()
    phases: str = ""                                 # CURRICULUM_PHASES: a file
    missing_hint: str = ""                           # where the globs come from, for "no shard matches"
    files: tuple[Path, ...] = ()                     # the shards named one by one instead of a glob (of_files)
    # not an argument: a plan made from another (dataclasses.replace) opens and checks its own files
    opened: Opened = field(default_factory=Opened, init=False, compare=False, repr=False)

    @classmethod
    def of_files(cls, files, vocab_size: int, **settings) -> "DataPlan":
        """A plan over these shard files, as a test or a tool names them (no glob)."""
        files = tuple(Path(f) for f in files)
        return cls(" ".join(map(str, files)), vocab_size, files=files, **settings)

    # ------------------------------------------------------------ the files, each found once
    def _found(self, pattern: str, name: str) -> tuple[list[Path], int, list[str]]:
        """The shards of a glob, their tokens and their problems (a format error each), once."""
        if pattern not in self.opened.shards:
            named = self.files and pattern == self.train_files
            paths = list(self.files) if named else [Path(p) for p in sorted(glob.glob(pattern))]
            tokens, problems = 0, []
            for path in paths:
                try:
                    tokens += shard_token_count(path)
                except ShardFormatError as err:
                    problems.append(f"{name}: {err}")
            self.opened.shards[pattern] = (paths, tokens, problems)
        return self.opened.shards[pattern]

    def shards(self) -> list[Path]:
        """TRAIN_FILES's shards."""
        return list(self._found(self.train_files, "TRAIN_FILES")[0])

    def train_tokens(self) -> int:
        return self._found(self.train_files, "TRAIN_FILES")[1]

    def reads_train_files(self) -> bool:
        """Whether TRAIN_FILES is what the run reads (a phases file or MIX names its own datasets)."""
        return not self.phases and not self.mix.mode

    def files_read(self, shape: Shape) -> list[Path]:
        """Every training shard a run of `shape` reads: TRAIN_FILES's, MIX_DATASETS', or the
        phases file's datasets' (after `problems` found none)."""
        if self.phases:
            phases = self.run_phases(shape)[0]
            return [f for fs in phases.files for f in fs] if phases else []
        if self.mix.mode:
            return [f for fs in self.mixture().files for f in fs]
        return self.shards()

    def mixture(self) -> Mixture:
        """MIX_DATASETS as a mixture weighted by the datasets' sizes in tokens (each wraps when used up)."""
        if self.opened.mixture is None:
            names, files, sizes = [], [], []
            for name, pattern in self.mix.named_globs():
                found, tokens, problems = self._found(pattern.strip(), f"MIX_DATASETS[{name.strip()}]")
                if problems:
                    raise DataError(problems[0])
                if not found:
                    raise DataError(f"MIX_DATASETS: {name.strip()}={pattern!r} matches no shard")
                names.append(name.strip())
                files.append(tuple(found))
                sizes.append(tokens)
            total = sum(sizes)
            if total == 0:
                raise DataError("MIX_DATASETS: every dataset is empty")
            self.opened.mixture = Mixture(tuple(names), tuple(files), ("wrap",) * len(names),
                                          tuple(s / total for s in sizes))
        return self.opened.mixture

    def run_phases(self, shape: Shape):
        """The phases file with the run's defaults filled in, and its problems (curriculum/phases.py),
        opened once per shape; the RunPhases is None where there is a problem."""
        if shape not in self.opened.phases:
            from .phases import open_phases
            self.opened.phases[shape] = open_phases(self.phases, self.curriculum, shape)
        return self.opened.phases[shape]

    def index(self, seq_len: int, signal: str, files: list[Path] | None = None):
        """The difficulty index of the rows read at `seq_len`, checked against the data and holding
        `signal` (curriculum/index.py), opened once; a DataError names what differs."""
        key = (seq_len, signal)
        if key not in self.opened.indexes:
            from .index import open_checked
            try:
                self.opened.indexes[key] = open_checked(files or self.shards(), seq_len, self.align, self.doc_max_tokens,
                                                        self.vocab_size, self.tokenizer, signal, self.index_order.index)
            except DataError as err:
                self.opened.indexes[key] = err
        found = self.opened.indexes[key]
        if isinstance(found, DataError):
            raise found
        return found

    # ------------------------------------------------------------ the rules
    def uses_index(self) -> bool:
        return self.order == "curriculum" or (self.curriculum.enabled and self.curriculum.score.startswith("index:"))

    def problems(self, shape: Shape) -> list[str]:
        """Every rule between the data settings and against the files they name, for a run of
        `shape`: one message per problem, naming the variable, the value and what is allowed."""
        errors = list(self.curriculum.problems()) + self.mix.problems(phases=bool(self.phases))
        errors += self._layout_problems()
        if self.mix.mode and self.phases and self.mix.mode != "adaptive":
            errors.append(f"MIX={self.mix.mode}: a phases file blends its own datasets; only MIX=adaptive applies to it")
        if self.order == "curriculum" and not self.reads_train_files():
            errors.append(f"DATA_ORDER=curriculum reads one training set's index; "
                          f"{'a phases file' if self.phases else f'MIX={self.mix.mode}'} blends several datasets "
                          f"(use DATA_ORDER=shuffled there)")
        if self.reads_train_files():  # else a phases file or MIX names the datasets, and TRAIN_FILES is not read
            paths, train_tokens, format_problems = self._found(self.train_files, "TRAIN_FILES")
            if not paths:
                errors.append(f"TRAIN_FILES={self.train_files!r}: no shard matches ({self.missing_hint}`make data` "
                              f"builds the embedded default)")
            errors += format_problems
            if paths and not format_problems:
                errors += self._size_problems(shape, train_tokens)
            if paths and train_tokens and not errors and self.uses_index():
                errors += self._index_problems(shape.seq_len)
        if self.mix.mode and not self.phases and not any("MIX_DATASETS" in e for e in errors):
            for name, pattern in self.mix.named_globs():
                found, _, problems = self._found(pattern.strip(), f"MIX_DATASETS[{name}]")
                errors += problems
                if not found:
                    errors.append(f"MIX_DATASETS[{name}]={pattern!r}: no shard matches ({self.missing_hint}`make data` "
                                  f"builds the embedded default)")
        if self.phases:
            errors += self.run_phases(shape)[1]
        if self.mix.mode == "adaptive" and self.mix.rule == "excess_loss" and not errors and not self.phases:
            from .mixing import reference_losses  # imported where MIX=adaptive is used, as the mixer is
            try:
                reference_losses(self.mix.reference, self.mixture().names)
            except DataError as err:
                errors.append(str(err))
        if not errors:
            self.opened.checked.add(shape)
        return errors

    def _layout_problems(self) -> list[str]:
        if self.layout != "packed":
            return []
        errors = [f"DATA_LAYOUT=packed with {name}={value!r}: the packed layout reads the shards in the records' "
                  f"order and cuts documents itself; unset {name}" for name, value, default in (
                      ("DATA_ORDER", self.order, "sequential"), ("DATA_ALIGN", self.align, "none"),
                      ("MIX", self.mix.mode, ""), ("CURRICULUM_PHASES", self.phases, "")) if value != default]
        if self.curriculum.enabled and self.curriculum.score.startswith("index:"):
            errors.append(f"DATA_LAYOUT=packed with CURRICULUM_SCORE={self.curriculum.score}: the index scores rows; "
                          f"document pieces are scored from their tokens")
        return errors

    def _size_problems(self, shape: Shape, train_tokens: int) -> list[str]:
        if train_tokens == 0:
            return [f"TRAIN_FILES={self.train_files!r}: every training shard is empty"]
        if min(shape.grad_accum_steps, shape.seq_len, shape.world_size) < 1 or shape.micro_batch_seqs < 1:
            return []  # already an error of the shape's own settings
        read = shape.world_size * (self.curriculum.pool_size(shape.micro_batch_seqs) * shape.seq_len + 1)
        if read <= train_tokens:
            return []
        culprit = (f"CURRICULUM_OVERSAMPLE={self.curriculum.oversample:g} with " if self.curriculum.enabled else "") + \
            f"TRAIN_BATCH_TOKENS={shape.batch_tokens}"  # one micro-batch would wrap the stream around, again and again
        return [f"{culprit}: one micro-batch would read {read:,} tokens, more than the {train_tokens:,} the training "
                f"shards hold"]

    def _index_problems(self, seq_len: int) -> list[str]:
        """The index DATA_ORDER=curriculum or CURRICULUM_SCORE=index:<signal> needs, missing or built
        for other data (one message per index, naming what differs)."""
        wanted = []
        if self.order == "curriculum":
            wanted.append(("DATA_ORDER=curriculum", self.index_order.score))
        score = self.curriculum.score if self.curriculum.enabled else ""
        if score.startswith("index:"):
            if self.order == "sequential" and self.align == "none":
                return [f"CURRICULUM_SCORE={score}: the index scores whole rows, which DATA_ORDER=sequential does not "
                        f"read (spans of the stream); use DATA_ORDER=shuffled or curriculum, or DATA_ALIGN=bos"]
            wanted.append((f"CURRICULUM_SCORE={score}", score.split(":", 1)[1]))
        out = []
        for what, signal in wanted:
            try:
                self.index(seq_len, signal)
            except DataError as err:
                out.append(f"{what}: {err}")
        return out

    # ------------------------------------------------------------ what the log says of it
    def budget_line(self, shape: Shape, steps: int, what: str) -> str:
        """What `steps` steps read of the training shards: tokens, passes, and what is not trained on."""
        c = self.curriculum
        rows = c.pool_size(shape.micro_batch_seqs) if c.enabled and c.pool == "fresh" else shape.micro_batch_seqs
        read = steps * shape.world_size * shape.grad_accum_steps * rows * shape.seq_len
        trained = steps * shape.batch_tokens
        stream_tokens = self.train_tokens()
        return (f"data: budget {what}: ~{steps:,} steps read ~{read:,} tokens, {read / max(stream_tokens, 1):.2f} passes "
                f"over the {stream_tokens:,} the shards hold; {trained:,} trained on"
                + (f", {read - trained:,} discarded by the curriculum's selection" if read > trained else ""))

    def opening_lines(self) -> list[str]:
        """What the log says first of the data: which files a run reads when not TRAIN_FILES."""
        if self.phases:
            return ["data: CURRICULUM_PHASES names the datasets read; TRAIN_FILES is not read"]
        if self.mix.mode:
            return [f"data: MIX={self.mix.mode} blends MIX_DATASETS; TRAIN_FILES is not read"]
        return []


def read_data_plan(e: EnvReader, *, train_files: str, vocab_size: int, tokenizer: str | None,
                   missing_hint: str = "") -> DataPlan:
    """The data path's settings from the environment reader `e` (each value's own problem is in
    `e.errors`; the rules between them are `DataPlan.problems`). The trainer and the plugin both
    read them here; a variable `e` has read already is not read again."""
    v = {st.name: e.read(st) for st in (SEED, DATA_ORDER, DATA_ALIGN, DOC_MAX_TOKENS, DATA_LAYOUT, CURRICULUM_PHASES)}
    return DataPlan(train_files=train_files, vocab_size=vocab_size, tokenizer=tokenizer, layout=v["DATA_LAYOUT"],
                    order=v["DATA_ORDER"], align=v["DATA_ALIGN"], doc_max_tokens=v["DOC_MAX_TOKENS"], seed=v["SEED"],
                    curriculum=read_curriculum(e),
                    index_order=OrderConfig(**e.read_all(ORDER_SETTINGS)), mix=MixConfig(**e.read_all(MIX_SETTINGS)),
                    phases=v["CURRICULUM_PHASES"], missing_hint=missing_hint)


def open_data_path(plan: DataPlan, shape: Shape, device, rank: int = 0, *, warm_up_steps: int = 0,
                   budget: tuple[int, str] | None = None, read_ahead: int = 4, keep: str = "selected"):
    """The data path for one rank (curriculum/loader.py's DataPath): the plan's problems are
    found first, if they have not been for this shape, and end it as one DataError. `budget`
    (steps, what sets them) puts the budget line into the path's first log lines; a loader for
    `warm_up_steps` spreads them over the phases; `read_ahead`: micro-batches read ahead; `keep`:
    the rows a curriculum micro-batch keeps (curriculum/selector.py's KEEPS: a bench's variants)."""
    if shape not in plan.opened.checked:
        errors = plan.problems(shape)
        if errors:
            raise DataError("invalid data settings:\n  " + "\n  ".join(errors))
    lines = plan.opening_lines()
    if budget is not None and plan.reads_train_files():
        lines.append(plan.budget_line(shape, *budget))
    if plan.layout == "packed":
        from .packed_source import PackedSource
        return PackedSource(plan, shape, device, rank, first_lines=lines)
    from .loader import BatchSource
    return BatchSource(plan, shape, device, rank, warm_up_steps=warm_up_steps, read_ahead=read_ahead, first_lines=lines,
                       keep=keep)
