"""curriculum/plugin.py: the challenge's loader interface, bit for bit with the curriculum off,
in a training loop written the challenge's way, and tools.compare on that loop's plain logs."""
from __future__ import annotations

import glob
import hashlib
import inspect
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
import torch.nn.functional as F

from curriculum import CurriculumConfig, open_shard, write_shard
from curriculum.plugin import CurriculumSettingsError, CurriculumTokenLoader
from curriculum.shards import BOS_ID

ROOT = Path(__file__).resolve().parents[1]


def ReferenceLoader(pattern: str, rank: int, world_size: int):
    """The challenge's DistributedTokenLoader as SPEC.md describes it, written independently
    (tests/challenge_script.py): the sorted shards in order, wrapping to the first after the
    last; each call takes world_size x span tokens, span = global_tokens // (world_size x
    grad_accum) + 1."""
    from tests.challenge_script import DistributedTokenLoader
    return DistributedTokenLoader(pattern, rank, world_size, torch.device("cpu"))


@pytest.fixture
def tiny_shards(dataset, tmp_path):
    val = np.concatenate([np.asarray(open_shard(f)) for f in sorted(glob.glob(dataset["data_path"] + "/*val_*.bin"))])
    start = 0
    for i, n in enumerate([700, 13, 1500, 90]):  # boundary crossings and wrap-around within a few calls
        write_shard(tmp_path / f"t_train_{i:06d}.bin", val[start:start + n])
        start += n
    return str(tmp_path / "t_train_*.bin")


