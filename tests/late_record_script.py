"""A small training script laid out the way the late records' scripts are (April 2026), for
tests/test_late_record_script.py to paste the README's lines for those scripts into and run.

What it keeps of theirs: one settings object `h` read from the environment (rank, world_size,
train_seq_len, train_files, vocab_size, train_batch_tokens, grad_accum_steps,
max_wallclock_seconds, gptq_reserve_seconds, warmdown_frac), a document-packing loader that
returns one `[1, N]` stream with `cu_seqlens`, built before the warm-up and again after it, a
shuffled sequence loader for the calibration after training, progress as time over the cap less
the reserve (or steps over the iterations), attention that takes `cu_seqlens` (a varlen kernel on
a GPU, here SDPA per piece on the CPU), the log that starts with the script's source and a line
of '=', the step lines, the code size and the final round-trip lines. The model is one attention
layer over an embedding, so a run takes seconds on a CPU.
"""
from __future__ import annotations

import copy
import glob
import io
import math
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F

BOS_ID = 1


class Hyperparameters:
    data_dir = os.environ.get("DATA_DIR", "./data/")
    datasets_dir = os.path.join(data_dir, "datasets", "fineweb10B_sp1024")
    train_files = os.path.join(datasets_dir, "fineweb_train_*.bin")
    val_files = os.path.join(datasets_dir, "fineweb_val_*.bin")
    tokenizer_path = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
    run_id = os.environ.get("RUN_ID", "run")
    seed = int(os.environ.get("SEED", 1337))
    iterations = int(os.environ.get("ITERATIONS", 20000))
    warmup_steps = int(os.environ.get("WARMUP_STEPS", 20))
    warmdown_frac = float(os.environ.get("WARMDOWN_FRAC", 0.75))
    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))
    gptq_reserve_seconds = float(os.environ.get("GPTQ_RESERVE_SECONDS", 4.0))
    gptq_calibration_batches = int(os.environ.get("GPTQ_CALIBRATION_BATCHES", 4))
    train_batch_tokens = int(os.environ.get("TRAIN_BATCH_TOKENS", 786432))
    train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 2048))
    train_log_every = int(os.environ.get("TRAIN_LOG_EVERY", 500))
    vocab_size = int(os.environ.get("VOCAB_SIZE", 8192))
    model_dim = int(os.environ.get("MODEL_DIM", 32))
    val_tokens = int(os.environ.get("VAL_TOKENS", 8193))
    lr = float(os.environ.get("LR", 0.02))
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    grad_accum_steps = 8 // world_size


def load_data_shard(file) -> torch.Tensor:
    header = np.fromfile(file, dtype="<i4", count=256)
    return torch.from_numpy(np.fromfile(file, dtype="<u2", count=int(header[2]), offset=1024).astype(np.uint16))


