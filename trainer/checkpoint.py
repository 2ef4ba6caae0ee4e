"""Checkpoints: CHECKPOINT_EVERY writes one, RESUME goes on from it, bit for bit.

A checkpoint holds every rank's data path and rank 0's weights, optimisers, SWA sum, RNG states
and loop counters. Its file begins with a line and the payload's sha256: RESUME verifies the sum
before anything is loaded, loads the payload as data (weights_only), refuses a checkpoint of
other code, data or settings with every difference named, and removes the temporary a run
killed mid-write left beside it. The functions take train_gpt.py's `Job`.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from curriculum import write_atomic
from trainer.settings import SettingsError


CHECKPOINT_FORMAT = 2
# A checkpoint file: this line, the payload's sha256 and a newline, then the payload (torch.save):
# RESUME verifies the sum before it loads anything, and loads the payload as data (weights_only)
CHECKPOINT_MAGIC = b"train_gpt.py checkpoint 2\n"
# settings a resumed run may change: where it logs, its name, and the checkpointing itself
RESUMABLE_CHANGES = ("RUN_ID", "LOG_DIR", "RESUME", "CHECKPOINT_EVERY", "OVERWRITE", "COLLECTIVE_TIMEOUT", "RANK",
                     "LOCAL_RANK")


@dataclass
class LoopState:
    """Where the training loop stands between two steps."""
    step: int = 0
    tokens: int = 0
    training_ms: float = 0.0
    recompiles: int = 0


def checkpoint_identity(job) -> dict:
    """What a checkpoint must share with the run that resumes it."""
    settings = {k: v for k, v in job.s.env.items() if k not in RESUMABLE_CHANGES}
    return dict(format=CHECKPOINT_FORMAT, code_sha256=job.results["provenance"]["code_sha256"],
                train_data_sha256=job.results["provenance"]["train_data_sha256"],
                tokenizer_sha256=job.results["tokenizer_sha256"], settings=settings)


def save_checkpoint(job, loop: LoopState, swa, batches) -> Path:
    """Every rank's data path and rank 0's weights, optimisers, SWA sum, RNG states and loop
    counters, in one file written atomically (a kill mid-write leaves the previous one)."""
    # each rank's own: its data path, and its optimisers (Muon keeps momentum only for the
    # matrices that rank orthogonalises)
    mine = dict(data=batches.state_dict(), optimizers=[on_cpu(o.state_dict()) for o in job.optimizers])
    ranks = [None] * job.s.world_size
    if job.distributed:
        dist.all_gather_object(ranks, mine)
    else:
        ranks = [mine]
    path = Path(job.s.log_dir) / f"{job.s.run_id}.ckpt"
    if job.s.rank == 0:
        state = dict(identity=checkpoint_identity(job), loop=asdict(loop), model=job.base_model.state_dict(),
                     ranks=ranks, swa=dict(state=swa.state, count=swa.count, slot=swa.slot),
                     rng=dict(torch=torch.get_rng_state(), numpy=np.random.get_state(),
                              cuda=torch.cuda.get_rng_state_all() if job.device.type == "cuda" else None))
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        write_atomic(path, CHECKPOINT_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    if job.distributed:
        dist.barrier()
    return path


def on_cpu(value):
    """A state dict with every tensor copied to the host, to travel between ranks."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(v) for v in value)
    return value


def load_checkpoint(job) -> dict:
    """The RESUME file, refused with every difference named when it belongs to other code,
    data or settings."""
    state = read_checkpoint(job.s.resume)
    saved = state["identity"]
    ours = checkpoint_identity(job)
    differences = [f"{k}: checkpoint {saved.get(k)!r}, this run {ours[k]!r}" for k in ours if k != "settings"
                   and saved.get(k) != ours[k]]
    theirs, mine = saved.get("settings", {}), ours["settings"]
    differences += [f"{k}: checkpoint {theirs.get(k)!r}, this run {mine.get(k)!r}" for k in sorted(set(theirs) | set(mine))
                    if theirs.get(k) != mine.get(k)]
    if differences:
        raise SettingsError(f"RESUME={job.s.resume!r}: the checkpoint is of another run:\n    " + "\n    ".join(differences))
    return state


def read_checkpoint(path: str) -> dict:
    """A checkpoint's state, its checksum verified before anything is loaded, and loaded as data:
    tensors, numbers, strings and the numpy arrays the data path keeps, no code. A damaged,
    truncated or foreign file is one SettingsError naming it and what is wrong."""
    try:
        blob = Path(path).read_bytes()
    except OSError as err:
        raise SettingsError(f"RESUME={path!r}: cannot read it ({err.strerror})") from None
    if not blob.startswith(CHECKPOINT_MAGIC):
        raise SettingsError(f"RESUME={path!r}: not a checkpoint of this trainer (it does not begin with "
                            f"{CHECKPOINT_MAGIC.strip().decode()!r})")
    digest, _, payload = blob[len(CHECKPOINT_MAGIC):].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise SettingsError(f"RESUME={path!r}: the checkpoint is damaged: its {len(payload):,} bytes do not match the "
                            f"sha256 written with them (cut short, or changed since); resume from another checkpoint")
    safe = [np.ndarray, np.dtype, np._core.multiarray._reconstruct] + [
        type(np.dtype(t)) for t in ("uint8", "uint16", "uint32", "int32", "int64", "float32", "float64", "bool")]
    try:
        with torch.serialization.safe_globals(safe):
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        state["identity"]
    except Exception as err:  # any payload that is not a checkpoint's data: one message, not a traceback
        raise SettingsError(f"RESUME={path!r}: not a checkpoint of this trainer ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:300]})") from None
    return state


def remove_stale_temporaries(job) -> None:
    """A run killed while it wrote its checkpoint leaves `.<RUN_ID>.ckpt.tmp<PID>` beside it: a resume
    of that run removes its own (and says so)."""
    folder = Path(job.s.resume).parent
    for tmp in sorted(folder.glob(f".{Path(job.s.resume).name}.tmp*")):
        tmp.unlink(missing_ok=True)
        job.log(f"resume: removed {tmp}, a checkpoint left half-written by an interrupted run")


def resume(job, state: dict, batches, swa) -> LoopState:
    job.base_model.load_state_dict(state["model"])
    mine = state["ranks"][job.s.rank]
    for opt, saved in zip(job.optimizers, mine["optimizers"]):
        opt.load_state_dict(saved)
    saved_swa = state["swa"]["state"]
    swa.state = None if saved_swa is None else {k: v.to(job.device) for k, v in saved_swa.items()}
    swa.count, swa.slot = state["swa"]["count"], state["swa"]["slot"]
    batches.load_state_dict(mine["data"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    if state["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    loop = LoopState(**state["loop"])
    job.log(f"resume: from {job.s.resume} at step:{loop.step} tokens:{loop.tokens:,} train_time:{loop.training_ms:.0f}ms "
            f"(log lines of later steps above this one belong to the interrupted run)")
    return loop
