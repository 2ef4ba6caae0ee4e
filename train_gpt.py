"""Parameter Golf trainer with an online data curriculum.

    torchrun --standalone --nproc_per_node=8 train_gpt.py        # 8 GPUs
    python train_gpt.py                                          # one process, CUDA or CPU

Every setting comes from the environment, each declared once in trainer/settings.py
(docs/settings.md lists them all). The file reads top to bottom: data, model, optimiser,
progress, evaluation, export, training loop, checkpoints; trainer/ holds the settings, the
provenance and the host probes. The data path (package `curriculum/`) meets the loop at one
seam, `curriculum.DataPath`: construction, `next_batch`, `drain_log`, `summary`, `state_dict`,
`load_state_dict` and `close`.
"""
from __future__ import annotations

import copy
from datetime import timedelta
import gc
import hashlib
import io
import json
import math
import os
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from curriculum import BOS_ID, DataError, DataExhausted, DataPath, Position, open_data_path, write_atomic
from trainer.attention import (Documents, attend_documents, document_ids, packed_model_inputs,  # noqa: F401
                               starts_from_cu_seqlens)
from trainer.host import cpu_has_native_bf16, keep_freed_memory, repeatable_kernels, select_attention_kernel
from trainer.provenance import HERE, code_bytes, code_files, code_sha256, run_provenance  # noqa: F401
from trainer.settings import (Settings, SettingsError, check_log_dir, check_settings, parse_settings,  # noqa: F401
                              read_settings)
from trainer.checkpoint import LoopState, load_checkpoint, remove_stale_temporaries, resume, save_checkpoint
from trainer.run_log import Logger, release_run_name, say_and_log
from trainer.validation import ByteTables, load_validation_bytes, load_validation_domains, load_validation_tokens

CPU_EVAL_TOKENS = 16384  # tokens per forward pass when evaluating on a CPU

# =============================================================================================
# Model: the baseline family (GQA, RoPE, QK-norm, ReLU^2 MLP, U-Net skips, tied embeddings)
# =============================================================================================


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    def __init__(self, head_dim: int, base: float):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, H, D]; rotate channel pairs (i, i + D/2) by position-dependent angles."""
        t = torch.arange(x.size(1), device=x.device, dtype=torch.float32)
        angles = torch.outer(t, self.inv_freq)
        cos, sin = angles.cos()[None, :, None, :].to(x.dtype), angles.sin()[None, :, None, :].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def attend(q: Tensor, k: Tensor, v: Tensor, docs: Documents | None, gqa: bool, training_fp32: bool = True) -> Tensor:
    """Attention over [B, heads, T, head_dim]: causal, or with `docs` causal inside each document
    by the run's kernel (trainer/attention.py). PyTorch's CPU flash kernel runs its backward far
    slower in bf16 than in fp32 (python -m tools.bench --mask-only times both): with
    `training_fp32` a CPU's training step attends in fp32; evaluation, forward only, stays in bf16
    (False: bf16 throughout, the bench's bf16_attention arm)."""
    def kernel(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if docs is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        return attend_documents(docs.kernel, q, k, v, docs.ids, gqa, docs.cu_seqlens, docs.max_seqlen)
    if training_fp32 and q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled():
        with torch.autocast("cpu", enabled=False):
            return kernel(q.float(), k.float(), v.float()).to(q.dtype)
    return kernel(q, k, v)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, rope_base: float, qk_gain_init: float,
                 training_fp32: bool = True):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.training_fp32 = training_fp32  # see attend
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.c_v = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.q_gain = nn.Parameter(torch.full((heads,), qk_gain_init))
        self.rotary = Rotary(self.head_dim, rope_base)

    def forward(self, x: Tensor, docs: Documents | None = None) -> Tensor:
        """docs: None (causal) or where the documents are (causal inside each)."""
        b, t, d = x.shape
        q = self.c_q(x).view(b, t, self.heads, self.head_dim)
        k = self.c_k(x).view(b, t, self.kv_heads, self.head_dim)
        v = self.c_v(x).view(b, t, self.kv_heads, self.head_dim)
        q, k = self.rotary(rms_norm(q)), self.rotary(rms_norm(k))
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), docs, self.kv_heads != self.heads,
                   self.training_fp32)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.fc = nn.Linear(dim, mult * dim, bias=False)
        self.proj = nn.Linear(mult * dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, s: Settings, attention_fp32: bool = True):
        super().__init__()
        dim = s.model_dim
        self.attn = Attention(dim, s.num_heads, s.num_kv_heads, s.rope_base, s.qk_gain_init, attention_fp32)
        self.mlp = MLP(dim, s.mlp_mult)
        self.attn_scale = nn.Parameter(torch.ones(dim))
        self.mlp_scale = nn.Parameter(torch.ones(dim))
        # how much of the running stream and of the embedding stream enter the block
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))))

    def forward(self, x: Tensor, x0: Tensor, docs: Documents | None = None) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x), docs)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


def bigram_rows(idx: Tensor, rows: int, starts: Tensor | None = None) -> Tensor:
    """The hash table row of each (previous, current) token pair, in int32 as the record has it:
    (36313 t[i] XOR 27191 t[i-1]) mod (rows - 1); the last row is position 0's, which has no pair,
    and with `starts` (ATTENTION_MASK=document) every document start's, whose pair would cross
    into the document before."""
    t = idx.to(torch.int32)
    h = torch.remainder(torch.bitwise_xor(36313 * t[:, 1:], 27191 * t[:, :-1]), rows - 1)
    h = torch.cat((torch.full_like(t[:, :1], rows - 1), h), dim=1)
    return h if starts is None else h.masked_fill(starts, rows - 1)


class BigramHash(nn.Module):
    """A learned vector per hashed token pair, projected to the model width; everything starts
    at zero (table and projection), so the model starts as if it were not there."""

    def __init__(self, rows: int, dim: int, model_dim: int):
        super().__init__()
        self.rows = rows
        self.table = nn.Embedding(rows, dim)
        self.proj = nn.Linear(dim, model_dim, bias=False)
        self.scale = nn.Parameter(torch.tensor(0.05))
        nn.init.zeros_(self.table.weight)
        nn.init.zeros_(self.proj.weight)

    def forward(self, idx: Tensor, starts: Tensor | None = None) -> Tensor:
        return self.scale * self.proj(self.table(bigram_rows(idx, self.rows, starts)))


