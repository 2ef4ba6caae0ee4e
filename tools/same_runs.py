"""Ten configurations of the data path, each trained for a few steps on the embedded corpus, and
one digest per run: the artifact's bytes, every loss line, the data path's log lines and its
summary (timings left out). Run it on two commits and compare: a change that keeps every
behaviour leaves every digest equal, and one that does not names the configuration and the part.

    python -m tools.same_runs OUT.json                 # the ten configurations
    python -m tools.same_runs OUT.json --compare A.json   # and the parts that differ from A's

The configurations: baseline, fresh, carry, phases, 2 ranks (torchrun, gloo), an index order,
adaptive mixing, aligned rows, the plugin in a script of its own, and a resumed run. It needs
only a checkout's own files, so the same file runs on an older commit (copy it there).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "datasets"
SMALL = dict(NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="2", TRAIN_SEQ_LEN="64",
             TRAIN_BATCH_TOKENS="2048", GRAD_ACCUM_STEPS="2", ITERATIONS="12", WARMUP_STEPS="2", WARMDOWN_ITERS="4",
             MAX_WALLCLOCK_SECONDS="0", VAL_LOSS_EVERY="0", VAL_MAX_TOKENS="16385", TRAIN_LOG_EVERY="1",
             TORCH_COMPILE="0", SWA_EVERY="3", CURRICULUM_LOG_EVERY="4", SEED="7", OMP_NUM_THREADS="1",
             DATA_PATH=str(DATA / "embedded_mix_sp1024"), TOKENIZER_PATH=str(ROOT / "data/tokenizers/embedded_sp1024.model"),
             VOCAB_SIZE="1024")
DOMAINS = ",".join(f"{d}={DATA / f'embedded_{d}_sp1024'}/*train_*.bin" for d in ("code", "docs", "prose"))
CONFIGS = dict(
    baseline={},
    fresh=dict(CURRICULUM="1"),
    carry=dict(CURRICULUM="1", CURRICULUM_POOL="carry"),
    phases=dict(CURRICULUM_PHASES=str(ROOT / "configs/phases/anneal_code_to_prose.toml")),
    two_ranks=dict(CURRICULUM="1", DATA_ORDER="shuffled"),
    index_order=dict(DATA_ORDER="curriculum", ORDER_SCORE="unigram_entropy", ORDER_PACING="v"),
    adaptive_mix=dict(MIX="adaptive", MIX_DATASETS=DOMAINS, MIX_UPDATE_EVERY="2", DATA_ORDER="shuffled"),
    aligned_rows=dict(CURRICULUM="1", DATA_ALIGN="bos", DATA_ORDER="shuffled"),
    plugin=dict(CURRICULUM="1", MAX_WALLCLOCK_SECONDS="0", ITERATIONS="12"),
    resume=dict(CURRICULUM="1", CURRICULUM_POOL="carry", CHECKPOINT_EVERY="6"),
)
TIMING = re.compile(r"\S*(?:_ms|time|_avg|_cpu)\S*:[\d.,]+(?:ms)?|\d+ms")
PLUGIN_SCRIPT = """
import hashlib, json, sys, torch
from curriculum.plugin import CurriculumTokenLoader
loader = CurriculumTokenLoader(sys.argv[1], 0, 1, torch.device("cpu"))
h = hashlib.sha256()
for step in range(12):
    loader.set_progress(step / 12)
    for t in loader.next_batch(2048, 64, 2):
        h.update(t.numpy().tobytes())
