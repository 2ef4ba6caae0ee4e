"""Run summaries as train_gpt.py writes them, for the comparison tool's tests: the first
record's per-seed round-trip scores, and a way to write any variation of them to a folder."""
from __future__ import annotations

import copy
import json
from pathlib import Path

NATS_PER_BPB = 0.1549 / 0.1062  # the first record's ratio of Δ nats to Δ bpb
# seed: (baseline, curriculum) round-trip val_bpb of the first record
RECORD = {1337: (2.3048, 2.2372), 1338: (2.3148, 2.2159), 1339: (2.3652, 2.2129)}


def summary(seed: int, curriculum: bool, bpb: float, **settings) -> dict:
    flag = int(curriculum)
    return dict(
        run_id=f"c{flag}-s{seed}", device="cpu", world_size=1, steps=430, tokens_seen=430 * 8192,
        train_time_ms=150000.0, step_avg_ms=348.8, val_loss=bpb * NATS_PER_BPB, val_bpb=bpb,
        roundtrip_val_loss=bpb * NATS_PER_BPB, roundtrip_val_bpb=bpb, artifact_bytes=700000,
        data=dict(data_wait_ms_per_step=0.05), val_tokens=584704, val_sha256="v" * 64, tokenizer_sha256="t" * 64,
        settings=dict(SEED=seed, CURRICULUM=curriculum, RUN_ID=f"c{flag}-s{seed}", DATA_PATH="./data/mix",
                      TOKENIZER_PATH="./data/tok.model", DEVICE="auto", VAL_BATCH_SIZE=32768) | settings,
        provenance=dict(code_sha256="c" * 64, torch="2.13.0+cpu", device_name="AMD EPYC", threads=2, host="vm",
                        train_data_sha256="d" * 64, started_utc="2026-11-22T10:00:00Z", cwd="/work/main"))


def record_runs() -> dict[str, dict]:
    """{file stem: summary} of the first record's six runs."""
    out = {}
    for seed, (base, cur) in RECORD.items():
        out[f"c0-s{seed}"] = summary(seed, False, base)
        out[f"c1-s{seed}"] = summary(seed, True, cur)
    return out


def write_runs(folder: Path, runs: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, s in runs.items():
        (folder / f"{stem}.json").write_text(json.dumps(s))
        (folder / f"{stem}.txt").write_text("")
    return folder


def changed(runs: dict, stem: str, path: tuple, value) -> dict:
    """A deep copy of `runs` with runs[stem][path...] = value."""
    runs = copy.deepcopy(runs)
    d = runs[stem]
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    return runs