def boundaries(doc_starts: list[int], total: int, max_len: int, bucket: int) -> tuple[torch.Tensor, int]:
    starts = doc_starts if doc_starts and doc_starts[0] == 0 else [0] + doc_starts
    pieces = []
    for a, b in zip(starts, starts[1:] + [total]):
        pieces.extend(range(a, b, max_len))
    bounds = pieces + [total]
    padded = -(-len(bounds) // bucket) * bucket
    cu = torch.full((padded,), total, dtype=torch.int32)
    cu[:len(bounds)] = torch.tensor(bounds, dtype=torch.int32)
    return cu, max(b - a for a, b in zip(bounds, bounds[1:]))


class DocumentPackingLoader:
    """The shards in order from each one's first BOS; per batch every rank takes its span of
    N + 1 tokens of the next world_size spans; prepared two ahead on a thread."""

    def __init__(self, h, device, cu_bucket_size=64):
        self.rank, self.world_size, self.device = h.rank, h.world_size, device
        self.bucket, self.max_len = cu_bucket_size, h.train_seq_len
        self.files = [Path(p) for p in sorted(glob.glob(h.train_files))]
        if not self.files:
            raise FileNotFoundError(f"No files found for pattern: {h.train_files}")
        self.next_file = 0
        self._open()
        self.pool = ThreadPoolExecutor(1)
        self.queue = []

    def _open(self):
        self.tokens = load_data_shard(self.files[self.next_file])
        self.next_file = (self.next_file + 1) % len(self.files)
        self.bos = (self.tokens == BOS_ID).nonzero(as_tuple=True)[0].numpy()
        self.cursor = int(self.bos[0])

    def _prepare(self, n):
        span = n + 1
        while self.cursor + span * self.world_size > self.tokens.numel():
            self._open()
        start = self.cursor + self.rank * span
        buf = self.tokens[start:start + span].to(torch.int64)
        lo, hi = np.searchsorted(self.bos, [start, start + n], side="left")
        cu, longest = boundaries((self.bos[lo:hi] - start).tolist(), n, self.max_len, self.bucket)
        self.cursor += span * self.world_size
        return buf[:-1], buf[1:], cu, longest

    def next_batch(self, global_tokens, grad_accum_steps):
        n = global_tokens // (self.world_size * grad_accum_steps)
        while len(self.queue) < 2:
            self.queue.append(self.pool.submit(self._prepare, n))
        x, y, cu, longest = self.queue.pop(0).result()
        self.queue.append(self.pool.submit(self._prepare, n))
        return x[None].to(self.device), y[None].to(self.device), cu.to(self.device), longest


class ShuffledSequenceLoader:
    def __init__(self, h, device):
        self.world_size, self.seq_len, self.device = h.world_size, h.train_seq_len, device
        self.files = [Path(p) for p in sorted(glob.glob(h.train_files))][h.rank::h.world_size]
        self.shards = [load_data_shard(f) for f in self.files]
        self.rng = np.random.Generator(np.random.PCG64(h.rank))
        self.starts = [self._draw(s) for s in self.shards]

    def _draw(self, shard):
        n, L = shard.numel(), self.seq_len
        top = min(L - 1, max(0, n - L - 1))
        phase = int(self.rng.integers(top + 1)) if top > 0 else 0
        return (phase + self.rng.permutation((n - 1 - phase) // L) * L).tolist()

    def next_batch(self, global_tokens, grad_accum_steps):
        rows = global_tokens // (self.world_size * grad_accum_steps) // self.seq_len
        left = np.array([len(s) for s in self.starts], dtype=np.float64)
        out = torch.empty(rows, self.seq_len + 1, dtype=torch.int64)
        for r in range(rows):
            if left.sum() <= 0:
                self.starts = [self._draw(s) for s in self.shards]
                left = np.array([len(s) for s in self.starts], dtype=np.float64)
            i = int(self.rng.choice(len(self.files), p=left / left.sum()))
            s = self.starts[i].pop()
            left[i] -= 1
            out[r] = self.shards[i][s:s + self.seq_len + 1].to(torch.int64)
        return out[:, :-1].to(self.device), out[:, 1:].to(self.device)


def varlen_attention(q, k, v, cu_seqlens, max_seqlen):
    """Causal attention inside each piece of a [T, heads, dim] stream: a varlen kernel where the
    GPU has one, else SDPA piece by piece."""
    try:
        from flash_attn_interface import flash_attn_varlen_func
    except ImportError:
        flash_attn_varlen_func = None
    if flash_attn_varlen_func is not None and q.is_cuda:
        return flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, causal=True)
    bounds = sorted(set(cu_seqlens.tolist()))
    out = [F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1),
                                          is_causal=True).transpose(0, 1) for a, b in zip(bounds, bounds[1:])]
    return torch.cat(out)


class TinyLM(torch.nn.Module):
    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab_size, dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.head = torch.nn.Linear(dim, vocab_size, bias=False)

    def forward(self, x, y, cu_seqlens=None, max_seqlen=0):
        h = self.emb(x)
        if cu_seqlens is None:  # rows [B, T]: each its own causal sequence
            q, k, v = self.qkv(h).chunk(3, dim=-1)
            h = h + F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], is_causal=True)[:, 0]
        else:  # one [1, N] stream cut by cu_seqlens
            q, k, v = (t[0][:, None] for t in self.qkv(h).chunk(3, dim=-1))
            h = h + varlen_attention(q, k, v, cu_seqlens, max_seqlen)[:, 0][None]
        return F.cross_entropy(self.head(h).flatten(0, 1), y.flatten())


