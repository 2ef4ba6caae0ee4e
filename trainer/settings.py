"""The trainer's settings, each declared once (`SETTINGS`: name, kind, default, rule, meaning):
parsing, the rules of single values and the README's settings table come from the declaration
(`python -m tools.settings_table` writes the table, a test holds the README to it). The rules
between settings and against the files on disk are `check_settings`. Nothing here builds a
model or reads training data.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import time
import uuid
from dataclasses import field
from pathlib import Path

import torch

from curriculum import (CurriculumConfig, DataPlan, Shape, ShardFormatError, read_data_plan,
                        shard_content_hash, shard_token_count)
from curriculum.config import (CURRICULUM_PHASES, CURRICULUM_SETTINGS, DATA_ALIGN, DATA_LAYOUT, DATA_ORDER, DOC_MAX_TOKENS,
                               MIX_SETTINGS, ORDER_SETTINGS, SEED, MixConfig, OrderConfig,
                               micro_batch_seqs)
from curriculum.environment import EnvReader, Setting
from trainer.attention import KERNELS
from trainer.memory import LOGITS_LIMIT, memory_problems, usable_bytes


class SettingsError(Exception):
    """Invalid settings; the message lists every problem found."""


def _grad_accum_default(values: dict) -> int:
    world = values.get("WORLD_SIZE", 1)
    return 8 // world if world and 8 % world == 0 else 0


S = Setting
GROUPS: dict[str, tuple[Setting, ...]] = {
    "Set by torchrun": (
        S("RANK", "int", 0, "this process's rank", minimum=0),
        S("WORLD_SIZE", "int", 1, "processes in the run", minimum=1),
        S("LOCAL_RANK", "int", 0, "this process's GPU on its machine", minimum=0),
    ),
    "Data and run": (
        S("DATA_PATH", "text", "./data/datasets/fineweb10B_sp1024", "folder with `*train_*.bin` and `*val_*.bin` shards"),
        S("TRAIN_FILES", "text", lambda v: os.path.join(v["DATA_PATH"], "*train_*.bin"),
          "glob of training shards (overrides `DATA_PATH`)", shown_default="`$DATA_PATH/*train_*.bin`"),
        S("VAL_FILES", "text", lambda v: os.path.join(v["DATA_PATH"], "*val_*.bin"), "glob of validation shards",
          shown_default="`$DATA_PATH/*val_*.bin`"),
        S("VAL_BYTES_FILES", "text", "", "a glob of per-token byte sidecars of the validation split (the late records' "
          "`fineweb_val_bytes_*.bin`: uint16 per token in the shard format): val_bpb counts those bytes instead of the "
          "tokenizer's; they must hold as many entries as the split has tokens (empty: the tokenizer's counts; "
          "`VAL_FILES` never reads a file named `_bytes_`)"),
        S("TOKENIZER_PATH", "text", "./data/tokenizers/fineweb_1024_bpe.model",
          "SentencePiece model, for the byte counts of val_bpb"),
        S("VOCAB_SIZE", "int", 1024, "must equal the tokenizer's size", minimum=2),
        S("RUN_ID", "text", lambda v: time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
          "names `logs/<RUN_ID>.txt`, `.json` and `.int6.ptz`", shown_default="time and random suffix"),
        S("LOG_DIR", "text", "logs", "where those go"),
        S("OVERWRITE", "bool", False, "1: a run may replace the logs of an earlier run of the same `RUN_ID` in "
          "`LOG_DIR`; 0: such a run is refused before any work (a resumed run appends to its own)"),
        S("CHECKPOINT_EVERY", "int", 0, "every N steps, write `<LOG_DIR>/<RUN_ID>.ckpt` atomically: weights, both "
          "optimisers, the SWA sum, every rank's data path (stream positions, shuffled pass, blend credits, the carry "
          "pool's waiting rows, the phase), RNG states, step, tokens and training time; the clock pauses while it is "
          "written (0: never)", minimum=0),
        S("RESUME", "text", "", "a checkpoint to go on from: the run continues at its step with the same losses and the "
          "same artifact bytes as a run never interrupted, and appends to its log after a `resume:` line; refused, every "
          "difference named, when the code, data, tokenizer or any setting but `RUN_ID`, `LOG_DIR`, `RESUME` and "
          "`CHECKPOINT_EVERY` differs", shown_default="none"),
        SEED,
        DATA_ORDER,
        *ORDER_SETTINGS,
        *MIX_SETTINGS,
        DATA_ALIGN,
        DOC_MAX_TOKENS,
        DATA_LAYOUT,
        S("EXPECTED_STEP_MS", "float", 0.0, "under a cap, a step time for the data budget logged at the start (0: only "
          "the budget measured over the first 10 steps is logged)", minimum=0.0),
        S("COLLECTIVE_TIMEOUT", "int", 300, "seconds any collective between ranks may wait: a rank that stops "
          "answering (stopped, hung, its machine gone) ends the run on the others with one line, exit status 3",
          minimum=1),
        S("DEVICE", "text", "auto", "`auto` (CUDA if present), `cpu` or `cuda`", choices=("auto", "cpu", "cuda")),
        S("TORCH_COMPILE", "bool", True, "compile the model and the Newton–Schulz step (CPU too); 0 runs eagerly"),
    ),
    "Model": (
        S("NUM_LAYERS", "int", 9, "transformer blocks (first half feeds the second half, U-Net style)", minimum=1),
        S("MODEL_DIM", "int", 512, "width", minimum=2),
        S("NUM_HEADS", "int", 8, "attention heads; must divide `MODEL_DIM`, head size even", minimum=1),
        S("NUM_KV_HEADS", "int", 4, "key/value heads (GQA); must divide `NUM_HEADS`", minimum=1),
        S("MLP_MULT", "int", 3, "MLP hidden width / `MODEL_DIM` (ReLU²)", minimum=1),
        S("TIE_EMBEDDINGS", "bool", True, "output head shares the embedding"),
        S("ROPE_BASE", "float", 10000.0, "rotary base", minimum=1.0),
        S("LOGIT_SOFTCAP", "float", 30.0, "logits soft-capped by tanh at this value (0: off)", minimum=0.0),
        S("QK_GAIN_INIT", "float", 1.5, "initial per-head gain on the normalised queries"),
        S("TIED_EMBED_INIT_STD", "float", 0.005, "init std of the tied embedding", minimum=0.0),
        S("BIGRAM_VOCAB_SIZE", "int", 4096, "rows of the BigramHash table (one is position 0's); 0 turns BigramHash off",
          minimum=0),
        S("BIGRAM_DIM", "int", 128, "width of a BigramHash row, projected to `MODEL_DIM`", minimum=1),
        S("ATTENTION_MASK", "text", "causal", "`causal`: every position attends all earlier ones in its row; "
          "`document`: only those of its own document (one begins at each BOS, id 1), and neither SmearGate nor "
          "BigramHash mixes across a document start; training and evaluation alike", choices=("causal", "document")),
        S("ATTENTION_KERNEL", "text", "auto", "with `ATTENTION_MASK=document`: `auto` (CUDA: `flash_varlen` for a packed "
          "stream where FlashAttention is importable, else `flex`; CPU: `per_document`), `flash_varlen`, `flex` "
          "(FlexAttention, compiled; no backward on the CPU), `per_document` (SDPA per document), `dense` (a [B, 1, T, T] "
          "mask, the last resort)", choices=KERNELS),
    ),
    "Batch, schedule, evaluation": (
        S("TRAIN_SEQ_LEN", "int", 2048, "sequence length (training and evaluation windows)", minimum=1),
        S("TRAIN_BATCH_TOKENS", "int", 786_432, "tokens per step over all ranks; a multiple of world × accumulation × "
          "seq_len", minimum=1),
        S("TRAIN_TOKENS", "int", 0, "end the run after this many trained tokens (0: no target); progress is then the "
          "larger of the wallclock (or step) fraction and the token fraction, as the log's `progress:` line says",
          minimum=0),
        S("GRAD_ACCUM_STEPS", "int", _grad_accum_default, "micro-batches per step and rank", minimum=1,
          shown_default="8 / world size"),
        S("ITERATIONS", "int", 20_000, "steps, when no wallclock cap stops the run first", minimum=1),
        S("WARMUP_STEPS", "int", 20, "steps that prime compilation (spread over the phases), then are undone (weights "
          "and optimiser restored)", minimum=0),
        S("WARMDOWN_ITERS", "int", 3000, "linear LR decay to 0 over this many steps; under a cap placed in time at the "
          "measured step time", minimum=0),
        S("WARMDOWN_FRAC", "float", 0.0, "0: `WARMDOWN_ITERS` sets the warmdown; else it spans this fraction of the "
          "training progress (of the cap's time, or of `ITERATIONS`), which holds at any step time", minimum=0.0,
          maximum=1.0),
        S("MAX_WALLCLOCK_SECONDS", "float", 600.0, "training-time cap agreed by all ranks; 0: no cap, `ITERATIONS` ends "
          "the run", minimum=0.0),
        S("VAL_LOSS_EVERY", "int", 1000, "steps between evaluations (0: only at the end); not counted as training time",
          minimum=0),
        S("VAL_BATCH_SIZE", "int", 524_288, "the baseline's evaluation batch; kept for its scripts, the windows per pass "
          "are `EVAL_BATCH_SEQS`", minimum=1),
        S("VAL_MAX_TOKENS", "int", 0, "evaluate only this prefix of the validation split (0: all); the log says so",
          minimum=0),
        S("VAL_SETS", "text", "", "named extra validation sets, `name=shard_glob,name=shard_glob`, each scored after "
          "training (pre-quant and round trip, the same byte accounting, `VAL_MAX_TOKENS` applies): one "
          "`val_set:<name>` line each and the values in the JSON summary. `configs/cpu.env` sets the embedded corpus's "
          "domains"),
        S("VAL_DOMAINS", "bool", False, "1: also score each domain of the validation split in the same pass, from "
          "the domains sidecars beside its shards (each target token counts for its document's domain; `make data` "
          "writes them): one `val_set:<domain>` line each, as `VAL_SETS` gives, at no extra evaluation"),
        S("EVAL_STRIDE", "int", 64, "sliding-window evaluation: windows of `TRAIN_SEQ_LEN` start at every multiple of "
          "this, each token scored once with the most context; must divide `TRAIN_SEQ_LEN`; 0 or ≥ `TRAIN_SEQ_LEN`: "
          "non-overlapping windows", minimum=0),
        S("EVAL_BATCH_SEQS", "int", 32, "windows per evaluation forward pass per rank (on a CPU at most 16,384 tokens' "
          "worth)", minimum=1),
        S("TRAIN_LOG_EVERY", "int", 200, "steps between `train_loss` lines (the first 10 steps always)", minimum=0),
    ),
    "Optimiser and averaging": (
        S("MATRIX_LR", "float", 0.02, "Muon learning rate for block matrices", minimum=0.0),
        S("SCALAR_LR", "float", 0.02, "AdamW learning rate for vectors and scalars", minimum=0.0),
        S("TIED_EMBED_LR", "float", 0.03, "AdamW learning rate of the tied embedding", minimum=0.0),
        S("EMBED_LR", "float", 0.6, "embedding learning rate when untied", minimum=0.0),
        S("HEAD_LR", "float", 0.008, "output head learning rate when untied", minimum=0.0),
        S("MUON_MOMENTUM", "float", 0.99, "Muon momentum (Nesterov)", minimum=0.0, maximum=1.0),
        S("MUON_MOMENTUM_WARMUP_START", "float", 0.92, "momentum at step 0, warmed linearly to `MUON_MOMENTUM`",
          minimum=0.0, maximum=1.0),
        S("MUON_MOMENTUM_WARMUP_STEPS", "int", 1500, "over this many steps", minimum=0),
        S("MUON_MOMENTUM_WARMUP_FRAC", "float", 0.0, "0: `MUON_MOMENTUM_WARMUP_STEPS` sets the warm-up; else it spans "
          "this fraction of the training progress", minimum=0.0, maximum=1.0),
        S("MUON_BACKEND_STEPS", "int", 5, "Newton–Schulz iterations", minimum=1),
        S("BETA1", "float", 0.9, "AdamW beta1", minimum=0.0, maximum=1.0),
        S("BETA2", "float", 0.95, "AdamW beta2", minimum=0.0, maximum=1.0),
        S("ADAM_EPS", "float", 1e-8, "AdamW epsilon", minimum=0.0),
        S("WEIGHT_DECAY", "float", 0.01, "decoupled weight decay in AdamW (embeddings, vectors, scalars), as in the "
          "record", minimum=0.0),
        S("MUON_WEIGHT_DECAY", "float", 0.04, "decoupled weight decay in Muon (block matrices); fixed in the record's "
          "script, named here", minimum=0.0),
        S("GRAD_CLIP_NORM", "float", 0.3, "global gradient norm clip (0: off)", minimum=0.0),
        S("SWA_ENABLED", "bool", True, "stochastic weight averaging"),
        S("SWA_START_FRAC", "float", 0.5, "start once the LR multiplier is below this", minimum=0.0, maximum=1.0),
        S("SWA_EVERY", "int", 50, "steps between snapshots; the average replaces the weights at the end", minimum=1),
        S("SWA_EVERY_FRAC", "float", 0.0, "0: `SWA_EVERY` sets the cadence; else a snapshot each time the training "
          "progress passes a multiple of this fraction", minimum=0.0, maximum=0.5),
        S("FP16_KEEP_NAME_PATTERNS", "text", "tok_emb,blocks.8.attn.c_k", "comma-separated name patterns kept in fp16 "
          "in the artifact instead of int6 (the default keeps the last block's key projection of the 9-layer model)"),
        S("CPU_AUTOCAST", "text", "auto", "on a CPU: `bf16` autocast, `off` (fp32), or `auto`: bf16 only where the CPU "
          "computes it natively (`avx512_bf16` or `amx_bf16` in its flags), since elsewhere it is emulated at about "
          "twice the cost. The log says which. CUDA always uses bf16", choices=("auto", "bf16", "off")),
        S("CPU_MALLOC", "text", "keep", "on a CPU with glibc: `keep` stops malloc from unmapping freed blocks and "
          "trimming its heap, so a step reuses the pages the last step freed instead of faulting in and zeroing about "
          "235 MB of fresh ones (a quarter of a `configs/cpu.env` step, and the cause of the curriculum's apparent "
          "4–16% cost between separate runs: docs/measured.md); `system`: glibc's default. The log's `memory:` line says "
          "which, the summary has `minor_faults_per_step` and `kernel_ms_per_step`", choices=("keep", "system")),
    ),
    "Curriculum": CURRICULUM_SETTINGS + (CURRICULUM_PHASES,),
}
del S
SETTINGS = tuple(st for group in GROUPS.values() for st in group)  # every variable the trainer reads
# CurriculumConfig, OrderConfig and MixConfig have the rest
TRAINER_SETTINGS = tuple(st for st in SETTINGS if st not in CURRICULUM_SETTINGS + ORDER_SETTINGS + MIX_SETTINGS)


class SettingsBase:
    @property
    def val_set_patterns(self) -> dict[str, str]:
        """VAL_SETS as {name: shard glob}; check_settings has vetted the syntax."""
        return dict(part.split("=", 1) for part in self.val_sets.split(",") if part.strip())

    @property
    def micro_batch_seqs(self) -> int:
        """Sequences each rank trains on per micro-batch."""
        return micro_batch_seqs(self.train_batch_tokens, self.world_size, self.grad_accum_steps, self.train_seq_len)

    @property
    def shape(self) -> Shape:
        """The run's batch as the data path takes it."""
        return Shape(self.train_seq_len, self.train_batch_tokens, self.world_size, self.grad_accum_steps)


