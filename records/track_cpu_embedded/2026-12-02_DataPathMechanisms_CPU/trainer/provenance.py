"""Provenance: what a run records so that it is never pooled with a run of other code, data or
device, and the code an artifact counts."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import time
from pathlib import Path

import torch

from curriculum import shards_fingerprint
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the annotations only: settings import nothing from here
    from trainer.settings import Settings

HERE = Path(__file__).resolve().parents[1]


def code_files() -> list[Path]:
    """train_gpt.py and every file of curriculum/ and trainer/: the code an artifact needs."""
    return [HERE / "train_gpt.py"] + [p for package in ("curriculum", "trainer") for p in sorted((HERE / package).rglob("*"))
                                      if p.is_file() and "__pycache__" not in p.parts]


def code_bytes() -> int:
    return sum(p.stat().st_size for p in code_files())


def code_sha256() -> str:
    h = hashlib.sha256()
    for path in code_files():
        h.update(f"{path.relative_to(HERE).as_posix()}\0{path.stat().st_size}\0".encode() + path.read_bytes())
    return h.hexdigest()


def git_commit() -> str | None:
    """HEAD, with '-dirty' when the trainer's code differs from it; None outside a checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "train_gpt.py", "curriculum"], cwd=HERE,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_provenance(s: Settings, device: torch.device, train_files: list[Path], started: float) -> dict:
    manifest = train_files[0].parent / "manifest.json"
    try:
        corpus = json.loads(manifest.read_text()).get("corpus_fingerprint")
    except (OSError, ValueError, AttributeError):
        corpus = None
    return dict(
        code_sha256=code_sha256(), git_commit=git_commit(), torch=torch.__version__,
        python=platform.python_version(), device_kind=device.type, device_name=device_name(device),
        threads=torch.get_num_threads(), host=socket.gethostname(),
        started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), cwd=os.getcwd(),
        train_shards=[dict(file=str(p.resolve()), bytes=p.stat().st_size) for p in train_files],
        train_data_sha256=shards_fingerprint(train_files), corpus_fingerprint=corpus)
