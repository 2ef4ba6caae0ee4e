"""A small training script laid out the way the challenge's own train_gpt.py scripts are, for
tests/test_plugin_in_a_script.py to paste the README's plugin lines into and run.

What it keeps of theirs: settings read from the environment with their defaults, shards found
under DATA_PATH as fineweb_train_*.bin, the loader built once for the warm-up and again after
it, a loop that derives its warmdown from the wallclock cap or from ITERATIONS, the log file
that starts with the script's source and a line of '=', the step lines, the code size and the
final round-trip lines. The model is a bigram table, so that a run takes seconds on a CPU.
"""
from __future__ import annotations

import copy
import glob
import io
import math
import os
import time
import zlib
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F


class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    train_files = os.path.join(data_path, "fineweb_train_*.bin")
    val_files = os.path.join(data_path, "fineweb_val_*.bin")
    tokenizer_path = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
    run_id = os.environ.get("RUN_ID", "run")
    seed = int(os.environ.get("SEED", 1337))
    iterations = int(os.environ.get("ITERATIONS", 20000))
    warmup_steps = int(os.environ.get("WARMUP_STEPS", 20))
    warmdown_iters = int(os.environ.get("WARMDOWN_ITERS", 1200))
    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))
    train_batch_tokens = int(os.environ.get("TRAIN_BATCH_TOKENS", 524288))
    train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 1024))
    train_log_every = int(os.environ.get("TRAIN_LOG_EVERY", 200))
    vocab_size = int(os.environ.get("VOCAB_SIZE", 1024))
    val_tokens = int(os.environ.get("VAL_TOKENS", 8193))
    lr = float(os.environ.get("LR", 0.05))


def load_data_shard(file: str) -> np.ndarray:
    header = np.fromfile(file, dtype="<i4", count=256)
    return np.fromfile(file, dtype="<u2", count=int(header[2]), offset=1024)


class DistributedTokenLoader:
    """The shards in order, wrapping after the last; each call takes world_size spans of
    global_tokens / (world_size x grad_accum_steps) + 1 tokens and keeps this rank's."""

    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device):
        self.files = sorted(glob.glob(pattern))
        if not self.files:
            raise FileNotFoundError(f"No files found for pattern: {pattern}")
        self.rank, self.world_size, self.device = rank, world_size, device
        self.file_idx, self.pos, self.tokens = 0, 0, load_data_shard(self.files[0])

    def take(self, n: int) -> np.ndarray:
        chunks = []
        while n > 0:
            if self.pos == len(self.tokens):
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens, self.pos = load_data_shard(self.files[self.file_idx]), 0
            k = min(n, len(self.tokens) - self.pos)
            chunks.append(self.tokens[self.pos:self.pos + k])
            self.pos, n = self.pos + k, n - k
        return np.concatenate(chunks)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int):
        span = global_tokens // (self.world_size * grad_accum_steps) + 1
        chunk = self.take(span * self.world_size)
        local = torch.from_numpy(chunk[self.rank * span:(self.rank + 1) * span].astype(np.int64)).to(self.device)
        return local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)


class BigramLM(torch.nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.table = torch.nn.Embedding(vocab_size, vocab_size)
        torch.nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.table(x).flatten(0, 1), y.flatten())


def eval_val(model: BigramLM, val: np.ndarray, sp: spm.SentencePieceProcessor) -> tuple[float, float]:
    tokens = torch.from_numpy(val.astype(np.int64))
    with torch.no_grad():
        val_loss = model(tokens[None, :-1], tokens[None, 1:]).item()
    n_bytes = len(sp.decode(val[1:].tolist()).encode("utf-8"))
    return val_loss, val_loss / math.log(2) * (len(val) - 1) / n_bytes


