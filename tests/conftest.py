"""Shared fixtures: the embedded dataset (built once, skipped when up to date) and a helper
that runs the real train_gpt.py in a process of its own (forked with torch already imported,
tests/preloaded.py, or through torchrun)."""
from __future__ import annotations

import glob
import json
import os
import subprocess
from pathlib import Path

import pytest

import preloaded
from tools import launch

# One intra-op thread per test process: `make test` runs one pytest worker per core, and a second
# thread in each only spins against the other worker's processes (a tiny run: 10.1 s on one thread,
# 11.8 s on two, 2-core AMD EPYC). Subprocesses inherit it through the environment; set it to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]

# A configuration small enough for a few seconds per run on a 2-core CPU.
TINY = dict(NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="2",
            TRAIN_SEQ_LEN="64", TRAIN_BATCH_TOKENS="2048", GRAD_ACCUM_STEPS="2", ITERATIONS="30",
            WARMUP_STEPS="2", WARMDOWN_ITERS="10", MAX_WALLCLOCK_SECONDS="0", VAL_LOSS_EVERY="0",
            VAL_BATCH_SIZE="8192", VAL_MAX_TOKENS="16385", TRAIN_LOG_EVERY="1", TORCH_COMPILE="0",
            MATRIX_LR="0.04", SCALAR_LR="0.04", TIED_EMBED_LR="0.05", SWA_EVERY="5",
            MUON_MOMENTUM_WARMUP_STEPS="10")


def pytest_collection_modifyitems(items):
    """The tests marked `long` (a cold compile, a process ring) first: with one worker per core,
    none of them is then left running alone at the end of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def torch_threads_unchanged():
    """A test that leaves its process on more torch threads than it found makes every later test
    of that worker spin against the other worker: the suite then took twice as long. Named here,
    not found by timing."""
    import sys
    torch = sys.modules.get("torch")  # a test that imports torch first begins on OMP_NUM_THREADS
    before = torch.get_num_threads() if torch else None
    yield
    if before is not None and (after := torch.get_num_threads()) != before:
        torch.set_num_threads(before)
        pytest.fail(f"the test left torch on {after} threads; it began on {before}")


@pytest.fixture(scope="session")
def dataset() -> dict:
    from data.build import DATA_DIR, BuildConfig, build

    folders = build(BuildConfig(), DATA_DIR, log=lambda msg: None)
    mix = next(f for name, f in folders.items() if "_mix_" in name)
    return dict(data_path=str(mix), tokenizer=str(DATA_DIR / "tokenizers" / "embedded_sp1024.model"),
                vocab_size=1024, folders={k: str(v) for k, v in folders.items()})


@pytest.fixture(scope="session")
def dataset_8192() -> dict:
    """A slice of the embedded corpus (150 documents a source) with an 8192-token tokenizer of its
    own, as `make data VOCAB=8192` builds the whole: built once, skipped when up to date."""
    from data.build import DATA_DIR, BuildConfig, build

    out = DATA_DIR / "datasets" / "slice_sp8192"
    folders = build(BuildConfig(vocab_size=8192, max_docs=150), out, log=lambda msg: None)
    mix = next(f for name, f in folders.items() if "_mix_" in name)
    return dict(data_path=str(mix), tokenizer=str(out / "tokenizers" / "embedded_sp8192.model"), vocab_size=8192)


def trainer_env(dataset: dict, tmp_path: Path, **overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURRICULUM", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env.update(TINY)
    env.update(DATA_PATH=dataset["data_path"], TOKENIZER_PATH=dataset["tokenizer"],
               VOCAB_SIZE=str(dataset["vocab_size"]), LOG_DIR=str(tmp_path / "logs"), RUN_ID="run")
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def run_trainer(env: dict, nproc: int = 0, timeout: int = 600, torchrun: bool = False) -> subprocess.CompletedProcess:
    """The trainer to the end, one process or `nproc` ranks: forked with torch imported, or, with
    `torchrun`, launched as a user launches it (tools/launch.py)."""
    if torchrun:
        return launch.run_trainer(env, nproc, capture_output=True, text=True, timeout=timeout)
    return preloaded.run(env, ROOT, script=ROOT / "train_gpt.py", timeout=timeout, nproc=nproc)


def summary(env: dict) -> dict:
    return json.loads((Path(env["LOG_DIR"]) / f"{env['RUN_ID']}.json").read_text())


@pytest.fixture(scope="session")
def docs_files(dataset):
    """The embedded corpus's docs domain's training shards."""
    folder = next(f for name, f in dataset["folders"].items() if "_docs_" in name)
    return sorted(Path(p) for p in glob.glob(str(Path(folder) / "*train_*.bin")))