data = {k: v for k, v in loader.results().items() if not any(w in k for w in ("ms", "cpu"))}
loader.close()
print(json.dumps(dict(batches=h.hexdigest(), data=data), sort_keys=True, default=str))
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def without_timings(value):
    """A summary's values with every timing left out (they differ between any two runs)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not any(w in k for w in ("_ms", "cpu", "time"))}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def placed(text: str, log_dir: Path) -> str:
    """The text with the checkout's and the runs' folders named, not spelled: two checkouts compare."""
    return text.replace(str(log_dir), "<runs>").replace(str(ROOT), "<checkout>")


def digest_run(log_dir: Path, run_id: str) -> dict:
    text = placed((log_dir / f"{run_id}.txt").read_text().split("=" * 100)[-1], log_dir)
    summary = json.loads(placed((log_dir / f"{run_id}.json").read_text(), log_dir))
    losses = [line for line in text.splitlines() if re.match(r"step:\d+/\d+ (train|val)_loss|final_|val_set:", line)]
    data = sorted(TIMING.sub("", line) for line in text.splitlines() if line.startswith(("data", "curriculum", "phase")))
    return dict(artifact=sha((log_dir / f"{run_id}.int6.ptz").read_bytes()),
                losses=sha("\n".join(TIMING.sub("", x) for x in losses).encode()), data_lines=sha("\n".join(data).encode()),
                data_summary=sha(json.dumps(without_timings(summary.get("data")), sort_keys=True, default=str).encode()),
                phases=sha(json.dumps(without_timings(summary.get("phases")), sort_keys=True, default=str).encode()),
                steps=summary.get("steps"), val_bpb=summary.get("roundtrip_val_bpb"))


def index_file(env: dict, folder: Path) -> Path:
    """A difficulty index of the embedded mix at TRAIN_SEQ_LEN=64 (the build's module name is the checkout's)."""
    out = folder / "index.cidx"
    module = "curriculum.index_build" if (ROOT / "curriculum" / "index_build.py").exists() else "curriculum.index"
    subprocess.run([sys.executable, "-m", module, "--signals", "unigram_entropy", "--processes", "1", "--out", str(out)],
                   env=env | dict(TRAIN_FILES=str(DATA / "embedded_mix_sp1024/*train_*.bin")), cwd=ROOT, check=True,
                   capture_output=True)
    return out


def run(name: str, folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURRICULUM", "MIX", "ORDER_", "DATA_"))}
    env |= SMALL | CONFIGS[name] | dict(LOG_DIR=str(folder), RUN_ID=name, PYTHONPATH=str(ROOT))
    command = [sys.executable, str(ROOT / "train_gpt.py")]
    if name == "plugin":
        done = subprocess.run([sys.executable, "-c", PLUGIN_SCRIPT, str(DATA / "embedded_mix_sp1024/*train_*.bin")],
                              env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"same_runs: {name} failed:\n{done.stderr[-3000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        return dict(batches=out["batches"][:16], data_summary=sha(json.dumps(out["data"], sort_keys=True).encode()))
    if name == "index_order":
        env["ORDER_INDEX"] = str(index_file(env, folder))
    if name == "two_ranks":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", command[1]]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"same_runs: {name} failed:\n{done.stderr[-3000:]}")
    if name == "resume":  # the same run again from its step-6 checkpoint: its own digest
        env |= dict(RUN_ID="resumed", RESUME=str(folder / "resume.ckpt"))
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"same_runs: resumed failed:\n{done.stderr[-3000:]}")
        return dict(digest_run(folder, "resumed"), uninterrupted=digest_run(folder, name)["artifact"])
    return digest_run(folder, name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.same_runs", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="where the digests go (JSON)")
    ap.add_argument("--only", default="", help="comma-separated configurations (default: all ten)")
    ap.add_argument("--compare", type=Path, help="digests of another commit: print the parts that differ")
    ap.add_argument("--keep", type=Path, help="keep the runs' logs and summaries here (a new folder)")
    a = ap.parse_args(argv)
    names = [n for n in a.only.split(",") if n] or list(CONFIGS)
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown or importlib.util.find_spec("torch") is None:
        ap.error(f"--only: {', '.join(unknown)} not among {', '.join(CONFIGS)}" if unknown else "torch is not installed")
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.keep or Path(tmp)
        for name in names:
            (folder / name).mkdir(parents=True)
            digests[name] = run(name, folder / name)
            print(f"{name:<13} {json.dumps(digests[name], sort_keys=True)}", flush=True)
    a.out.write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n")
    if a.compare:
        other = json.loads(a.compare.read_text())
        differ = [(n, k) for n in names if n in other for k in digests[n] if digests[n][k] != other[n].get(k)]
        for n, k in differ:
            print(f"differs: {n} {k}: {other[n].get(k)} -> {digests[n][k]}")
        print("same: every digest equal" if not differ else f"{len(differ)} parts differ")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
