"""The memory check: what a run's model and micro-batches need at least, against what this
process may use, found before the model is built.

The estimate is a floor, not a forecast: the weights, their gradients and one optimizer moment
in fp32, and of each micro-batch its fp32 logits twice (the logits and their gradient) and, per
layer, the saved activations of the attention and the MLP in 16 bits. A run it refuses would not
fit without swap; a run it lets through may still need more (compilation, a second optimizer moment,
the dense attention mask), and then ends in one "out of memory" line (train_gpt.py).
"""
from __future__ import annotations

import os
import resource
from pathlib import Path

GiB = 2**30
LOGITS_LIMIT = 8 * GiB  # bytes of fp32 logits one pass may hold, training as evaluation
STATE_COPIES = 3        # weights, gradients, one optimizer moment


def parameter_count(s) -> int:
    """The model's parameters, from its settings (train_gpt.py's GPT; tests compare the two)."""
    d, head_dim = s.model_dim, s.model_dim // max(s.num_heads, 1)
    attention = 2 * d * d + 2 * d * s.num_kv_heads * head_dim + s.num_heads
    block = attention + 2 * s.mlp_mult * d * d + 4 * d  # + the two scales and the residual mix
    n_encoder = s.num_layers // 2
    total = s.num_layers * block + s.vocab_size * d + d + min(n_encoder, s.num_layers - n_encoder) * d
    if s.bigram_vocab_size:
        total += s.bigram_vocab_size * s.bigram_dim + s.bigram_dim * d + 1
    if not s.tie_embeddings:
        total += s.vocab_size * d
    return total


def state_bytes(s) -> int:
    return STATE_COPIES * 4 * parameter_count(s)


def micro_batch_bytes(s, tokens: int) -> int:
    """A micro-batch of `tokens` tokens: its logits and each layer's saved activations."""
    per_layer = 2 * s.model_dim * (4 + s.mlp_mult)
    return tokens * (2 * 4 * s.vocab_size + s.num_layers * per_layer)


def usable_bytes() -> tuple[int, str] | None:
    """What this process may still allocate on the CPU, and what sets it: the address-space limit
    (`ulimit -v`), the control group's limit, or the memory the kernel calls available."""
    limits = []
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append((soft - _status_kib("VmSize") * 1024, f"ulimit -v {soft // 1024}"))
    cgroup = Path("/sys/fs/cgroup/memory.max")
    try:
        raw = cgroup.read_text().strip()
        if raw != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            limits.append((int(raw) - used, "the control group's memory.max"))
    except (OSError, ValueError):
        pass
    available = _meminfo_kib("MemAvailable")
    if available:
        limits.append((available * 1024, "MemAvailable"))
    return min(limits) if limits else None


def _status_kib(key: str) -> int:
    return _kib(Path(f"/proc/{os.getpid()}/status"), key)


def _meminfo_kib(key: str) -> int:
    return _kib(Path("/proc/meminfo"), key)


def _kib(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory_problems(s, shapes: list[tuple[str, int, int]], usable: tuple[int, str] | None) -> list[str]:
    """The model's and each micro-batch's needs against `usable` (bytes, what sets them; None:
    unknown, e.g. a GPU, whose own limit ends the run with one line). `shapes`: (what sets it,
    seq_len, sequences a micro-batch) for the run and each phase."""
    errors = []
    state = state_bytes(s)
    model = (f"NUM_LAYERS={s.num_layers}, MODEL_DIM={s.model_dim}, MLP_MULT={s.mlp_mult}, VOCAB_SIZE={s.vocab_size}: "
             f"{parameter_count(s) / 1e6:,.1f} M parameters")
    if usable is not None and state > usable[0]:
        return [f"{model} need at least {state / GiB:.1f} GiB for weights, gradients and optimizer state; this process "
                f"may use {max(usable[0], 0) / GiB:.1f} GiB ({usable[1]})"]
    for what, seq_len, seqs in shapes:
        tokens = seq_len * seqs
        logits = tokens * s.vocab_size * 4
        if logits > LOGITS_LIMIT:
            errors.append(f"{what}: a micro-batch of {seqs} x {seq_len} tokens would hold {logits / GiB:.1f} GiB of fp32 "
                          f"logits; at most {LOGITS_LIMIT // GiB} GiB (more GRAD_ACCUM_STEPS, or fewer tokens a step)")
        elif usable is not None and state + micro_batch_bytes(s, tokens) > usable[0]:
            errors.append(f"{what}: a micro-batch of {seqs} x {seq_len} tokens needs at least "
                          f"{micro_batch_bytes(s, tokens) / GiB:.1f} GiB beside the {state / GiB:.1f} GiB of the model "
                          f"({model}); this process may use {max(usable[0], 0) / GiB:.1f} GiB ({usable[1]})")
    return errors