class SmearGate(nn.Module):
    """Blend each position with the one before it, per channel: x <- (1 - g) x + g x_prev,
    g = sigmoid(w), w starting at 0; position 0 blends with zeros, and so does every document
    start when `starts` is given (ATTENTION_MASK=document)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, starts: Tensor | None = None) -> Tensor:
        g = torch.sigmoid(self.gate).to(x.dtype)
        before = F.pad(x[:, :-1], (0, 0, 1, 0))
        if starts is not None:
            before = before.masked_fill(starts[..., None], 0.0)
        return (1 - g) * x + g * before


def orthogonal_init(model: nn.Module, num_layers: int) -> None:
    """Every linear weight of at least 64 x 64 that is not zero-initialised becomes orthogonal
    (gain 1); output projections (`...proj`) are then scaled by 1 / sqrt(2 num_layers)."""
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if not isinstance(module, nn.Linear) or min(w.shape) < 64 or not bool(w.detach().any()):
            continue
        nn.init.orthogonal_(w, gain=1.0)
        if name.endswith("proj"):
            with torch.no_grad():
                w.mul_(1.0 / math.sqrt(2 * num_layers))


class GPT(nn.Module):
    def __init__(self, s: Settings, attention_kernel: str = "per_document", attention_fp32: bool = True):
        super().__init__()
        self.softcap = s.logit_softcap
        # ATTENTION_MASK=document: the kernel that keeps attention inside documents (trainer/attention.py)
        self.document_kernel = attention_kernel if s.attention_mask == "document" else None
        self.max_seqlen = s.train_seq_len
        self.tok_emb = nn.Embedding(s.vocab_size, s.model_dim)
        self.bigram = BigramHash(s.bigram_vocab_size, s.bigram_dim, s.model_dim) if s.bigram_vocab_size else None
        self.smear = SmearGate(s.model_dim)
        self.blocks = nn.ModuleList(Block(s, attention_fp32) for _ in range(s.num_layers))
        self.n_encoder = s.num_layers // 2
        n_decoder = s.num_layers - self.n_encoder
        self.skip_weights = nn.Parameter(torch.ones(min(self.n_encoder, n_decoder), s.model_dim))
        self.lm_head = None if s.tie_embeddings else nn.Linear(s.model_dim, s.vocab_size, bias=False)
        if s.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, std=s.tied_embed_init_std)
        else:
            nn.init.zeros_(self.lm_head.weight)
        orthogonal_init(self, s.num_layers)

    def forward(self, idx: Tensor, targets: Tensor, starts: Tensor | None = None,
                cu_seqlens: Tensor | None = None) -> Tensor:
        """Per-token cross-entropy [B, T] in nats: training takes the mean, evaluation picks
        the positions each sliding window scores (one compiled graph for both). With
        ATTENTION_MASK=document nothing crosses a document start: each BOS, or the `starts` a
        packed stream's cu_seqlens give (DATA_LAYOUT=packed)."""
        docs = None
        if self.document_kernel is not None:
            starts = idx == BOS_ID if starts is None else starts
            docs = Documents(self.document_kernel, document_ids(starts), cu_seqlens, self.max_seqlen)
        x = self.tok_emb(idx)
        if self.bigram is not None:
            x = x + self.bigram(idx, starts).to(x.dtype)
        x = x0 = self.smear(rms_norm(x), starts)
        skips = []
        for block in self.blocks[:self.n_encoder]:
            x = block(x, x0, docs)
            skips.append(x)
        for i, block in enumerate(self.blocks[self.n_encoder:]):
            if i < len(self.skip_weights):  # U-Net: the first half's outputs feed the second half
                x = x + self.skip_weights[i].to(x.dtype) * skips.pop()
            x = block(x, x0, docs)
        x = rms_norm(x)
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x, weight.to(x.dtype)).float()
        if self.softcap > 0:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                               reduction="none").view(targets.shape)


# =============================================================================================
# Optimiser: Muon for block matrices, AdamW for embeddings, head and vectors
# =============================================================================================


def newton_schulz(g: Tensor, steps: int) -> Tensor:
    """An approximately orthogonal matrix with g's singular vectors (quintic iteration)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    x = x / (x.norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Momentum SGD whose update is orthogonalised; each rank orthogonalises every
    world_size-th matrix and one all-reduce shares the results."""

    def __init__(self, params, lr: float, momentum: float, backend_steps: int, weight_decay: float,
                 orthogonalise=newton_schulz):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps,
                                      weight_decay=weight_decay))
        self.orthogonalise = orthogonalise

    @torch.no_grad()
    def step(self):
        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        for group in self.param_groups:
            updates = self._shared_updates(group, rank, world, distributed)
            decay = 1.0 - group["lr"] * group["weight_decay"]
            for p, update in zip(group["params"], updates):
                p.mul_(decay).add_(update.view_as(p).to(p.dtype), alpha=-group["lr"])

    def _shared_updates(self, group: dict, rank: int, world: int, distributed: bool) -> list[Tensor]:
        """Every matrix's orthogonalised update, as views of one flat bf16 buffer kept across
        steps. Rank r computes the updates of matrices r, r + world, ... into their slots (the
        others stay zero), so one sum over ranks gives every rank every update."""
        params = group["params"]
        if "flat_updates" not in group:
            group["flat_updates"] = torch.zeros(sum(p.numel() for p in params), device=params[0].device,
                                                dtype=torch.bfloat16)
        flat = group["flat_updates"]
        flat.zero_()
        slots = flat.split([p.numel() for p in params])
        for p, slot in list(zip(params, slots))[rank::world]:
            if p.grad is not None:
                slot.copy_(self._orthogonal_update(p, group).flatten())
        if distributed:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        return list(slots)

    def _orthogonal_update(self, p: Tensor, group: dict) -> Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:  # allocated once, on the first step
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        buf = state["momentum_buffer"]
        buf.mul_(group["momentum"]).add_(p.grad)
        g = self.orthogonalise(p.grad.add(buf, alpha=group["momentum"]), group["backend_steps"])  # Nesterov
        return g * max(1.0, g.size(0) / g.size(1)) ** 0.5


def build_optimizers(model: GPT, s: Settings, compile_fn) -> list[torch.optim.Optimizer]:
    matrices = [p for n, p in model.blocks.named_parameters() if p.ndim == 2 and "resid_mix" not in n]
    vectors = [p for n, p in model.blocks.named_parameters() if p.ndim < 2 or "resid_mix" in n]
    vectors += [model.skip_weights, model.smear.gate]
    embeddings = [model.tok_emb.weight]
    if model.bigram is not None:  # the pair table and its projection learn like the embedding
        embeddings += [model.bigram.table.weight, model.bigram.proj.weight]
        vectors.append(model.bigram.scale)
    fused = dict(fused=True) if next(model.parameters()).is_cuda else {}
    adam = dict(betas=(s.beta1, s.beta2), eps=s.adam_eps, weight_decay=s.weight_decay, **fused)
    embed_lr = s.tied_embed_lr if s.tie_embeddings else s.embed_lr
    groups = [dict(params=embeddings, lr=embed_lr, base_lr=embed_lr),
              dict(params=vectors, lr=s.scalar_lr, base_lr=s.scalar_lr)]
    if model.lm_head is not None:
        groups.append(dict(params=[model.lm_head.weight], lr=s.head_lr, base_lr=s.head_lr))
    muon = Muon(matrices, lr=s.matrix_lr, momentum=s.muon_momentum, backend_steps=s.muon_backend_steps,
                weight_decay=s.muon_weight_decay, orthogonalise=compile_fn(newton_schulz))
    for g in muon.param_groups:
        g["base_lr"] = s.matrix_lr
    return [torch.optim.AdamW(groups, **adam), muon]


# =============================================================================================
# Progress: one number in [0, 1] drives LR warmdown, SWA and the curriculum
# =============================================================================================


def training_progress(s: Settings, step: int, elapsed_ms: float, tokens: int = 0) -> float:
    """Fraction of the wallclock budget used, or of ITERATIONS when there is no cap; with
    TRAIN_TOKENS, the larger of that and the fraction of the token target trained on."""
    if s.max_wallclock_seconds > 0:
        progress = min(elapsed_ms / (1000.0 * s.max_wallclock_seconds), 1.0)
    else:
        progress = min(step / s.iterations, 1.0)
    return max(progress, min(tokens / s.train_tokens, 1.0)) if s.train_tokens else progress