@pytest.fixture
def clean_env(monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith(("CURRICULUM", "ORDER_")) or k in ("DATA_ORDER", "DATA_ALIGN", "DOC_MAX_TOKENS", "SEED",
                                                         "VOCAB_SIZE", "TOKENIZER_PATH", "MAX_WALLCLOCK_SECONDS",
                                                         "ITERATIONS"):
            monkeypatch.delenv(k)
    return monkeypatch


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("accum", [1, 2, 4])
def test_curriculum_off_is_the_challenges_loader_bit_for_bit(tiny_shards, clean_env, world, accum):
    for rank in range(world):
        ref, ours = ReferenceLoader(tiny_shards, rank, world), CurriculumTokenLoader(tiny_shards, rank, world, "cpu")
        try:
            for _ in range(40):
                x_ref, y_ref = ref.next_batch(world * accum * 4 * 16, 16, accum)
                x, y = ours.next_batch(world * accum * 4 * 16, 16, accum)
                assert x.dtype == torch.int64 and torch.equal(x, x_ref) and torch.equal(y, y_ref)
        finally:
            ours.close()


def test_shapes_may_change_between_calls_and_stay_bit_identical(tiny_shards, clean_env):
    ref, ours = ReferenceLoader(tiny_shards, 1, 2), CurriculumTokenLoader(tiny_shards, 1, 2, "cpu")
    shapes = [(1024, 16, 2), (1024, 16, 2), (2048, 32, 2), (512, 8, 1), (1024, 16, 2)] * 8  # (tokens, seq_len, accum)
    try:
        for tokens, seq_len, accum in shapes:
            x_ref, y_ref = ref.next_batch(tokens, seq_len, accum)
            x, y = ours.next_batch(tokens, seq_len, accum)
            assert x.shape == (tokens // (2 * accum * seq_len), seq_len)
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    finally:
        ours.close()


@pytest.mark.parametrize("pool", ["fresh", "carry"])
def test_with_the_curriculum_shapes_change_and_rows_come_from_the_stream(tiny_shards, clean_env, pool):
    clean_env.setenv("CURRICULUM", "1")
    clean_env.setenv("CURRICULUM_POOL", pool)
    stream = np.concatenate([np.asarray(open_shard(f)) for f in sorted(glob.glob(tiny_shards))])
    loader = CurriculumTokenLoader(tiny_shards, 0, 1, "cpu")
    try:
        for k, (tokens, seq_len) in enumerate([(128, 16), (128, 16), (256, 32), (128, 16)] * 3):
            loader.set_progress(k / 12)
            x, y = loader.next_batch(tokens, seq_len, 1)
            assert x.shape == y.shape == (tokens // seq_len, seq_len) and torch.equal(x[:, 1:], y[:, :-1])
            text = stream.tobytes() * 3
            for row in torch.cat([x, y[:, -1:]], 1).numpy().astype("<u2"):
                assert row.tobytes() in text  # a real row of the (wrapping) stream
        s = loader.results()
    finally:
        loader.close()
    assert s["pool"] == pool and s["sequences_trained"] == 12 * 8  # 128 / 16 and 256 / 32 rows: 8 each call
    if pool == "carry":  # each shape change drops the waiting set, counted as discarded
        assert s["sequences_discarded"] > 0 and s["sequences_read"] == (s["sequences_trained"] + s["sequences_waiting"]
                                                                       + s["sequences_discarded"])


def test_invalid_settings_are_reported_together(tiny_shards, clean_env):
    for k, v in dict(CURRICULUM="yes", CURRICULUM_SCHEDULE="zigzag", CURRICULUM_POOL="stale",
                     CURRICULUM_OVERSAMPLE="0.5", DATA_ORDER="random").items():
        clean_env.setenv(k, v)
    with pytest.raises(CurriculumSettingsError) as err:
        CurriculumTokenLoader(tiny_shards, 0, 1, "cpu")
    for expected in ("CURRICULUM='yes': must be 0 or 1", "CURRICULUM_SCHEDULE='zigzag'", "CURRICULUM_POOL='stale'",
                     "CURRICULUM_OVERSAMPLE=0.5", "DATA_ORDER='random': must be one of sequential, shuffled"):
        assert expected in str(err.value)
    with pytest.raises(CurriculumSettingsError, match="CURRICULUM_TARGET=2"):
        CurriculumTokenLoader(tiny_shards, 0, 1, "cpu", config=CurriculumConfig(enabled=True, target=2.0))


def test_data_align_bos_gives_rows_that_begin_at_a_document_through_the_plugin(dataset, clean_env):
    clean_env.setenv("DATA_ALIGN", "bos")
    clean_env.setenv("DOC_MAX_TOKENS", "12")
    loader = CurriculumTokenLoader(dataset["folders"]["embedded_prose_sp1024"] + "/*train_*.bin", 0, 1, "cpu")
    try:
        for _ in range(3):
            x, y = loader.next_batch(8 * 16, 16, 1)
            assert x.shape == (8, 16) and (x[:, 0] == BOS_ID).all()
            assert ((x == BOS_ID).sum(dim=1) >= 2).all()  # documents cut at 12 tokens: at least two per row of 17
        data = loader.results()
        assert data["data_align"] == "bos" and data["tokens_skipped"] > 0
    finally:
        loader.close()


def test_a_whole_run_order_from_the_index_through_the_plugin(dataset, clean_env, tmp_path):
    from curriculum.index_build import build_index
    files = sorted(Path(p) for p in glob.glob(dataset["folders"]["embedded_docs_sp1024"] + "/*train_*.bin"))
    index = tmp_path / "docs.cidx"
    build_index(files, seq_len=16, align="none", doc_max=0, vocab_size=1024, tokenizer=dataset["tokenizer"],
                signals=["compression_ratio"], out=index, progress=False)
    clean_env.setenv("DATA_ORDER", "curriculum")
    clean_env.setenv("ORDER_INDEX", str(index))
    clean_env.setenv("TOKENIZER_PATH", dataset["tokenizer"])  # the index's fingerprint names it
    loader = CurriculumTokenLoader(dataset["folders"]["embedded_docs_sp1024"] + "/*train_*.bin", 0, 1, "cpu")
    try:
        for step in range(6):
            loader.set_progress(step / 6)
            x, y = loader.next_batch(8 * 16, 16, 1)
            assert x.shape == (8, 16)
        order = loader.results()["order"]
        assert order["draws"] == 6 and order["max_reads_in_a_pass"] == 1 and order["config"]["pacing"] == "warmup"
    finally:
        loader.close()
    clean_env.setenv("ORDER_PACING", "zigzag")
    with pytest.raises(CurriculumSettingsError, match="ORDER_PACING='zigzag': must be one of warmup, linear, reverse, v"):
        CurriculumTokenLoader(dataset["folders"]["embedded_docs_sp1024"] + "/*train_*.bin", 0, 1, "cpu")


def test_close_ends_the_read_ahead_thread(tiny_shards, clean_env):
    loader = CurriculumTokenLoader(tiny_shards, 0, 1, "cpu")
    loader.next_batch(256, 16, 1)
    thread = loader.source._read_ahead._thread
    assert thread.is_alive()
    loader.close()
    assert not thread.is_alive()


# ------------------------------------------------------------------ a challenge-style script

def challenge_style_run(pattern: str, val_tokens: np.ndarray, tokenizer: str, log_path: Path, steps: int = 12):
    """A training loop as the challenge's scripts write one: its own model and progress, the
    loader called with the challenge's signature, the challenge's log lines."""
    import os
    lines = [inspect.getsource(challenge_style_run)]  # the log starts with the script, then the environment
    lines += [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(("CURRICULUM", "SEED", "RUN_ID"))]
    torch.manual_seed(int(os.environ.get("SEED", "0")))
    model = torch.nn.Sequential(torch.nn.Embedding(1024, 32), torch.nn.Linear(32, 1024))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = CurriculumTokenLoader(pattern, 0, 1, torch.device("cpu"))
    t0 = time.perf_counter()
    for step in range(steps):
        progress = step / steps  # what this script's warmdown would use
        loader.set_progress(progress)
        for g in opt.param_groups:
            g["lr"] = 0.01 * min(1.0, (1 - progress) / 0.3)
        x, y = loader.next_batch(2048, 32, 2)
        loss = F.cross_entropy(model(x).view(-1, 1024), y.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ms = 1000 * (time.perf_counter() - t0)
        lines.append(f"step:{step + 1}/{steps} train_loss:{loss.item():.4f} train_time:{ms:.0f}ms "
                     f"step_avg:{ms / (step + 1):.2f}ms")
    lines.append(loader.log_line(steps))
    loader.close()
    with torch.no_grad():
        v = torch.from_numpy(val_tokens.astype(np.int64))
        val_loss = F.cross_entropy(model(v[:-1]), v[1:]).item()
    n_bytes = len(spm.SentencePieceProcessor(model_file=tokenizer).decode(val_tokens[1:].tolist()).encode())
    val_bpb = val_loss / math.log(2) * (len(val_tokens) - 1) / n_bytes
    lines.append(f"step:{steps}/{steps} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} train_time:{ms:.0f}ms "
                 f"step_avg:{ms / steps:.2f}ms")
    lines.append(f"final_int8_zlib_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:1ms")
    lines.append(f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")
    log_path.write_text("\n".join(lines) + "\n")


def test_a_challenge_style_loop_trains_with_both_arms_and_compare_reads_its_plain_logs(dataset, clean_env, tmp_path):
    from tools.compare import build_report

    pattern = dataset["data_path"] + "/*train_*.bin"
    val = np.asarray(open_shard(sorted(glob.glob(dataset["data_path"] + "/*val_*.bin"))[0]))[:4097].copy()
    logs = tmp_path / "logs"
    logs.mkdir()
    for seed in (1, 2, 3):
        for arm in ("0", "1"):
            clean_env.setenv("CURRICULUM", arm)
            clean_env.setenv("SEED", str(seed))
            clean_env.setenv("RUN_ID", f"arm{arm}_seed{seed}")
            challenge_style_run(pattern, val, dataset["tokenizer"], logs / f"arm{arm}_seed{seed}.txt")
    text = (logs / "arm1_seed1.txt").read_text()
    assert "curriculum step:12 " in text and "data step:12 " in (logs / "arm0_seed1.txt").read_text()
    report, comparisons = build_report(logs, tmp_path / "out", draw=False)
    c = comparisons[0]
    assert len(comparisons) == 1 and c.overall.test == "paired t" and c.overall.n == (3, 3) and len(c.overall.per_seed) == 3
    assert "baseline" in report and "curriculum unigram_entropy/v" in report
    assert "plain challenge log" in report
    code = hashlib.sha256(inspect.getsource(challenge_style_run).rstrip("\n").encode()).hexdigest()
    assert code[:12] in report  # the script's source is the code both arms ran


@pytest.mark.parametrize("args, message", [
    (dict(rank=0, world_size=0), "world_size=0: must be a whole number >= 1"),
    (dict(rank=0, world_size=-1), "world_size=-1"),
    (dict(rank=2, world_size=2), "rank=2: must be a whole number in [0, world_size=2)"),
    (dict(rank=-1, world_size=2), "rank=-1"),
    (dict(rank=0, world_size=1, vocab_size="abc"), "VOCAB_SIZE='abc': must be a whole number >= 2"),
])
def test_bad_loader_arguments_are_named_at_construction(tiny_shards, clean_env, args, message):
    vocab = args.pop("vocab_size", None)
    with pytest.raises(CurriculumSettingsError, match=re.escape(message)):
        CurriculumTokenLoader(tiny_shards, args["rank"], args["world_size"], "cpu", vocab_size=vocab)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_cuda_device_on_a_machine_without_one_is_named(tiny_shards, clean_env):
    with pytest.raises(CurriculumSettingsError, match="device='cuda': no CUDA device"):
        CurriculumTokenLoader(tiny_shards, 0, 1, "cuda")


def test_bad_batch_arguments_and_a_nan_progress_are_named(tiny_shards, clean_env):
    loader = CurriculumTokenLoader(tiny_shards, 0, 1, "cpu")
    try:
        for args in ((256, 0, 1), (256, 16, 0), (0, 16, 1), (256, -16, 1)):
            with pytest.raises(ValueError, match="must be whole numbers >= 1"):
                loader.next_batch(*args)
        with pytest.raises(ValueError, match="must be finite numbers"):
            loader.set_progress(float("nan"))
    finally:
        loader.close()


def test_without_set_progress_the_loader_follows_the_scripts_budget_and_sums_up_in_json(tiny_shards, clean_env):
    clean_env.setenv("CURRICULUM", "1")
    clean_env.setenv("MAX_WALLCLOCK_SECONDS", "0")
    clean_env.setenv("ITERATIONS", "8")
    loader = CurriculumTokenLoader(tiny_shards, 0, 1, "cpu")
    try:
        for _ in range(4 * 2):  # four steps of two micro-batches
            loader.next_batch(512, 32, 2)
        assert loader.progress == 4 / 8  # the next batch's: step 4 of ITERATIONS=8
        assert re.search(r" progress:0\.5000 ", loader.log_line(4))
        loader.set_progress(0.9)
        assert loader.progress == 0.9 and re.search(r" progress:0\.9000 ", loader.log_line(5))
        line = loader.summary()
        assert line.startswith("curriculum: summary {") and "\n" not in line
        body = json.loads(line.split(" ", 2)[2])
        assert body["settings"]["ITERATIONS"] == 8 and body["settings"]["SEED"] == 1337
        assert body["data"]["micro_batches"] == 8 and body["code_bytes"] == CurriculumTokenLoader.code_bytes()
    finally:
        loader.close()


def test_a_bad_budget_is_named_with_every_other_bad_setting(tiny_shards, clean_env):
    clean_env.setenv("MAX_WALLCLOCK_SECONDS", "-1")
    clean_env.setenv("ITERATIONS", "0")
    clean_env.setenv("CURRICULUM", "2")
    with pytest.raises(CurriculumSettingsError) as e:
        CurriculumTokenLoader(tiny_shards, 0, 1, "cpu")
    message = str(e.value)
    assert "MAX_WALLCLOCK_SECONDS='-1': must be a number of seconds >= 0" in message
    assert "ITERATIONS='0': must be a whole number >= 1" in message and "CURRICULUM='2'" in message


OPTIONAL = {"index.py", "readers/index_order.py", "readers/shuffled.py", "readers/aligned.py", "readers/mixed.py",
            "blend.py", "mixing.py", "phases.py", "signals.py"}  # imported only when used


@pytest.mark.parametrize("settings, imported", [
    (dict(CURRICULUM="1"), set()),
    (dict(CURRICULUM="0", MIX="adaptive", MIX_RULE="odm"), {"mixing.py", "readers/mixed.py", "blend.py"}),
    (dict(CURRICULUM="0", MIX="natural"), {"readers/mixed.py", "blend.py"}),
], ids=["default", "adaptive mix", "natural mix"])
def test_the_copy_command_writes_exactly_the_files_the_settings_import(dataset, tmp_path, settings, imported):
    import os
    import preloaded
    folders = dataset["folders"]
    datasets = ",".join(f"{d}={folders[f'embedded_{d}_sp1024']}/*train_*.bin" for d in ("code", "docs", "prose"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURRICULUM", "MIX", "ORDER_", "DATA_"))} | dict(
        DATA_PATH=dataset["data_path"], TRAIN_SEQ_LEN="64", TRAIN_BATCH_TOKENS="2048", **settings) | (
        dict(MIX_DATASETS=datasets) if "MIX" in settings else {})
    out = preloaded.run(env, ROOT, module="curriculum.plugin", args=("--copy-to", str(tmp_path / "submission")))
    assert out.returncode == 0, out.stderr[-3000:]
    folder = tmp_path / "submission" / "curriculum"
    copied = sorted(p for p in folder.rglob("*") if p.is_file())
    names = {p.relative_to(folder).as_posix() for p in copied}
    assert names & OPTIONAL == imported
    assert {"plugin.py", "loader.py", "__init__.py", "readers/__init__.py", "readers/sequential.py"} <= names
    for name in names:  # the package's own files, whole
        assert (folder / name).read_bytes() == (ROOT / "curriculum" / name).read_bytes()
    total = sum(p.stat().st_size for p in copied)
    assert f"{total:>8,}  bytes in {len(copied)} files" in out.stdout
    assert total < sum(p.stat().st_size for p in (ROOT / "curriculum").rglob("*.py"))
    again = preloaded.run(env, ROOT, module="curriculum.plugin", args=("--copy-to", str(tmp_path / "submission")))
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_the_copy_command_on_a_full_disk_ends_in_one_line_and_leaves_nothing(dataset, tmp_path):
    import os
    import resource
    import signal
    import subprocess
    import sys

    def small_disk():  # a file-size limit stands in for a full disk: the same failed write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURRICULUM", "MIX", "ORDER_", "DATA_"))} | dict(
        DATA_PATH=dataset["data_path"], TRAIN_SEQ_LEN="64", TRAIN_BATCH_TOKENS="2048")
    target = tmp_path / "new" / "submission"
    out = subprocess.run([sys.executable, "-m", "curriculum.plugin", "--copy-to", str(target)], cwd=ROOT, env=env,
                         capture_output=True, text=True, preexec_fn=small_disk, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert f"curriculum.plugin: --copy-to={target}: cannot write" in out.stderr and "nothing was copied" in out.stderr
    assert list(tmp_path.iterdir()) == []


DRAW = """import hashlib, json, sys
import torch
import curriculum
from curriculum.plugin import CurriculumTokenLoader
loader = CurriculumTokenLoader(sys.argv[1], 0, 1, torch.device("cpu"))
h = hashlib.sha256()
for step in range(6):
    loader.set_progress(step / 6)
    for t in loader.next_batch(2048, 64, 1):
        h.update(t.numpy().tobytes())
loader.close()
try:
    import curriculum.index
    index = "imported"
except ModuleNotFoundError:
    index = "missing"
print(json.dumps(dict(batches=h.hexdigest(), package=curriculum.__file__, code_bytes=loader.code_bytes(), index=index)))
"""


def test_the_packed_plugin_is_one_small_file_that_draws_the_same_batches(dataset, tmp_path):
    import os
    import preloaded
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURRICULUM", "MIX", "ORDER_", "DATA_"))} | dict(
        DATA_PATH=dataset["data_path"], TRAIN_SEQ_LEN="64", TRAIN_BATCH_TOKENS="2048", CURRICULUM="1", SEED="7")
    packed = tmp_path / "submission"
    out = preloaded.run(env, ROOT, module="curriculum.plugin", args=("--copy-to", str(packed), "--pack"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert [p.name for p in (packed / "curriculum").iterdir()] == ["__init__.py"]
    size = (packed / "curriculum" / "__init__.py").stat().st_size
    assert f"{size:>8,}  bytes in 1 files" in out.stdout
    assert size <= 32_000  # the plugin's share of a user's artifact with the curriculum on (docs/plugin.md)
    (tree := tmp_path / "tree").mkdir()
    pattern = dataset["data_path"] + "/*train_*.bin"
    draws = {}
    for where, extra in ((packed, {}), (tree, dict(PYTHONPATH=str(ROOT)))):
        (where / "draw.py").write_text(DRAW)
        done = preloaded.run(env | extra, where, script=where / "draw.py", args=(pattern,))
        assert done.returncode == 0, done.stderr[-3000:]
        draws[where] = json.loads(done.stdout.splitlines()[-1])
    assert draws[packed]["batches"] == draws[tree]["batches"]
    assert draws[packed]["package"] == str(packed / "curriculum" / "__init__.py")
    assert draws[tree]["package"] == str(ROOT / "curriculum" / "__init__.py")
    assert draws[packed]["code_bytes"] == size and draws[tree]["code_bytes"] > 4 * size
    assert draws[packed]["index"] == "missing" and draws[tree]["index"] == "imported"  # packed: what the run imports


def test_a_phases_file_is_refused_by_the_plugin_not_ignored(tiny_shards, monkeypatch):
    monkeypatch.setenv("CURRICULUM_PHASES", "configs/phases/v_filter_one_phase.toml")
    with pytest.raises(CurriculumSettingsError, match="CURRICULUM_PHASES=.*train_gpt.py does"):
        CurriculumTokenLoader(tiny_shards, 0, 1, torch.device("cpu"))