PYTHON_TYPES = {"int": int, "float": float, "bool": bool, "text": str, "peak": object}
# every setting an attribute of its declared kind, the curriculum's as one config, and
# `env`: every value read, defaults included, as the run's summary records it
Settings = dataclasses.make_dataclass(
    "Settings", [(st.attribute, PYTHON_TYPES[st.kind]) for st in TRAINER_SETTINGS]
    + [("curriculum", CurriculumConfig), ("index_order", OrderConfig), ("mix", MixConfig), ("data", DataPlan),
       ("env", dict, field(default_factory=dict))],
    bases=(SettingsBase,))


def read_settings(environ=os.environ) -> Settings:
    """All settings, with every invalid one reported together before any work is done."""
    s, errors = parse_settings(environ)
    errors += check_settings(s)
    if "RANK" in environ and "WORLD_SIZE" in environ and s.world_size > 1:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(name, "").strip()]
        if missing:
            errors.append(f"WORLD_SIZE={s.world_size}: a run of several processes needs {' and '.join(missing)} "
                          f"(torchrun sets them: torchrun --standalone --nproc_per_node={s.world_size} train_gpt.py)")
    if errors:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(errors))
    return s


def parse_settings(environ) -> tuple[Settings, list[str]]:
    """Typed settings and the problems of each value on its own (no file is looked at).
    Defaults are the stronger stack's 8xH100 configuration."""
    e = EnvReader(environ)
    values = e.read_all(TRAINER_SETTINGS)
    tokenizer = values["tokenizer_path"] if os.path.isfile(values["tokenizer_path"]) else None
    # the data path's settings, read by the function the plugin reads them with (curriculum/plan.py)
    plan = read_data_plan(e, train_files=values["train_files"], vocab_size=values["vocab_size"], tokenizer=tokenizer,
                          missing_hint=f"DATA_PATH={values['data_path']!r}; ")
    s = Settings(**values, curriculum=plan.curriculum, index_order=plan.index_order, mix=plan.mix, data=plan)
    s.env = e.values
    return s, e.errors + e.ignored(SETTINGS)  # a value that would be ignored is refused with the rest