def warmdown_fraction(s: Settings, step: int, elapsed_ms: float) -> float:
    """How much of the progress the warmdown spans: WARMDOWN_FRAC itself, or WARMDOWN_ITERS
    steps, placed in time at the mean step time measured so far when there is a cap, or in
    tokens when TRAIN_TOKENS ends the run before ITERATIONS would."""
    if s.warmdown_frac > 0:
        return s.warmdown_frac
    if s.max_wallclock_seconds > 0:
        step_ms = elapsed_ms / step if step > 0 else 0.0
        return s.warmdown_iters * step_ms / (1000.0 * s.max_wallclock_seconds)
    if s.train_tokens and s.train_tokens < s.iterations * s.train_batch_tokens:
        return s.warmdown_iters * s.train_batch_tokens / s.train_tokens
    return s.warmdown_iters / s.iterations


def momentum_warmed(s: Settings, step: int, progress: float) -> float:
    """How far Muon's momentum has warmed from its start to its value, in [0, 1]: over
    MUON_MOMENTUM_WARMUP_FRAC of the progress, or MUON_MOMENTUM_WARMUP_STEPS steps."""
    if s.muon_momentum_warmup_frac > 0:
        return min(progress / s.muon_momentum_warmup_frac, 1.0)
    return min(step / s.muon_momentum_warmup_steps, 1.0) if s.muon_momentum_warmup_steps else 1.0


def swa_slot(s: Settings, step: int, progress: float) -> int:
    """Which SWA interval the step ends: a snapshot is taken when it changes. SWA_EVERY_FRAC
    counts intervals of progress, SWA_EVERY intervals of steps."""
    return int(progress / s.swa_every_frac) if s.swa_every_frac > 0 else step // s.swa_every


def lr_multiplier(progress: float, warmdown: float) -> float:
    """1 until the warmdown starts, then linear to 0 at progress 1."""
    if warmdown <= 0:
        return 1.0
    return max(min(1.0, (1.0 - progress) / warmdown), 0.0)


# =============================================================================================
# Evaluation: val_loss and exact val_bpb over the whole split, on all ranks
# =============================================================================================


def use_bf16(s: Settings, device: torch.device) -> bool:
    """CUDA always computes in bf16; a CPU as CPU_AUTOCAST says, `auto` where it is native."""
    if device.type == "cuda":
        return True
    return s.cpu_autocast == "bf16" or (s.cpu_autocast == "auto" and cpu_has_native_bf16())


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def window_starts(n_targets: int, seq: int, stride: int) -> range:
    """Starts of the evaluation windows over n_targets target tokens: every multiple of the
    stride (non-overlapping when the stride is 0 or at least seq)."""
    stride = seq if stride <= 0 or stride >= seq else stride
    return range(0, n_targets - seq + 1, stride)