def main() -> None:
    code = Path(__file__).read_text()
    h = Hyperparameters()
    device = torch.device("cpu")
    os.makedirs("logs", exist_ok=True)
    logfile = f"logs/{h.run_id}.txt"

    def log0(msg: str, console: bool = True) -> None:
        if h.rank != 0:
            return
        if console:
            print(msg)
        with open(logfile, "a", encoding="utf-8") as f:
            print(msg, file=f)

    log0(code, console=False)
    log0("=" * 100, console=False)
    torch.manual_seed(h.seed)
    model = TinyLM(h.vocab_size, h.model_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=h.lr)
    max_wallclock_ms = 1000.0 * (h.max_wallclock_seconds - h.gptq_reserve_seconds) if h.max_wallclock_seconds > 0 else None

    def training_frac(step: int, elapsed_ms: float) -> float:
        return step / max(h.iterations, 1) if max_wallclock_ms is None else elapsed_ms / max(max_wallclock_ms, 1e-9)

    def lr_mul(frac: float) -> float:
        return 1.0 if frac < 1.0 - h.warmdown_frac else max((1.0 - frac) / h.warmdown_frac, 0.0)

    def step_fn(loader) -> torch.Tensor:
        for _ in range(h.grad_accum_steps):
            x, y, cu_seqlens, _ = loader.next_batch(h.train_batch_tokens, h.grad_accum_steps)
            loss = model(x, y, cu_seqlens=cu_seqlens, max_seqlen=h.train_seq_len)
            (loss / h.grad_accum_steps).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    train_loader = DocumentPackingLoader(h, device)
    if h.warmup_steps > 0:  # compile and prime, then start again from the initial state
        initial_model, initial_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
        for _ in range(h.warmup_steps):
            step_fn(train_loader)
        model.load_state_dict(initial_model)
        opt.load_state_dict(initial_opt)
        train_loader = DocumentPackingLoader(h, device)

    training_time_ms, stop_after_step, step = 0.0, None, 0
    t0 = time.perf_counter()
    while True:
        if step == h.iterations or (stop_after_step is not None and step >= stop_after_step):
            break
        elapsed_ms = training_time_ms + 1000.0 * (time.perf_counter() - t0)
        for group in opt.param_groups:
            group["lr"] = h.lr * lr_mul(training_frac(step, elapsed_ms))
        loss = step_fn(train_loader)
        step += 1
        approx_training_time_ms = training_time_ms + 1000.0 * (time.perf_counter() - t0)
        if h.train_log_every > 0 and (step <= 10 or step % h.train_log_every == 0 or stop_after_step is not None):
            log0(f"step:{step}/{h.iterations} train_loss:{loss.item():.4f} train_time:{approx_training_time_ms:.0f}ms step_avg:{approx_training_time_ms / step:.2f}ms")
        if stop_after_step is None and max_wallclock_ms is not None and approx_training_time_ms >= max_wallclock_ms:
            stop_after_step = step
    training_time_ms += 1000.0 * (time.perf_counter() - t0)
    if stop_after_step is not None and step < h.iterations:
        log0(f"stopping_early: wallclock_cap train_time:{training_time_ms:.0f}ms step:{step}/{h.iterations}")

    # the calibration pass: here the mean loss over the shuffled rows stands in for GPTQ's Hessians
    calib_loader = ShuffledSequenceLoader(h, device)
    with torch.no_grad():
        calibration = [model(*calib_loader.next_batch(h.train_batch_tokens, h.grad_accum_steps)).item()
                       for _ in range(h.gptq_calibration_batches)]
    log0(f"gptq:calibrated batches:{len(calibration)} loss:{sum(calibration) / len(calibration):.4f}")

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    blob = zlib.compress(buffer.getvalue(), 9)
    code_bytes = len(code.encode("utf-8"))
    log0(f"Serialized model int8+zlib: {len(blob)} bytes")
    log0(f"Code size: {code_bytes} bytes")
    log0(f"Total submission size int8+zlib: {len(blob) + code_bytes} bytes")
    model.load_state_dict(torch.load(io.BytesIO(zlib.decompress(blob))))
    sp = spm.SentencePieceProcessor(model_file=h.tokenizer_path)
    val = torch.cat([load_data_shard(f) for f in sorted(glob.glob(h.val_files)) if "_bytes_" not in f])[:h.val_tokens]
    val = val.to(torch.int64)
    t_eval = time.perf_counter()
    with torch.no_grad():
        val_loss = model(val[None, :-1], val[None, 1:]).item()
    val_bpb = val_loss / math.log(2) * (val.numel() - 1) / len(sp.decode(val[1:].tolist()).encode("utf-8"))
    eval_ms = 1000.0 * (time.perf_counter() - t_eval)
    log0(f"final_int8_zlib_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:{eval_ms:.0f}ms")
    log0(f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")


if __name__ == "__main__":
    main()