def same_shards(ours: list[str | Path], theirs: list[str | Path]) -> list[tuple[Path, Path]]:
    """The pairs (one of ours, one of theirs) that are one shard: the same file, or two files of
    the same size and content hash (a copy). Only files of equal size are hashed, so two sets that
    share nothing cost a `stat` each."""
    def identity(path):
        try:
            return os.path.realpath(path), os.stat(path).st_size
        except OSError:
            return os.path.realpath(path), -1
    theirs_by_size: dict[int, list[tuple[Path, str]]] = {}
    for path in theirs:
        real, size = identity(path)
        theirs_by_size.setdefault(size, []).append((Path(path), real))
    pairs = []
    for path in ours:
        real, size = identity(path)
        for other, other_real in theirs_by_size.get(size, []) if size >= 0 else []:
            if real == other_real or shard_content_hash(path) == shard_content_hash(other):
                pairs.append((Path(path), other))
                break
    return pairs


def check_memory(s: Settings, errors: list[str]) -> list[str]:
    """The model and every micro-batch shape (the run's, each phase's) against the memory this
    process may use (trainer/memory.py), where the settings they depend on are valid."""
    if (min(s.num_heads, s.num_kv_heads, s.world_size, s.grad_accum_steps, s.train_seq_len, s.model_dim) < 1
            or s.micro_batch_seqs < 1 or s.model_dim % s.num_heads
            or any(e.startswith(("NUM_", "MODEL_DIM", "TRAIN_", "WORLD_SIZE", "GRAD_ACCUM")) for e in errors)):
        return []
    shapes = [(f"TRAIN_SEQ_LEN={s.train_seq_len}, TRAIN_BATCH_TOKENS={s.train_batch_tokens}", s.train_seq_len,
               s.micro_batch_seqs)]
    phases = s.data.run_phases(s.shape)[0] if s.data.phases else None
    for i, st in enumerate(phases.stages if phases else (), 1):
        shapes.append((f"CURRICULUM_PHASES: phase {i} ({st.name}): seq_len={st.seq_len}, batch_tokens={st.batch_tokens}",
                       st.seq_len, st.micro_batch_seqs))
    on_gpu = s.device == "cuda" or (s.device == "auto" and torch.cuda.is_available())
    if on_gpu:
        usable = (torch.cuda.get_device_properties(0).total_memory, "the GPU's memory")
    else:  # the ranks of one machine share its memory
        usable = usable_bytes()
        raw = os.environ.get("LOCAL_WORLD_SIZE", "1")
        local = max(int(raw), 1) if raw.isdigit() else 1
        usable = usable and (usable[0] // local, usable[1] + (f", shared by {local} ranks" if local > 1 else ""))
    return memory_problems(s, shapes, usable)


def check_settings(s: Settings) -> list[str]:
    """Rules between settings and against the files on disk (no model, no data read); the data
    path's are its plan's (curriculum/plan.py), each file opened once there."""
    errors = []
    if s.rank >= s.world_size:
        errors.append(f"RANK={s.rank}: must be < WORLD_SIZE={s.world_size}")
    if s.num_heads < 1 or s.num_kv_heads < 1:
        pass  # below their minimum: already an error, and nothing can be divided by them
    elif s.model_dim % s.num_heads:
        errors.append(f"NUM_HEADS={s.num_heads}: must divide MODEL_DIM={s.model_dim}")
    elif (s.model_dim // s.num_heads) % 2:
        errors.append(f"MODEL_DIM/NUM_HEADS={s.model_dim // s.num_heads}: head size must be even for rotary embeddings")
    if s.num_heads >= 1 and s.num_kv_heads >= 1 and s.num_heads % s.num_kv_heads:
        errors.append(f"NUM_KV_HEADS={s.num_kv_heads}: must divide NUM_HEADS={s.num_heads}")
    if s.vocab_size > 65536:
        errors.append(f"VOCAB_SIZE={s.vocab_size}: shards hold uint16 tokens, so at most 65536")
    if s.grad_accum_steps == 0:
        errors.append(f"WORLD_SIZE={s.world_size}: the default GRAD_ACCUM_STEPS is 8 / world size, "
                      f"which is not whole; set GRAD_ACCUM_STEPS")
    per_micro = s.world_size * s.grad_accum_steps * s.train_seq_len
    if per_micro and s.train_batch_tokens % per_micro:
        errors.append(f"TRAIN_BATCH_TOKENS={s.train_batch_tokens}: must be a multiple of WORLD_SIZE x "
                      f"GRAD_ACCUM_STEPS x TRAIN_SEQ_LEN = {s.world_size} x {s.grad_accum_steps} x "
                      f"{s.train_seq_len} = {per_micro}")
    if 0 < s.eval_stride < s.train_seq_len and s.train_seq_len % s.eval_stride:
        errors.append(f"EVAL_STRIDE={s.eval_stride}: must divide TRAIN_SEQ_LEN={s.train_seq_len} "
                      f"(or be 0 or >= it: non-overlapping windows)")
    if s.bigram_vocab_size == 1:
        errors.append("BIGRAM_VOCAB_SIZE=1: must be 0 (off) or >= 2 (one row is kept for position 0)")
    if 0 < s.val_max_tokens <= s.train_seq_len:
        errors.append(f"VAL_MAX_TOKENS={s.val_max_tokens}: must exceed TRAIN_SEQ_LEN={s.train_seq_len} (0: all)")
    if s.device == "cuda" and not torch.cuda.is_available():
        errors.append("DEVICE='cuda': no CUDA device is available (use DEVICE=cpu or auto)")
    errors += check_val_sets(s.val_sets)
    if s.val_domains and s.val_sets.strip():
        errors.append(f"VAL_DOMAINS=1 with VAL_SETS={s.val_sets!r}: one source of per-domain scores, not two "
                      f"(VAL_DOMAINS scores the domains of VAL_FILES in its own pass)")
    shard_globs = [("VAL_FILES", s.val_files)]
    if not any("VAL_SETS" in e for e in errors):
        shard_globs += [(f"VAL_SETS[{name}]", pattern) for name, pattern in s.val_set_patterns.items()]
    if s.data_layout != "packed" and s.attention_kernel == "flash_varlen":
        errors.append("ATTENTION_KERNEL=flash_varlen: the varlen kernel reads a packed stream's cu_seqlens; it needs "
                      "DATA_LAYOUT=packed (rows use flex, per_document or dense)")
    if s.val_bytes_files:
        shard_globs.append(("VAL_BYTES_FILES", s.val_bytes_files))
    tokens = {}
    for name, pattern in shard_globs:
        files = validation_shards(pattern) if name == "VAL_FILES" else sorted(glob.glob(pattern))
        if not files:
            errors.append(f"{name}={pattern!r}: no shard matches (DATA_PATH={s.data_path!r}; "
                          f"`make data` builds the embedded default)")
        for path in files:
            try:
                tokens[name] = tokens.get(name, 0) + shard_token_count(path)
            except ShardFormatError as err:
                errors.append(f"{name}: {err}")
    if s.val_bytes_files and "VAL_BYTES_FILES" in tokens and tokens["VAL_BYTES_FILES"] != tokens.get("VAL_FILES"):
        errors.append(f"VAL_BYTES_FILES={s.val_bytes_files!r}: {tokens['VAL_BYTES_FILES']:,} byte counts for the "
                      f"{tokens.get('VAL_FILES', 0):,} validation tokens of VAL_FILES={s.val_files!r}: a sidecar holds "
                      f"one count per token")
    data_problems = s.data.problems(s.shape)
    errors += data_problems
    # a run never trains on a split it scores: the same file, or a copy (same size and content hash)
    trained = s.data.files_read(s.shape) if not data_problems else s.data.shards() if s.data.reads_train_files() else []
    where = (f"TRAIN_FILES={s.train_files!r}" if s.data.reads_train_files() else
             f"CURRICULUM_PHASES={s.data.phases!r}" if s.data.phases else f"MIX_DATASETS={s.data.mix.datasets!r}")
    scored = [("VAL_FILES", s.val_files, validation_shards(s.val_files))]
    if not any("VAL_SETS" in e for e in errors):
        scored += [(f"VAL_SETS[{name}]", pattern, sorted(glob.glob(pattern))) for name, pattern in s.val_set_patterns.items()]
    for name, pattern, files in scored:
        both = same_shards(trained, files)
        if both:
            named = ", ".join(str(t) if os.path.realpath(t) == os.path.realpath(v) else f"{t} (a copy of {v})"
                              for t, v in both[:3])
            errors.append(f"{where}: reads {named}{f' and {len(both) - 3} more' if len(both) > 3 else ''}, which "
                          f"{name}={pattern!r} scores; a run must not train on a split it is scored on")
    errors += check_memory(s, errors)
    logits_bytes = s.eval_batch_seqs * s.train_seq_len * s.vocab_size * 4
    if logits_bytes > LOGITS_LIMIT:
        errors.append(f"EVAL_BATCH_SEQS={s.eval_batch_seqs}: one evaluation pass would hold {logits_bytes / 2**30:.1f} GiB "
                      f"of logits; at most {LOGITS_LIMIT // (s.train_seq_len * s.vocab_size * 4)} windows of "
                      f"TRAIN_SEQ_LEN={s.train_seq_len}")
    errors += check_log_dir(s.log_dir)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s.run_id):
        errors.append(f"RUN_ID={s.run_id!r}: must be a plain file name (letters, digits, '.', '_', '-'; not starting "
                      f"with '.'), so that the logs stay in LOG_DIR")
    if not s.resume and not s.overwrite and not any(e.startswith("RUN_ID") for e in errors):
        earlier = [p for p in (Path(s.log_dir) / f"{s.run_id}{x}" for x in (".txt", ".json")) if p.exists()]
        if earlier:
            errors.append(f"RUN_ID={s.run_id!r}: {earlier[0]} exists, the log of an earlier run; choose another RUN_ID, "
                          f"or set OVERWRITE=1 to replace it")
    if s.resume and not os.path.isfile(s.resume):
        errors.append(f"RESUME={s.resume!r}: no such file (a checkpoint that CHECKPOINT_EVERY wrote)")
    if not os.path.isfile(s.tokenizer_path):
        errors.append(f"TOKENIZER_PATH={s.tokenizer_path!r}: no such file")
    else:
        import sentencepiece as spm
        try:
            sp_vocab = spm.SentencePieceProcessor(model_file=s.tokenizer_path).vocab_size()
        except (OSError, RuntimeError) as err:
            errors.append(f"TOKENIZER_PATH={s.tokenizer_path!r}: not a SentencePiece model ({err})")
        else:
            if sp_vocab != s.vocab_size:
                errors.append(f"VOCAB_SIZE={s.vocab_size}: the tokenizer {s.tokenizer_path} has {sp_vocab} pieces")
    return errors


def validation_shards(pattern: str) -> list[str]:
    """The validation shards of a glob: files named `_bytes_` are byte sidecars, never tokens."""
    return [f for f in sorted(glob.glob(pattern)) if "_bytes_" not in os.path.basename(f)]


def check_log_dir(log_dir: str) -> list[str]:
    """LOG_DIR must be a folder this process can write, or creatable: logs and the artifact go there."""
    return check_writable_folder(log_dir, "LOG_DIR")


def check_writable_folder(folder: str, name: str) -> list[str]:
    """`folder` (the setting or option `name`) is a folder this user can write, or one that can be made."""
    path = Path(folder)
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if existing == path and not path.is_dir():
        return [f"{name}={folder!r}: is a file; must be a folder (or not exist yet)"]
    if not existing.is_dir():
        return [f"{name}={folder!r}: {existing} is a file, so the folder cannot be made"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"{name}={folder!r}: {existing} is not writable by this user"]
    return []


def check_val_sets(raw: str) -> list[str]:
    """VAL_SETS is `name=glob,name=glob`: names unique, made of letters, digits, '_' or '-'."""
    errors, seen = [], set()
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        name, sep, pattern = part.partition("=")
        if not sep or not pattern or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            errors.append(f"VAL_SETS={raw!r}: {part!r} must be name=shard_glob (a name of letters, digits, _ or -)")
        elif name in seen:
            errors.append(f"VAL_SETS={raw!r}: the name {name!r} is given twice")
        seen.add(name)
    return errors