def main() -> None:
    code = Path(__file__).read_text()
    args = Hyperparameters()
    rank, world_size, device = 0, 1, torch.device("cpu")  # one process: the distributed set-up is not the point
    grad_accum_steps = 2
    os.makedirs("logs", exist_ok=True)
    logfile = f"logs/{args.run_id}.txt"

    def log0(msg: str, console: bool = True) -> None:
        if console:
            print(msg)
        with open(logfile, "a", encoding="utf-8") as f:
            print(msg, file=f)

    log0(code, console=False)
    log0("=" * 100, console=False)
    torch.manual_seed(args.seed)
    model = BigramLM(args.vocab_size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    max_wallclock_ms = 1000.0 * args.max_wallclock_seconds if args.max_wallclock_seconds > 0 else None

    def lr_mul(step: int, elapsed_ms: float) -> float:
        if max_wallclock_ms is None:
            start = max(args.iterations - args.warmdown_iters, 0)
            return max((args.iterations - step) / max(args.warmdown_iters, 1), 0.0) if step >= start else 1.0
        step_ms = elapsed_ms / max(step, 1)
        remaining_ms = max(max_wallclock_ms - elapsed_ms, 0.0)
        warmdown_ms = args.warmdown_iters * step_ms
        return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0

    train_loader = DistributedTokenLoader(args.train_files, rank, world_size, device)
    if args.warmup_steps > 0:  # prime the code paths, then start again from the initial state
        initial_model, initial_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
        for _ in range(args.warmup_steps):
            for _ in range(grad_accum_steps):
                x, y = train_loader.next_batch(args.train_batch_tokens, args.train_seq_len, grad_accum_steps)
                (model(x, y) / grad_accum_steps).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.load_state_dict(initial_model)
        opt.load_state_dict(initial_opt)
        train_loader = DistributedTokenLoader(args.train_files, rank, world_size, device)

    training_time_ms, stop_after_step, step = 0.0, None, 0
    t0 = time.perf_counter()
    while True:
        if step == args.iterations or (stop_after_step is not None and step >= stop_after_step):
            break
        elapsed_ms = training_time_ms + 1000.0 * (time.perf_counter() - t0)
        scale = lr_mul(step, elapsed_ms)
        for group in opt.param_groups:
            group["lr"] = args.lr * scale
        for _ in range(grad_accum_steps):
            x, y = train_loader.next_batch(args.train_batch_tokens, args.train_seq_len, grad_accum_steps)
            loss = model(x, y)
            (loss / grad_accum_steps).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        approx_training_time_ms = training_time_ms + 1000.0 * (time.perf_counter() - t0)
        if args.train_log_every > 0 and (step <= 10 or step % args.train_log_every == 0 or stop_after_step is not None):
            log0(f"step:{step}/{args.iterations} train_loss:{loss.item():.4f} train_time:{approx_training_time_ms:.0f}ms step_avg:{approx_training_time_ms / step:.2f}ms")
        if stop_after_step is None and max_wallclock_ms is not None and approx_training_time_ms >= max_wallclock_ms:
            stop_after_step = step
    training_time_ms += 1000.0 * (time.perf_counter() - t0)
    if stop_after_step is not None and step < args.iterations:
        log0(f"stopping_early: wallclock_cap train_time:{training_time_ms:.0f}ms step:{step}/{args.iterations}")

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    blob = zlib.compress(buffer.getvalue(), 9)
    code_bytes = len(code.encode("utf-8"))
    log0(f"Serialized model fp32+zlib: {len(blob)} bytes")
    log0(f"Code size: {code_bytes} bytes")
    log0(f"Total submission size fp32+zlib: {len(blob) + code_bytes} bytes")
    model.load_state_dict(torch.load(io.BytesIO(zlib.decompress(blob))))
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer_path)
    val = np.concatenate([load_data_shard(f) for f in sorted(glob.glob(args.val_files))])[:args.val_tokens]
    t_eval = time.perf_counter()
    val_loss, val_bpb = eval_val(model, val, sp)
    eval_ms = 1000.0 * (time.perf_counter() - t_eval)
    log0(f"final_fp32_zlib_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:{eval_ms:.0f}ms")
    log0(f"final_fp32_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")


if __name__ == "__main__":
    main()