@torch.no_grad()
def score_windows(model, s: Settings, val_tokens: Tensor, tables: ByteTables, device: torch.device, bf16: bool,
                  stride: int | None = None, groups: Tensor | None = None, n_groups: int = 0,
                  byte_counts: Tensor | None = None) -> Tensor:
    """Sums of loss, tokens and bytes [3, 1 + n_groups] over sliding windows: each target token is
    scored once, by the window that gives it the most context. The first window scores all its
    targets, every later one only its last `stride` (default EVAL_STRIDE; the others were scored
    with less context before). Column 0 is every target; column 1 + g the targets whose entry in
    `groups` (one per target token) is g. Each rank takes a contiguous share of the windows; the
    sums are reduced in float64. `byte_counts` (VAL_BYTES_FILES, one per token) replaces the
    tokenizer's byte count of each target."""
    seq = s.train_seq_len
    starts = window_starts(val_tokens.numel() - 1, seq, s.eval_stride if stride is None else stride)
    stride = starts.step
    mine = starts[len(starts) * s.rank // s.world_size:len(starts) * (s.rank + 1) // s.world_size]
    per_batch = s.eval_batch_seqs
    if device.type == "cpu":  # a CPU gains nothing from huge matmuls and pays for GBs of logits in page faults
        per_batch = min(per_batch, max(CPU_EVAL_TOKENS // seq, 1))
    position = torch.arange(seq, device=device)
    sums = torch.zeros(3, 1 + n_groups, dtype=torch.float64, device=device)  # loss, tokens, bytes
    was_training = model.training
    model.eval()
    for i in range(0, len(mine), per_batch):
        batch = mine[i:i + per_batch]
        offsets = torch.tensor(batch, dtype=torch.long)[:, None] + torch.arange(seq + 1)
        chunk = val_tokens[offsets].to(device, non_blocking=True).long()
        x, y = chunk[:, :-1], chunk[:, 1:]
        first = torch.tensor([0 if b == 0 else seq - stride for b in batch], device=device)
        scored = (position[None, :] >= first[:, None]).double()
        with autocast(device, bf16):
            loss = model(x, y)
        target_bytes = tables.count(x, y) if byte_counts is None else byte_counts[offsets[:, 1:]].to(device)
        per_target = torch.stack([loss.double(), torch.ones_like(scored), target_bytes.double()])
        sums[:, 0] += (per_target * scored).sum(dim=(1, 2))
        if n_groups:
            member = F.one_hot(groups[offsets[:, :-1]].to(device), n_groups).double() * scored[..., None]
            sums[:, 1:] += torch.einsum("kbt,btg->kg", per_target, member)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    model.train(was_training)
    return sums.cpu()


def loss_and_bpb(sums: Tensor) -> tuple[float, float]:
    """(nats per token, bits per byte) from one column of score_windows' sums."""
    loss_sum, n_tokens, n_bytes = sums.tolist()
    return loss_sum / n_tokens, loss_sum / n_tokens / math.log(2) * n_tokens / n_bytes


def evaluate(model, s: Settings, val_tokens: Tensor, tables: ByteTables, device: torch.device,
             bf16: bool, stride: int | None = None, byte_counts: Tensor | None = None) -> tuple[float, float]:
    """(val_loss in nats per token, val_bpb) over sliding windows (score_windows)."""
    return loss_and_bpb(score_windows(model, s, val_tokens, tables, device, bf16, stride, byte_counts=byte_counts)[:, 0])


# =============================================================================================
# Export: int6 per-row matrices + fp16 rest, zstd level 22, round-trip evaluation
# =============================================================================================

INT6_MAX = 31


FP16_SMALLEST = 2.0 ** -24  # fp16's smallest subnormal: a smaller scale would round to 0
FP16_LARGEST = 65504.0


def is_int6_matrix(name: str, t: Tensor, keep_fp16: tuple[str, ...] = ()) -> bool:
    """Attention and MLP weight matrices, except those FP16_KEEP_NAME_PATTERNS names; embeddings
    and small tensors stay fp16."""
    return (t.ndim == 2 and name.startswith("blocks.") and (".attn." in name or ".mlp." in name)
            and not any(p in name for p in keep_fp16))


def quantize_int6(w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row symmetric: scale = row absmax / 31 within fp16's range (so a zero or tiny row
    never gets a zero scale), values rounded with the stored scale into [-32, 31] (int8 storage)."""
    w = w.float()
    scale = (w.abs().amax(dim=1) / INT6_MAX).clamp(FP16_SMALLEST, FP16_LARGEST).half()
    q = torch.clamp(torch.round(w / scale.float()[:, None]), -INT6_MAX - 1, INT6_MAX).to(torch.int8)
    return q, scale


def dequantize_int6(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale.float()[:, None]


def quantize_state(state: dict[str, Tensor], keep_fp16: tuple[str, ...] = ()) -> dict:
    out = {}
    for name, t in state.items():
        t = t.detach().cpu()
        if is_int6_matrix(name, t, keep_fp16):
            q, scale = quantize_int6(t)
            out[name] = {"q": q, "scale": scale}
        else:
            out[name] = t.half() if t.is_floating_point() else t
    return out


def dequantize_state(packed: dict, reference: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: (dequantize_int6(v["q"], v["scale"]) if isinstance(v, dict) else v).to(reference[name].dtype)
            for name, v in packed.items()}


def serialize_artifact(packed: dict) -> bytes:
    import zstandard
    buf = io.BytesIO()
    torch.save(packed, buf)
    return zstandard.ZstdCompressor(level=22).compress(buf.getvalue())


def load_artifact(blob: bytes) -> dict:
    import zstandard
    return torch.load(io.BytesIO(zstandard.ZstdDecompressor().decompress(blob)), weights_only=True)


# =============================================================================================
# Training
# =============================================================================================

ARTIFACT_LIMIT = 16_000_000


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory on CUDA; peak resident memory of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def train_step(model: nn.Module, base_model: GPT, optimizers: list, s: Settings, batches: DataPath,
               at: Position, bf16: bool) -> tuple[Tensor, int]:
    """One optimiser step over GRAD_ACCUM_STEPS micro-batches: the mean loss, left on the
    device, and the tokens trained on (every rank's)."""
    losses, tokens = [], 0
    for micro in range(s.grad_accum_steps):
        if isinstance(model, DDP):  # all-reduce gradients once, after the last micro-batch
            model.require_backward_grad_sync = micro == s.grad_accum_steps - 1
        x, y, *packed = batches.next_batch(at)  # the data path's seam; DATA_LAYOUT=packed adds cu_seqlens
        tokens += x.numel() * s.world_size
        documents = {}
        if packed:
            x, y, documents = packed_model_inputs(x, y, packed[0], s.attention_mask == "document",
                                                  base_model.document_kernel, s.train_seq_len)
        with autocast(x.device, bf16):
            per_token = model(x, y, **documents)
        loss = per_token.mean()
        batches.observe(per_token.detach())  # MIX=adaptive sums it per dataset on the device; else nothing
        (loss / s.grad_accum_steps).backward()
        losses.append(loss.detach())
    if s.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(base_model.parameters(), s.grad_clip_norm)
    for opt in optimizers:
        opt.step()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return torch.stack(losses).mean(), tokens


def pick_device(s: Settings) -> torch.device:
    if s.device == "cpu" or (s.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", s.local_rank)


@dataclass
class Hooks:
    """What a harness changes of a run (tools/turns.py's variants), given to `main`, never patched
    in. The defaults are every user's run."""
    attention_fp32: bool = True        # a CPU's training steps attend in fp32 under bf16 autocast (see attend)
    repeatable_kernels: bool = True    # PyTorch's deterministic mode on a CPU (trainer/host.py)
    keep: str = "selected"             # the rows a curriculum micro-batch keeps (curriculum/selector.py's KEEPS)
    timed_batches: Callable = lambda job, batches: batches  # (job, data path) -> the timed loop's data path
    before_timed: Callable = lambda job: None               # after the warm-up, before the first timed step
    timed_step: Callable = lambda step: step()              # calls step() for each timed step, returns its value


@dataclass
class Job:
    """What the phases of one run share: settings, device, data, model, optimisers, and the
    results each phase adds for the JSON summary."""
    s: Settings
    device: torch.device
    distributed: bool
    log: Logger
    bf16: bool
    val_tokens: Tensor
    val_sets: dict[str, Tensor]
    tables: ByteTables
    base_model: GPT
    model_compiled: nn.Module
    model: nn.Module
    optimizers: list
    checkpoint: dict | None = None      # RESUME's contents, checked before any training
    results: dict = field(default_factory=dict)
    val_domains: tuple[Tensor, tuple[str, ...]] | None = None  # VAL_DOMAINS: each target's domain id, the names
    val_bytes: Tensor | None = None     # VAL_BYTES_FILES: the bytes each validation token stands for
    hooks: Hooks = field(default_factory=Hooks)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def evaluate(self, tokens: Tensor, stride: int | None = None, byte_counts: Tensor | None = None) -> tuple[float, float]:
        return evaluate(self.model_compiled, self.s, tokens, self.tables, self.device, self.bf16, stride, byte_counts)

    def score_split(self) -> tuple[tuple[float, float], dict[str, tuple[float, float]]]:
        """(the validation split's (loss, bpb), with VAL_DOMAINS each domain's from the same pass)."""
        if self.val_domains is None:
            return self.evaluate(self.val_tokens, byte_counts=self.val_bytes), {}
        groups, names = self.val_domains
        sums = score_windows(self.model_compiled, self.s, self.val_tokens, self.tables, self.device, self.bf16,
                             groups=groups, n_groups=len(names), byte_counts=self.val_bytes)
        return loss_and_bpb(sums[:, 0]), {name: loss_and_bpb(sums[:, 1 + g]) for g, name in enumerate(names)
                                          if sums[1, 1 + g] > 0}

    def score_sets(self) -> dict[str, tuple[float, float]]:
        """Each VAL_SETS set's (loss, bpb), one pass each."""
        return {name: self.evaluate(tokens) for name, tokens in self.val_sets.items()}

    def named_sets(self) -> dict[str, tuple[int, str]]:
        """{name: (target tokens, sha256)} of the per-domain scores' sets."""
        if self.val_domains is None:
            return {name: (t.numel() - 1, hashlib.sha256(t.numpy().tobytes()).hexdigest())
                    for name, t in self.val_sets.items()}
        groups, names = self.val_domains
        starts = window_starts(self.val_tokens.numel() - 1, self.s.train_seq_len, self.s.eval_stride)
        n_scored = starts[-1] + self.s.train_seq_len  # the windows score targets 0 .. n_scored - 1, once each
        targets, domains = self.val_tokens[1:n_scored + 1], groups[:n_scored]
        out = {}
        for g, name in enumerate(names):
            mine = targets[domains == g]
            if mine.numel():
                out[name] = (mine.numel(), hashlib.sha256(mine.numpy().tobytes()).hexdigest())
        return out

    def make_batches(self, warm_up_steps: int = 0, budget: tuple[int, str] | None = None) -> DataPath:
        """The data path (curriculum/plan.py); with `warm_up_steps`, one that spreads them over
        every phase; with `budget` (steps, what sets them), its first lines say what they read."""
        return open_data_path(self.s.data, self.s.shape, self.device, self.s.rank, warm_up_steps=warm_up_steps,
                              budget=budget, keep=self.hooks.keep)


def set_up(started: float, hooks: Hooks) -> Job:
    """Settings, device and process group, the log's header, data, provenance, model, optimisers."""
    s = read_settings()
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    device = pick_device(s)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if distributed:
        # our own timeout on every collective: a rank that stops answering ends the run on the others
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=device
                                if device.type == "cuda" else None, timeout=timedelta(seconds=s.collective_timeout))
    log = Logger(s)
    log(Path(__file__).read_text(), console=False)
    for path in code_files()[1:]:  # curriculum/ counts in the artifact, so its source is logged too
        log(f"{'=' * 40} {path.relative_to(HERE).as_posix()}\n{path.read_text()}", console=False)
    log("=" * 100, console=False)
    log("settings: " + json.dumps(s.env, sort_keys=True), console=False)
    bf16 = use_bf16(s, device)
    log(f"running python {sys.version.split()[0]} torch {torch.__version__} device {device} "
        f"world_size {s.world_size} grad_accum_steps {s.grad_accum_steps} compile {int(s.torch_compile)}")
    log(f"precision: {'bf16 autocast' if bf16 else 'fp32'} ("
        + ("CUDA" if device.type == "cuda" else f"CPU_AUTOCAST={s.cpu_autocast}, native bf16 on this CPU: "
                                                 f"{'yes' if cpu_has_native_bf16() else 'no'}") + ")")
    document_kernel, line = select_attention_kernel(s, device)
    log(line + ("" if hooks.attention_fp32 else "; Hooks.attention_fp32=False: training steps attend in bf16 instead"))
    if device.type == "cpu":
        log(keep_freed_memory(s.cpu_malloc))
    log(repeatable_kernels(device) if hooks.repeatable_kernels else
        "kernels: inductor's own, deterministic mode off (Hooks.repeatable_kernels=False)")
    if s.max_wallclock_seconds == 0 and not s.warmdown_frac and s.warmdown_iters >= s.iterations:
        log(f"note: WARMDOWN_ITERS={s.warmdown_iters} >= ITERATIONS={s.iterations}: the whole run is warmdown, "
            f"the LR starts at {lr_multiplier(0.0, s.warmdown_iters / s.iterations):.1%} of its peak")
    torch.manual_seed(s.seed)
    np.random.seed(s.seed)

    val_tokens = load_validation_tokens(s.val_files, s.train_seq_len, s.val_max_tokens)
    # named sets (VAL_SETS, e.g. one per domain) scored after training with the same accounting
    val_sets = {name: load_validation_tokens(pattern, s.train_seq_len, s.val_max_tokens)
                for name, pattern in s.val_set_patterns.items()}
    for name, tokens in [("VAL_FILES", val_tokens)] + [(f"VAL_SETS[{k}]", v) for k, v in val_sets.items()]:
        if int(tokens.max()) >= s.vocab_size:
            raise SettingsError(f"VOCAB_SIZE={s.vocab_size}: the {name} shards hold token id {int(tokens.max())}")
    val_domains = load_validation_domains(s.val_files, val_tokens.numel() - 1) if s.val_domains else None
    tables = ByteTables.from_sentencepiece(s.tokenizer_path, s.vocab_size).to(device)
    val_bytes = load_validation_bytes(s.val_bytes_files, val_tokens.numel()) if s.val_bytes_files else None
    if val_bytes is not None:
        log(f"val_bpb: bytes from VAL_BYTES_FILES={s.val_bytes_files} (a sidecar per validation token), not the tokenizer's")
    train_files = s.data.shards()
    provenance = run_provenance(s, device, train_files, started)
    log("provenance: " + json.dumps({k: v for k, v in provenance.items() if k != "train_shards"}, sort_keys=True))
    train_tokens = s.data.train_tokens()
    log(f"data: {len(train_files)} train shards holding {train_tokens:,} tokens, validation {val_tokens.numel() - 1:,} "
        f"tokens" + (f" (a prefix: VAL_MAX_TOKENS={s.val_max_tokens})" if s.val_max_tokens else " (the whole split)")
        + f", order {s.data_order}")

    compile_fn = (lambda f: torch.compile(f)) if s.torch_compile else (lambda f: f)
    base_model = GPT(s, document_kernel or "per_document", hooks.attention_fp32).to(device)
    model_compiled = torch.compile(base_model, dynamic=False) if s.torch_compile else base_model
    model = DDP(model_compiled, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False) if distributed else model_compiled
    optimizers = build_optimizers(base_model, s, compile_fn)
    n_params = sum(p.numel() for p in base_model.parameters())
    log(f"model: {n_params:,} parameters, {s.num_layers} layers, width {s.model_dim}, "
        f"heads {s.num_heads}/{s.num_kv_heads}, mlp {s.mlp_mult}x, vocab {s.vocab_size}, "
        f"bigram {s.bigram_vocab_size}x{s.bigram_dim}")
    job = Job(s, device, distributed, log, bf16, val_tokens, val_sets, tables, base_model, model_compiled, model,
              optimizers, val_domains=val_domains, val_bytes=val_bytes, hooks=hooks)
    job.results.update(
        run_id=s.run_id, settings=s.env, curriculum=asdict(s.curriculum), device=str(device), world_size=s.world_size,
        grad_accum_steps=s.grad_accum_steps, parameters=n_params, val_tokens=val_tokens.numel() - 1,
        attention_kernel=document_kernel,
        tokenizer=s.tokenizer_path, tokenizer_sha256=hashlib.sha256(Path(s.tokenizer_path).read_bytes()).hexdigest(),
        val_files=s.val_files, val_sha256=hashlib.sha256(val_tokens.numpy().tobytes()).hexdigest(),
        train_files=s.train_files, train_tokens=train_tokens, provenance=provenance)
    if s.resume:
        job.checkpoint = load_checkpoint(job)
        remove_stale_temporaries(job)
    return job


def warm_up_and_undo(job: Job) -> None:
    """Prime compilation and the allocator on real steps, then restore weights and optimisers."""
    s = job.s
    if not s.warmup_steps:
        return
    initial_model = {k: v.detach().clone() for k, v in job.base_model.state_dict().items()}
    initial_opts = [copy.deepcopy(o.state_dict()) for o in job.optimizers]
    batches = job.make_batches(warm_up_steps=s.warmup_steps)  # every phase's shapes compile here, before the clock
    t0 = time.perf_counter()
    for k in range(s.warmup_steps):
        train_step(job.model, job.base_model, job.optimizers, s, batches, Position(step=k), job.bf16)
    job.sync()
    batches.close()
    job.base_model.load_state_dict(initial_model)
    for opt, state in zip(job.optimizers, initial_opts):
        opt.load_state_dict(state)
    job.log(f"warmup: {s.warmup_steps} steps in {1000 * (time.perf_counter() - t0):.0f}ms, "
            f"weights and optimiser state restored")
    job.results["graphs_compiled_in_warmup"] = compiled_graphs()


def compiled_graphs() -> int:
    """Graphs torch.compile has built so far in this process (0 without compilation)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


@dataclass
class Averaged:
    """SWA's running sum of snapshots, and how many."""
    state: dict | None = None
    count: int = 0
    slot: int = 0  # the interval (swa_slot) of the last step: a snapshot when a step ends a new one


# =============================================================================================
# The training loop: one clock for every rank, the schedule, the steps
# =============================================================================================


class Clock:
    """The training time: it runs during steps and pauses for evaluation and checkpoints. With a
    cap and several ranks the time every rank steps by is the slowest rank's at the last step
    (`agree`), so that all reach the same progress and stop at the same step."""

    def __init__(self, job: Job, training_ms: float):
        self.sync, self.distributed, self.device = job.sync, job.distributed, job.device
        self.capped = job.s.max_wallclock_seconds > 0
        self.banked_ms, self.ranks_ms, self.t0 = training_ms, training_ms, time.perf_counter()

    def start(self) -> None:
        self.sync()
        self.t0 = time.perf_counter()

    def pause(self) -> None:
        self.sync()
        self.banked_ms += 1000.0 * (time.perf_counter() - self.t0)

    def own_ms(self) -> float:
        """This rank's training time so far."""
        return self.banked_ms + 1000.0 * (time.perf_counter() - self.t0)

    def elapsed_ms(self) -> float:
        """The time progress is measured by: the ranks' agreed time, or this rank's own."""
        return self.ranks_ms if self.distributed and self.capped else self.own_ms()

    def agree(self) -> float:
        """At a step's end, with a cap: the slowest rank's time (the one collective of the clock)."""
        self.ranks_ms = self.own_ms()
        if self.distributed:
            clock = torch.tensor(self.ranks_ms, dtype=torch.float64, device=self.device)
            dist.all_reduce(clock, op=dist.ReduceOp.MAX)
            self.ranks_ms = clock.item()
        return self.ranks_ms


class Diverged(Exception):
    """The training loss stopped being a finite number: the run ends without an artifact."""

    def __init__(self, step: int):
        super().__init__(f"the training loss is not finite at step {step}: the run diverged (a learning rate too "
                         f"high, most often); it stops here, and no artifact is written")
        self.step = step


class Divergence:
    """The first step whose training loss was not finite, kept on the device (nothing waits for
    it) and read where the loop waits anyway: every step on a lone CPU process, at the loss lines
    elsewhere (with several ranks, the earliest over all of them)."""
    NONE = 2**62

    def __init__(self, job: Job):
        self.distributed = job.distributed
        self.every_step = job.device.type == "cpu" and not job.distributed
        self.first = torch.full((), self.NONE, dtype=torch.int64, device=job.device)

    def add(self, step: int, loss: Tensor) -> None:
        self.first = torch.where(torch.isfinite(loss) | (self.first < self.NONE), self.first, step)

    def check(self) -> None:
        if self.distributed:
            dist.all_reduce(self.first, op=dist.ReduceOp.MIN)
        if int(self.first.item()) < self.NONE:
            raise Diverged(int(self.first.item()))


def set_schedule(job: Job, step: int, progress: float, warmdown: float) -> float:
    """Every group's learning rate and Muon's momentum at this point of the run; the LR multiplier."""
    s = job.s
    lr_mul = lr_multiplier(progress, warmdown)
    momentum_frac = momentum_warmed(s, step, progress)
    for opt in job.optimizers:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_mul
            if isinstance(opt, Muon):
                g["momentum"] = (1 - momentum_frac) * s.muon_momentum_warmup_start + momentum_frac * s.muon_momentum
    return lr_mul


def data_budget(s: Settings) -> tuple[int, str] | None:
    """The steps the data path's first lines count the run's reading over, and what sets them."""
    if s.max_wallclock_seconds == 0:
        return s.iterations, f"of ITERATIONS={s.iterations}"
    if s.expected_step_ms > 0:
        return (min(s.iterations, int(1000 * s.max_wallclock_seconds / s.expected_step_ms)),
                f"at EXPECTED_STEP_MS={s.expected_step_ms:g} under the {s.max_wallclock_seconds:g} s cap")
    return None


def notes_at_step_10(job: Job, elapsed_ms: float, warmdown: float) -> None:
    """Under a cap, what the first ten steps' time says of the data budget and the warmdown."""
    s, step = job.s, 10
    if s.data.reads_train_files():
        steps = min(s.iterations, int(1000 * s.max_wallclock_seconds * step / elapsed_ms))
        job.log(s.data.budget_line(s.shape, steps, f"at the {elapsed_ms / step:.0f} ms/step of the first 10 steps "
                                                   f"under the {s.max_wallclock_seconds:g} s cap"))
    if warmdown > 0.9 and not s.warmdown_frac:
        job.log(f"WARNING: at {elapsed_ms / step:.0f} ms/step, WARMDOWN_ITERS={s.warmdown_iters} spans "
                f"{warmdown:.0%} of the {s.max_wallclock_seconds:g} s budget: the warmdown starts before 10% of it "
                f"(configs/1xh100.env scales the step-based settings for one GPU; WARMDOWN_FRAC holds at any step time)")


def add_swa_snapshot(job: Job, swa: Averaged, step: int, lr_mul: float, progress: float, now_ms: float,
                     tokens: int) -> None:
    """Once the LR is low enough, one snapshot each time a step ends a new interval (swa_slot)."""
    s = job.s
    slot = swa_slot(s, step, training_progress(s, step, now_ms, tokens))  # with a cap, the same slots on every rank
    if s.swa_enabled and lr_mul < s.swa_start_frac and slot != swa.slot:
        if swa.state is None:
            swa.state = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in job.base_model.state_dict().items()}
            job.log(f"swa:start step:{step} lr_mul:{lr_mul:.4f} progress:{progress:.4f}")
        for k, v in job.base_model.state_dict().items():
            swa.state[k] += v.float()
        swa.count += 1
    swa.slot = slot


def log_train_loss(job: Job, step: int, train_loss: Tensor, own_ms: float, tokens: int) -> None:
    s = job.s
    if job.distributed:  # the mean over ranks, like every other metric (gloo has no AVG)
        dist.all_reduce(train_loss, op=dist.ReduceOp.SUM)
        train_loss /= s.world_size
    job.log(f"step:{step}/{s.iterations} train_loss:{train_loss.item():.4f} train_time:{own_ms:.0f}ms "
            f"step_avg:{own_ms / step:.2f}ms" + (f" tokens:{tokens:,}" + (f"/{s.train_tokens:,}" if s.train_tokens else "")
                                                 if s.phases or s.train_tokens else ""))


def train(job: Job) -> Averaged:
    """The timed loop: progress drives the LR, SWA and the curriculum; evaluation pauses the clock."""
    s, log, hooks = job.s, job.log, job.hooks
    batches = hooks.timed_batches(job, job.make_batches(budget=data_budget(s)))
    swa = Averaged()
    log("progress: " + ("the wallclock cap" if s.max_wallclock_seconds > 0 else "ITERATIONS")
        + (f" or TRAIN_TOKENS={s.train_tokens:,}, whichever is further along" if s.train_tokens else ""))
    loop = LoopState() if job.checkpoint is None else resume(job, job.checkpoint, batches, swa)
    job.checkpoint = None
    for line in batches.drain_log(loop.step):  # the phases, where the run begins in them
        log(line)
    clock, step, tokens, recompiles = Clock(job, loop.training_ms), loop.step, loop.tokens, loop.recompiles
    stop_after, exhausted, divergence = None, False, Divergence(job)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)  # page faults and kernel time: what CPU_MALLOC saves
    clock.start()
    while True:
        last = (step == s.iterations or (stop_after is not None and step >= stop_after)
                or (s.train_tokens and tokens >= s.train_tokens))
        if last or (s.val_loss_every and step % s.val_loss_every == 0 and step > 0):
            divergence.check()
            clock.pause()
            val_loss, val_bpb = job.evaluate(job.val_tokens, stride=0, byte_counts=job.val_bytes)  # non-overlapping: a curve, not the score
            log(f"step:{step}/{s.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
                f"train_time:{clock.banked_ms:.0f}ms step_avg:{clock.banked_ms / max(step, 1):.2f}ms")
            clock.start()
        if last:
            log_stop(job, step, tokens, clock.banked_ms, stop_after, exhausted)
            break
        elapsed_ms = clock.elapsed_ms()
        progress, warmdown = training_progress(s, step, elapsed_ms, tokens), warmdown_fraction(s, step, elapsed_ms)
        if step == 10 and s.max_wallclock_seconds > 0:
            notes_at_step_10(job, elapsed_ms, warmdown)
        lr_mul = set_schedule(job, step, progress, warmdown)
        graphs = compiled_graphs()
        try:
            at = Position(progress, max(1.0 - warmdown, 0.0), step, tokens, elapsed_ms)
            train_loss, step_tokens = hooks.timed_step(
                lambda: train_step(job.model, job.base_model, job.optimizers, s, batches, at, job.bf16))
            recompiles += compiled_graphs() - graphs  # in the timed steps only: evaluation pauses the clock
        except DataExhausted as e:  # a clean end: the partial step is undone, averaging and export follow
            for opt in job.optimizers:
                opt.zero_grad(set_to_none=True)
            log(f"data: {e}; training ends at step {step}")
            stop_after, exhausted = step, True
            continue
        divergence.add(step, train_loss)
        step, tokens = step + 1, tokens + step_tokens
        for line in batches.drain_log(step):  # phases begun, passes, drops, the loader's line
            log(line)
        add_swa_snapshot(job, swa, step, lr_mul, progress, clock.elapsed_ms(), tokens)
        own_ms = clock.own_ms()
        loss_line = s.train_log_every and (step <= 10 or step % s.train_log_every == 0)
        if loss_line or divergence.every_step:
            divergence.check()
        if loss_line:
            log_train_loss(job, step, train_loss, own_ms, tokens)
        if s.max_wallclock_seconds > 0 and clock.agree() >= 1000.0 * s.max_wallclock_seconds and stop_after is None:
            stop_after = step
        if s.checkpoint_every and step % s.checkpoint_every == 0 and stop_after is None and step < s.iterations:
            clock.pause()  # the clock pauses while the checkpoint is written, as it does for evaluation
            path = save_checkpoint(job, LoopState(step, tokens, clock.banked_ms, recompiles), swa, batches)
            log(f"checkpoint: step:{step} {path}")
            clock.start()
    end_of_training(job, batches, loop, step, tokens, clock.banked_ms, recompiles, usage0, stop_after)
    return swa


def log_stop(job: Job, step: int, tokens: int, training_ms: float, stop_after: int | None, exhausted: bool) -> None:
    s = job.s
    if exhausted:
        job.log(f"stopping: the training data is used up, step:{step}/{s.iterations}")
    elif s.train_tokens and tokens >= s.train_tokens:
        job.log(f"stopping: TRAIN_TOKENS={s.train_tokens:,} reached, {tokens:,} tokens at step {step}")
    elif stop_after is not None and step < s.iterations:
        job.log(f"stopping_early: wallclock_cap train_time:{training_ms:.0f}ms step:{step}/{s.iterations}")


def end_of_training(job: Job, batches: DataPath, loop: LoopState, step: int, tokens: int, training_ms: float,
                    recompiles: int, usage0, stop_after: int | None) -> None:
    """The loop's results: steps, tokens, time, compilation, page faults, and the data path's summary."""
    s = job.s
    job.results["recompiles_after_warmup"] = recompiles
    usage = resource.getrusage(resource.RUSAGE_SELF)
    timed_steps = max(step - loop.step, 1)  # this piece's steps (and its evaluations; none by default)
    job.results.update(minor_faults_per_step=round((usage.ru_minflt - usage0.ru_minflt) / timed_steps, 1),
                       kernel_ms_per_step=round(1000 * (usage.ru_stime - usage0.ru_stime) / timed_steps, 3))
    if s.torch_compile:
        job.log(f"compile: {recompiles} graphs compiled in the timed training steps (after the warm-up)")
    job.results.update(batches.summary(Position(training_progress(s, step, training_ms, tokens), 1.0, step, tokens,
                                                training_ms)))
    for line in batches.drain_log(step):
        job.log(line)
    batches.close()
    job.results.update(steps=step, tokens_seen=tokens, train_time_ms=round(training_ms, 3),
                       step_avg_ms=round(training_ms / max(step, 1), 4),
                       stopped_early=stop_after is not None and step < s.iterations)


def weights_agree_across_ranks(job: Job) -> bool:
    """Whether every rank ends training with the same weights, bit for bit: DDP averages the
    gradients, so they stay the same only if every rank steps with the same learning rate, that
    is at the same progress. Checked once, from a hash of each rank's weights."""
    h = hashlib.sha256()
    for t in job.base_model.state_dict().values():
        h.update(t.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, bf16 too
    mine = torch.tensor(list(h.digest()[:8]), dtype=torch.int64, device=job.device)
    every = [torch.zeros_like(mine) for _ in range(job.s.world_size)]
    dist.all_gather(every, mine)
    return all(torch.equal(e, every[0]) for e in every)


def average_weights(job: Job, swa: Averaged) -> dict[str, tuple[float, float]]:
    """SWA's average replaces the weights; then the pre-quant scores (sliding windows), whole
    split and each named set (VAL_DOMAINS or VAL_SETS)."""
    if job.distributed:
        agree = weights_agree_across_ranks(job)
        job.results["weights_agree_across_ranks"] = agree
        job.log(f"ranks: the weights are the same on all {job.s.world_size} ranks" if agree else
                f"WARNING: ranks: the weights differ between the {job.s.world_size} ranks at the end of training")
    if swa.count:
        state = job.base_model.state_dict()
        job.base_model.load_state_dict({k: (v / swa.count).to(state[k].dtype) for k, v in swa.state.items()})
    (val_loss, val_bpb), set_scores = job.score_split()
    set_scores |= job.score_sets()
    job.log(f"swa:applied snapshots:{swa.count} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f}"
            if swa.count else f"pre-quant val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f}")
    job.results.update(val_loss=val_loss, val_bpb=val_bpb, swa_snapshots=swa.count)
    return set_scores


def export_and_round_trip(job: Job, set_scores: dict[str, tuple[float, float]]) -> None:
    """int6 + zstd-22 artifact, loaded back and scored: that round-trip val_bpb is the result."""
    s, log = job.s, job.log
    artifact_path = Path(s.log_dir) / f"{s.run_id}.int6.ptz"
    if s.rank == 0:  # one rank compresses (zstd-22 is slow); every rank then loads the file back
        keep_fp16 = tuple(p.strip() for p in s.fp16_keep_name_patterns.split(",") if p.strip())
        write_atomic(artifact_path, serialize_artifact(quantize_state(job.base_model.state_dict(), keep_fp16)))
    if job.distributed:
        dist.barrier()
    blob = artifact_path.read_bytes()
    job.base_model.load_state_dict(dequantize_state(load_artifact(blob), job.base_model.state_dict()))
    job.sync()
    t_eval = time.perf_counter()
    (rt_loss, rt_bpb), set_rt_scores = job.score_split()
    eval_ms = 1000.0 * (time.perf_counter() - t_eval)
    set_rt_scores |= job.score_sets()
    n_code = code_bytes()
    total_bytes = len(blob) + n_code
    log(f"Serialized model int6+zstd: {len(blob)} bytes")
    log(f"Code size: {n_code} bytes")
    log(f"Total submission size int6+zstd: {total_bytes} bytes")
    if total_bytes > ARTIFACT_LIMIT:
        log(f"WARNING: the artifact is {total_bytes} bytes, {total_bytes - ARTIFACT_LIMIT} over the "
            f"{ARTIFACT_LIMIT}-byte limit: this run cannot be submitted")
    log(f"final_int6_zstd_roundtrip val_loss:{rt_loss:.4f} val_bpb:{rt_bpb:.4f} eval_time:{eval_ms:.0f}ms")
    log(f"final_int6_zstd_roundtrip_exact val_loss:{rt_loss:.8f} val_bpb:{rt_bpb:.8f}")
    sets = {}
    for name, (n_tokens, sha256) in job.named_sets().items():
        (set_loss, set_bpb), (set_rt_loss, set_rt_bpb) = set_scores[name], set_rt_scores[name]
        sets[name] = dict(tokens=n_tokens, val_loss=set_loss, val_bpb=set_bpb, roundtrip_val_loss=set_rt_loss,
                          roundtrip_val_bpb=set_rt_bpb, sha256=sha256)
        log(f"val_set:{name} tokens:{n_tokens} val_loss:{set_loss:.8f} val_bpb:{set_bpb:.8f} "
            f"roundtrip_val_loss:{set_rt_loss:.8f} roundtrip_val_bpb:{set_rt_bpb:.8f}")
    job.results.update(roundtrip_val_loss=rt_loss, roundtrip_val_bpb=rt_bpb, roundtrip_eval_ms=round(eval_ms, 3),
                       eval_stride=window_starts(job.val_tokens.numel() - 1, s.train_seq_len, s.eval_stride).step,
                       artifact_bytes=len(blob), code_bytes=n_code, total_bytes=total_bytes,
                       artifact_limit=ARTIFACT_LIMIT, val_sets=sets)


def write_summary(job: Job) -> None:
    if job.s.rank == 0:
        job.results["peak_memory_mb"] = round(peak_memory_mb(job.device), 1)
        path = Path(job.s.log_dir) / f"{job.s.run_id}.json"
        write_atomic(path, (json.dumps(job.results, indent=2) + "\n").encode())
        job.log(f"logs: {job.log.path} and {path}")


def main(hooks: Hooks = Hooks()) -> None:
    job = set_up(started=time.time(), hooks=hooks)
    warm_up_and_undo(job)
    hooks.before_timed(job)
    try:
        swa = train(job)
    except Diverged as err:  # the summary says so; tools.compare reads the NaN as it reads any diverged run's
        job.log(f"diverged: step:{err.step} {err}")
        job.results.update(diverged_at_step=err.step, roundtrip_val_loss=math.nan, roundtrip_val_bpb=math.nan)
        write_summary(job)
        raise
    set_scores = average_weights(job, swa)
    export_and_round_trip(job, set_scores)
    write_summary(job)


def shut_down_distributed() -> None:
    """Destroy the process group while the interpreter is fully alive. A gloo worker thread can
    still be dropping the last reference to a finished collective's tensors; if that happens
    during interpreter finalisation it cannot take the GIL and the process aborts ("terminate
    called without an active exception"). Collecting the DDP wrapper's reference cycles frees
    the group now, and its destructor joins those threads first."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


PEER_LOST = ("timeout", "timed out", "closed", "connection reset", "broken pipe", "nccl communicator")


def lost_peer(err: BaseException) -> bool:
    """Whether a collective failed because another rank stopped answering or went away (gloo and
    NCCL raise RuntimeError, or DistError, with these words)."""
    return isinstance(err, dist.DistError) or any(w in str(err).lower() for w in PEER_LOST)


def speaker() -> str:
    """Who says a run's last line: the script, and its rank beside rank 0."""
    rank = os.environ.get("RANK", "0")
    return "train_gpt.py" if rank == "0" else f"train_gpt.py (rank {rank})"


def out_of_memory(err: BaseException) -> bool:
    """An allocation that failed: Python's, the CPU allocator's or CUDA's."""
    text = str(err).lower()
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text or \
        "out of memory" in text


def stop_on_sigterm() -> None:
    """SIGTERM and SIGHUP end the run as Ctrl-C does: one line, the logs flushed, no artifact half-written.
    SIGINT too, even where the launching shell ignored it (a job started with `&` inherits SIGINT
    ignored, and Python then leaves it so): `kill -INT` always stops the run."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGHUP, interrupt)  # the terminal closed, an ssh session gone: as SIGTERM


if __name__ == "__main__":
    stop_on_sigterm()
    try:
        main()
        shut_down_distributed()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what was written is whole (every file is written atomically)
        say_and_log(f"{speaker()}: "
                    f"interrupted; the log is complete up to here, and no artifact or summary was left half-written")
        sys.exit(130)
    except Diverged as err:  # one line, the summary written, no artifact
        say_and_log(f"{speaker()}: {err}")
        shut_down_distributed()
        sys.exit(4)
    except (MemoryError, RuntimeError) as err:  # out of memory, or a peer stopped or died: one line on every rank
        if out_of_memory(err):
            say_and_log(f"{speaker()}: "
                        f"out of memory ({str(err).strip().splitlines()[0][:200] or type(err).__name__}): the model or a "
                        f"micro-batch is larger than this machine holds (fewer NUM_LAYERS or MODEL_DIM, more "
                        f"GRAD_ACCUM_STEPS); the log is complete up to here")
            release_run_name()
            os._exit(1)  # the teardown of a process that cannot allocate may fail again
        if not (dist.is_available() and dist.is_initialized() and lost_peer(err)):
            raise
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        others = [r for r in range(world) if r != rank]
        who = f"rank {others[0]}" if len(others) == 1 else f"one of ranks {', '.join(map(str, others))}"
        say_and_log(f"train_gpt.py (rank {rank}): lost the other ranks: {who} stopped answering for COLLECTIVE_TIMEOUT="
                    f"{os.environ.get('COLLECTIVE_TIMEOUT', '300')} s or died ({str(err).splitlines()[0][:300]}). The log "
                    f"is complete up to here; nothing was left half-written")
        os._exit(3)  # not sys.exit: the process group's teardown would wait on the lost peer
    except OSError as err:  # a full disk, a file-size limit, a folder gone: what was written before is whole
        if err.filename is None:
            raise
        say_and_log(f"{speaker()}: "
                    f"cannot write or read {err.filename}: {err.strerror}; every file written before is whole (they are "
                    f"written under a temporary name and renamed)")
        shut_down_distributed()
        sys.exit(1)
    except (SettingsError, DataError) as err:  # bad input: one clear message, no traceback
        rank = os.environ.get("RANK", "0")
        # settings are every rank's, so rank 0 names them; data is each rank's own, and a rank or
        # world size that is wrong may leave no rank 0 at all
        if rank == "0" or isinstance(err, DataError) or "RANK=" in str(err) or "WORLD_SIZE=" in str(err):
            say_and_log(f"{speaker()}: {err}")
        shut_down_distributed()
        sys.exit(2)
    finally:
        release_run_name()  # the RUN_ID's lock file, on every way out but kill -9
    # finished and flushed: a signal during the interpreter's own teardown has nothing left to stop
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
