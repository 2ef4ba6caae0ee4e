"""The probe: bad inputs and faults on every surface, each run as a user would meet it, with totals.

    python -m tools.bad_inputs [--fast] [--only WORD]

Each case runs a real process (train_gpt.py, tools.compare, tools.experiment, curriculum.index_build)
in a fresh folder and is judged by what a user sees:
- `traceback`: a Python traceback where a message belongs;
- `hang`: no end within the case's time limit;
- `crash`: killed by a signal, no message;
- `half-written`: a hidden temporary file left behind (`.name.tmpPID`);
- `silent`: success, or a message that does not name what is wrong (the case's expected words);
- `ok`: the expected exit status and a message naming the file or setting.
`--fast` runs the cases that take a few seconds each (the test suite runs them); the faults
(interrupts, a stopped rank, a shard cut under a run, a full disk) take a minute more.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curriculum.domains import sidecar_path, write_sidecar  # noqa: E402
from curriculum.shards import HEADER_BYTES, open_shard, shard_content_hash, write_shard  # noqa: E402

DATA = ROOT / "data" / "datasets"
TOKENIZER = ROOT / "data" / "tokenizers" / "embedded_sp1024.model"
TINY = dict(NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="2", TRAIN_SEQ_LEN="64",
            TRAIN_BATCH_TOKENS="2048", GRAD_ACCUM_STEPS="1", ITERATIONS="6", WARMUP_STEPS="0", WARMDOWN_ITERS="2",
            MAX_WALLCLOCK_SECONDS="0", VAL_LOSS_EVERY="0", VAL_BATCH_SIZE="8192", VAL_MAX_TOKENS="16385",
            TORCH_COMPILE="0", SWA_EVERY="2", VOCAB_SIZE="1024", TOKENIZER_PATH=str(TOKENIZER),
            DATA_PATH=str(DATA / "embedded_mix_sp1024"), RUN_ID="probe", VAL_SETS="")


@dataclass
class Outcome:
    rc: int | None
    text: str
    seconds: float


@dataclass
class Case:
    name: str
    surface: str
    run: object                 # (folder) -> Outcome
    says: tuple[str, ...]       # words the message must hold
    exit: tuple[int, ...] = (2,)
    fast: bool = True


@dataclass
class Verdict:
    case: Case
    kind: str
    detail: str = ""
    outcome: Outcome | None = field(default=None, repr=False)


def run(command: list[str], env: dict | None = None, timeout: float = 120, cwd: Path = ROOT, preexec=None) -> Outcome:
    t0 = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=preexec)
        return Outcome(done.returncode, done.stdout + done.stderr, time.perf_counter() - t0)
    except subprocess.TimeoutExpired as e:
        return Outcome(None, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else
                       str(e.stdout or ""), time.perf_counter() - t0)


def trainer_env(folder: Path, **settings) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CURRICULUM", "ORDER_", "MIX", "DATA_"))}
    return base | TINY | dict(LOG_DIR=str(folder / "logs")) | {k: str(v) for k, v in settings.items()}


def trainer(**settings):
    def go(folder: Path) -> Outcome:
        return run([sys.executable, str(ROOT / "train_gpt.py")], trainer_env(folder, **settings))
    return go


def tool(module: str, *args: str, timeout: float = 60, env: dict | None = None):
    def go(folder: Path) -> Outcome:
        return run([sys.executable, "-m", module, *[a.format(folder=folder) for a in args]], dict(os.environ) | (env or {}),
                   timeout)
    return go


def small_shards(folder: Path, n: int = 2, tokens: int = 40_000) -> list[Path]:
    """The first tokens of the docs domain's training text, as n shards of our own."""
    text = np.asarray(open_shard(sorted((DATA / "embedded_docs_sp1024").glob("*train_*.bin"))[0]))
    out = []
    for i in range(n):
        path = folder / "shards" / f"p_train_{i:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_shard(path, text[i * tokens:(i + 1) * tokens])
        out.append(path)
    return out


def with_shards(damage, **settings):
    """A training run over our own shards after `damage(folder, shards)`."""
    def go(folder: Path) -> Outcome:
        shards = small_shards(folder)
        extra = damage(folder, shards) or {}
        return trainer(TRAIN_FILES=str(folder / "shards" / "p_train_*.bin"), **(settings | extra))(folder)
    return go


def sidecar_bytes(data: bytes):
    def damage(folder, shards):
        write_sidecar(shards[1], np.asarray([0]), np.asarray([0]), ["docs"])
        write_sidecar(shards[0], np.asarray([0]), np.asarray([0]), ["docs"])
        sidecar_path(shards[0]).write_bytes(data if data else sidecar_path(shards[0]).read_bytes()[:100])
    return damage


def raw_sidecar(**fields):
    def damage(folder, shards):
        for s in shards:
            write_sidecar(s, np.asarray([0, 10]), np.asarray([0, 1]), ["docs", "prose"])
        base = dict(starts=np.asarray([0, 10]), domain_ids=np.asarray([0, 1], dtype=np.uint8),
                    domain_names=np.asarray(["docs", "prose"]), continues=False,
                    shard_content=shard_content_hash(shards[0]))
        np.savez(sidecar_path(shards[0]), **{k: v for k, v in (base | fields).items() if v is not None})
    return damage


def missing_key(folder, shards):
    for x in shards:
        write_sidecar(x, np.asarray([0]), np.asarray([0]), ["docs"])
    np.savez(sidecar_path(shards[0]), starts=np.asarray([0]), domain_names=np.asarray(["docs"]), continues=False)


def shard_rewritten(folder, shards):
    """The sidecars written, then the first shard replaced by other tokens."""
    for x in shards:
        write_sidecar(x, np.asarray([0]), np.asarray([0]), ["docs"])
    write_shard(shards[0], np.arange(500) % 900)


def phases_file(text: str, **settings):
    def go(folder: Path) -> Outcome:
        path = folder / "phases.toml"
        path.write_text(text.format(data=DATA, folder=folder))
        return trainer(CURRICULUM_PHASES=str(path), **settings)(folder)
    return go


def corrupt_dataset_shard(folder: Path) -> Outcome:
    bad = folder / "bad" / "x_train_000000.bin"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00" * 2000)
    return phases_file(f'[datasets.a]\nfiles = "{bad}"\n[datasets.b]\nfiles = "{{data}}/embedded_docs_sp1024/*train_*.bin"\n'
                       '[[phase]]\nname = "one"\nmixture = {{ a = 0.5, b = 0.5 }}\n')(folder)


def rerun_same_run_id(folder: Path) -> Outcome:
    first = trainer()(folder)
    if first.rc != 0:
        return first
    return trainer()(folder)


def damaged_index(folder: Path) -> Outcome:
    index = folder / "i.cidx"
    built = run([sys.executable, "-m", "curriculum.index_build", "--train-files", str(DATA / "embedded_mix_sp1024" / "*train_*.bin"),
                 "--tokenizer", str(TOKENIZER), "--seq-len", "64", "--signals", "random", "--out", str(index)],
                dict(os.environ))
    if built.rc != 0:
        return built
    index.write_bytes(index.read_bytes()[:len(index.read_bytes()) // 2])
    return trainer(DATA_ORDER="curriculum", ORDER_SCORE="random", ORDER_INDEX=str(index))(folder)


def damaged_checkpoint(flip: bool):
    """A run that wrote a checkpoint, then RESUME from a copy with a byte of its middle changed
    (`flip`) or cut in half."""
    def go(folder: Path) -> Outcome:
        first = trainer(ITERATIONS="4", CHECKPOINT_EVERY="2")(folder)
        if first.rc != 0:
            return first
        blob = (folder / "logs" / "probe.ckpt").read_bytes()
        middle = len(blob) // 2
        damaged = folder / "damaged.ckpt"
        damaged.write_bytes(blob[:middle] + bytes([blob[middle] ^ 1]) + blob[middle + 1:] if flip else blob[:middle])
        return trainer(ITERATIONS="4", RESUME=str(damaged), RUN_ID="again")(folder)
    return go


def build_index(folder: Path, files: str, *more: str, env: dict | None = None) -> Outcome:
    return run([sys.executable, "-m", "curriculum.index_build", "--train-files", files, "--tokenizer", str(TOKENIZER),
                "--seq-len", "64", "--signals", "random", "--processes", "1", *more], dict(os.environ) | (env or {}))


def shard_edited_after_its_index(folder: Path) -> Outcome:
    """An index built over our shards, then a token in the middle of the first changed, the size kept."""
    shards = small_shards(folder)
    index = folder / "i.cidx"
    built = build_index(folder, str(folder / "shards" / "p_train_*.bin"), "--out", str(index))
    if built.rc != 0:
        return built
    with open(shards[0], "r+b") as f:
        f.seek(shards[0].stat().st_size // 4 * 2)  # a token's first byte, in the middle
        f.write(b"\x05\x00")
    return trainer(TRAIN_FILES=str(folder / "shards" / "p_train_*.bin"), DATA_ORDER="curriculum", ORDER_SCORE="random",
                   ORDER_INDEX=str(index))(folder)


def index_header_edited(folder: Path) -> Outcome:
    """An index whose first column's offset is made negative in its JSON header."""
    index = folder / "i.cidx"
    built = build_index(folder, str(small_shards(folder)[0]), "--out", str(index))
    if built.rc != 0:
        return built
    raw = index.read_bytes()
    magic_end = raw.index(b"\n") + 1
    size = int.from_bytes(raw[magic_end:magic_end + 8], "little")
    header = json.loads(raw[magic_end + 8:magic_end + 8 + size])
    next(iter(header["columns"].values()))["offset"] = -64
    text = json.dumps(header).encode()
    index.write_bytes(raw[:magic_end] + len(text).to_bytes(8, "little") + text + raw[magic_end + 8 + size:])
    return trainer(TRAIN_FILES=str(folder / "shards" / "p_train_*.bin"), DATA_ORDER="curriculum", ORDER_SCORE="random",
                   ORDER_INDEX=str(index))(folder)


def validation_copy_in_training(folder: Path) -> Outcome:
    """The validation shard copied under a training name beside real training shards."""
    shards = small_shards(folder)
    val = sorted((DATA / "embedded_mix_sp1024").glob("*val_*.bin"))[0]
    (folder / "shards" / "p_train_000009.bin").write_bytes(val.read_bytes())
    return trainer(TRAIN_FILES=str(shards[0].parent / "p_train_*.bin"))(folder)


def address_space(limit_bytes: int):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, resource.RLIM_INFINITY))
    return limit


def model_beyond_ulimit(folder: Path) -> Outcome:
    return run([sys.executable, str(ROOT / "train_gpt.py")], trainer_env(folder, NUM_LAYERS="4000", MODEL_DIM="128"),
               preexec=address_space(4 * 2**30))


def copy_to_full_disk(folder: Path) -> Outcome:
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
    env = trainer_env(folder) | dict(TRAIN_SEQ_LEN="64", TRAIN_BATCH_TOKENS="2048")
    return run([sys.executable, "-m", "curriculum.plugin", "--copy-to", str(folder / "new" / "submission")], env,
               preexec=limit)


def compare_folder(make):
    def go(folder: Path) -> Outcome:
        runs = folder / "runs"
        runs.mkdir()
        make(runs)
        return run([sys.executable, "-m", "tools.compare", str(runs), "--out", str(folder / "report")], dict(os.environ))
    return go


def summary(seed: int, bpb: float, **changes) -> dict:
    s = dict(run_id=f"r{seed}", steps=10, val_bpb=bpb, roundtrip_val_bpb=bpb, roundtrip_val_loss=bpb * 1.4,
             val_loss=bpb * 1.4, settings=dict(SEED=seed, CURRICULUM=False), data={}, provenance={})
    return s | changes


def write(folder: Path, name: str, value) -> None:
    (folder / name).write_text(value if isinstance(value, str) else json.dumps(value))


# ------------------------------------------------------------------------------- faults

def ctrl_c(p: subprocess.Popen, t0: float, timeout: float, said: str = "") -> Outcome:
    """A terminal's Ctrl-C to the process group `p` leads (its workers and runs too); then how it ends."""
    os.killpg(p.pid, signal.SIGINT)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return Outcome(None, "", time.perf_counter() - t0)
    return Outcome(p.returncode, out + said + err, time.perf_counter() - t0)


def index_build_interrupted(folder: Path) -> Outcome:
    """Ctrl-C to the index build's process group (the workers too) once its first progress line is out."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "curriculum.index_build", "--train-files",
                          str(DATA / "embedded_mix_sp1024" / "*train_*.bin"), "--tokenizer", str(TOKENIZER), "--seq-len",
                          "16", "--processes", "2", "--out", str(folder / "i.cidx")], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = p.stderr.readline()  # the workers are scoring
    return ctrl_c(p, t0, 60, first)


def shard_rewritten_under_the_run(folder: Path) -> Outcome:
    """A token in the middle of the only training shard changed while the run reads it, the size kept."""
    shard = small_shards(folder, n=1, tokens=400_000)[0]

    def rewrite(_):
        with open(shard, "r+b") as f:
            f.seek(HEADER_BYTES + 400_000)
            f.write(b"\x05\x00")
    return during_a_run(folder, rewrite, wait_s=120, TRAIN_FILES=str(shard), DATA_ORDER="shuffled")


def wait_for_step_2(logs, t0: float, limit_s: float) -> None:
    """Until a log among `logs()` shows step 2 (the run is in its training loop), or `limit_s` from `t0`."""
    while time.perf_counter() - t0 < limit_s and not any(log.exists() and "step:2/" in log.read_text() for log in logs()):
        time.sleep(0.2)


def experiment_interrupted(folder: Path) -> Outcome:
    """Ctrl-C to tools.experiment's process group (its run too) at the run's second step."""
    config = folder / "tiny.env"
    config.write_text("".join(f"{k}={v}\n" for k, v in TINY.items()))
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "tools.experiment", "--arms", "baseline", "--seeds", "1", "--mode", "steps",
                          "--steps", "100000", "--val-every", "0", "--config", str(config), "--out", str(folder / "e")],
                         cwd=ROOT, env=trainer_env(folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    wait_for_step_2(lambda: (folder / "e").glob("*/logs/*.txt"), t0, 120)
    return ctrl_c(p, t0, 120)


def launch_interrupted(folder: Path) -> Outcome:
    """Ctrl-C to two ranks started by `python -m tools.launch` (torchrun's arguments) at step 2."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "tools.launch", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "train_gpt.py")], cwd=ROOT, env=trainer_env(folder, ITERATIONS="100000"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_step_2(lambda: [folder / "logs" / "probe.txt"], t0, 120)
    return ctrl_c(p, t0, 120)


def during_a_run(folder: Path, act, wait_s: float = 60, **settings) -> Outcome:
    """A long training run; once its log shows step 2, `act(process)`; then how it ends."""
    env = trainer_env(folder, ITERATIONS="100000", **settings)
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, str(ROOT / "train_gpt.py")], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_for_step_2(lambda: [folder / "logs" / "probe.txt"], t0, 90)
    act(p)
    try:
        out, err = p.communicate(timeout=wait_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return Outcome(None, "", time.perf_counter() - t0)
    return Outcome(p.returncode, out + err, time.perf_counter() - t0)


def interrupted(signum: int):
    return lambda folder: during_a_run(folder, lambda p: p.send_signal(signum))


def shard_cut_under_the_run(folder: Path) -> Outcome:
    shard = small_shards(folder, n=1, tokens=400_000)[0]
    return during_a_run(folder, lambda p: os.truncate(shard, 1024 + 2 * 1000), wait_s=120, TRAIN_FILES=str(shard),
                        DATA_ORDER="shuffled")


def peer_gone(signum: int):
    """Two ranks started by hand; rank 1 is stopped (SIGSTOP) or killed (SIGKILL) mid-run."""
    return lambda folder: _peer_gone(folder, signum)


def _peer_gone(folder: Path, signum: int) -> Outcome:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = trainer_env(folder, ITERATIONS="100000", COLLECTIVE_TIMEOUT="5", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), WORLD_SIZE="2")
    t0 = time.perf_counter()
    ranks = [subprocess.Popen([sys.executable, str(ROOT / "train_gpt.py")], env=env | dict(RANK=str(r), LOCAL_RANK=str(r)),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        wait_for_step_2(lambda: [folder / "logs" / "probe.txt"], t0, 90)
        ranks[1].send_signal(signum)
        out, err = ranks[0].communicate(timeout=90)
        return Outcome(ranks[0].returncode, out + err, time.perf_counter() - t0)
    except subprocess.TimeoutExpired:
        return Outcome(None, "", time.perf_counter() - t0)
    finally:
        for p in ranks:
            p.kill()
            p.wait()


def full_disk(folder: Path) -> Outcome:
    """The artifact cannot be written (a file-size limit stands in for a full disk: the same EFBIG/ENOSPC path)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    return run([sys.executable, str(ROOT / "train_gpt.py")], trainer_env(folder), preexec=limit)


CASES = [
    Case("an invalid bool", "trainer", trainer(CURRICULUM="yes"), ("CURRICULUM='yes'", "0 or 1")),
    Case("a zero sequence length", "trainer", trainer(TRAIN_SEQ_LEN="0"), ("TRAIN_SEQ_LEN",)),
    *[Case(f"{name}={value}", "trainer", trainer(**{name: value}), (f"{name}=",)) for name, value in (
        ("NUM_HEADS", "0"), ("NUM_KV_HEADS", "0"), ("MODEL_DIM", "0"), ("WORLD_SIZE", "0"), ("TRAIN_BATCH_TOKENS", "0"),
        ("GRAD_ACCUM_STEPS", "-1"), ("NUM_LAYERS", "0"), ("VOCAB_SIZE", "70000"), ("EVAL_STRIDE", "-1"),
        ("MAX_WALLCLOCK_SECONDS", "nan"), ("SEED", "1.5"))],
    Case("a RUN_ID that leaves LOG_DIR", "trainer", trainer(RUN_ID="../escape"), ("RUN_ID='../escape'",)),
    Case("a RUN_ID whose logs exist", "trainer", rerun_same_run_id, ("RUN_ID='probe'", "OVERWRITE=1")),
    Case("an unknown pacing", "trainer", trainer(DATA_ORDER="curriculum", ORDER_PACING="zigzag"), ("ORDER_PACING='zigzag'",)),
    Case("an index order with no index", "trainer", trainer(DATA_ORDER="curriculum", ORDER_INDEX="/nowhere/x.cidx"),
         ("/nowhere/x.cidx", "cannot read the index")),
    Case("a damaged index", "index", damaged_index, ("i.cidx", "truncated")),
    Case("index scores on a sequential stream", "trainer", trainer(CURRICULUM="1", CURRICULUM_SCORE="index:random"),
         ("CURRICULUM_SCORE=index:random", "sequential")),
    Case("a mix without datasets", "trainer", trainer(MIX="natural"), ("MIX=natural", "MIX_DATASETS")),
    Case("a mix dataset matching nothing", "trainer", trainer(MIX="natural", MIX_DATASETS="a=/nowhere/*.bin,b=/none/*.bin"),
         ("MIX_DATASETS[a]",)),
    Case("excess loss without a reference", "trainer",
         trainer(MIX="adaptive", MIX_RULE="excess_loss", MIX_DATASETS="a=x,b=y"), ("MIX_REFERENCE",)),
    Case("a sidecar of random bytes", "sidecar", with_shards(sidecar_bytes(b"\x13\x37" * 200)),
         ("p_train_000000.domains.npz", "not a readable")),
    Case("a truncated sidecar", "sidecar", with_shards(sidecar_bytes(b"")), ("p_train_000000.domains.npz",)),
    Case("a sidecar missing a key", "sidecar", with_shards(missing_key), ("missing domain_ids",)),
    Case("sidecar starts out of order", "sidecar",
         with_shards(raw_sidecar(starts=np.asarray([0, 30, 20]), domain_ids=np.asarray([0, 1, 0], dtype=np.uint8))),
         ("must begin at 0 and ascend",)),
    Case("a sidecar domain id out of range", "sidecar", with_shards(raw_sidecar(domain_ids=np.asarray([0, 7], dtype=np.uint8))),
         ("domain id 7 has no name",)),
    Case("a sidecar of another shard version", "sidecar", with_shards(shard_rewritten), ("another version of",)),
    Case("a corrupt shard inside a phases dataset", "phases", corrupt_dataset_shard, ("x_train_000000.bin",)),
    Case("a phase longer than any shard allows", "phases", phases_file(
        '[datasets.d]\nfiles = "{data}/embedded_docs_sp1024/*train_*.bin"\n[[phase]]\nname = "huge"\nseq_len = 4194304\n'
        'mixture = {{ d = 1.0 }}\n'), ("seq_len",)),
    Case("a phase after until_progress = 1", "phases", phases_file(
        '[datasets.d]\nfiles = "{data}/embedded_docs_sp1024/*train_*.bin"\n[[phase]]\nname = "all"\nuntil_progress = 1.0\n'
        'mixture = {{ d = 1.0 }}\n[[phase]]\nname = "never"\nmixture = {{ d = 1.0 }}\n'), ("never",)),
    Case("compare: --out is a file", "compare", lambda f: (write(f, "x", "x"), tool("tools.compare", "{folder}", "--out",
                                                                                  "{folder}/x")(f))[1], ("is a file",)),
    Case("compare: a summary whose provenance is text", "compare", compare_folder(lambda d: [
        write(d, "a.json", summary(1, 2.0, provenance="oops")), write(d, "a.txt", "")]), ("provenance",), (0, 2)),
    Case("compare: a .json that is a folder", "compare", compare_folder(lambda d: (d / "x.json").mkdir()), ("x.json",), (0, 2)),
    Case("compare: only NaN scores", "compare", compare_folder(lambda d: [write(d, "a.json", summary(1, float("nan"))),
                                                                         write(d, "a.txt", "")]), ("no usable",)),
    Case("compare: a SEED that is a list", "compare", compare_folder(lambda d: [
        write(d, "a.json", summary(1, 2.0, settings=dict(SEED=[1, 2], CURRICULUM=False))), write(d, "a.txt", "")]),
         ("SEED=[1, 2] is not a single value",), (0, 2)),
    Case("compare: CURRICULUM null", "compare", compare_folder(lambda d: [
        write(d, "a.json", summary(1, 2.0, settings=dict(SEED=1, CURRICULUM=None))), write(d, "a.txt", "")]),
         ("CURRICULUM=None is not a single value",), (0, 2)),
    Case("compare: val_sets a list", "compare", compare_folder(lambda d: [
        write(d, "a.json", summary(1, 2.0, val_sets=[1])), write(d, "a.txt", "")]), ("val_sets is a list",), (0, 2)),
    Case("compare: a plain log with a NaN score", "compare", compare_folder(lambda d: write(
        d, "p-s7.txt", "SEED=7\nCURRICULUM=0\nstep:1/1 val_loss:1 val_bpb:1 train_time:1ms\n"
        "final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan\n")), ("not a finite number",), (0, 2)),
    Case("compare: a log whose summary was lost", "compare", compare_folder(lambda d: write(
        d, "c1-s1350.txt", "code\nsettings: {\"SEED\": 1350}\nfinal_int6_zstd_roundtrip_exact val_loss:2.0 val_bpb:1.5\n")),
         ("c1-s1350.json is missing",), (0, 2)),
    Case("compare: --out in an unwritable place", "compare", lambda f: (write(f, "x", "x"), tool(
        "tools.compare", "{folder}", "--out", "{folder}/x/sub")(f))[1], ("is a file, so the folder cannot be made",)),
    Case("experiment: an infinite budget", "experiment", tool("tools.experiment", "--budget", "inf", "--out", "{folder}/e"),
         ("--budget=inf",)),
    Case("experiment: a NaN budget", "experiment", tool("tools.experiment", "--budget", "nan", "--out", "{folder}/e"),
         ("--budget",)),
    Case("experiment: --out is a file", "experiment", lambda f: (write(f, "x", "x"), tool(
        "tools.experiment", "--out", "{folder}/x")(f))[1], ("x",)),
    Case("index: every bad argument", "index", tool("curriculum.index_build", "--seq-len", "0", "--processes", "0",
                                                    "--train-files", "/nowhere/*.bin"), ("--seq-len=0", "--processes=0")),
    Case("index: a VOCAB_SIZE that is no number", "index", tool("curriculum.index_build", "--train-files", "/nowhere/*.bin",
                                                             env=dict(VOCAB_SIZE="abc")), ("VOCAB_SIZE='abc'", "/nowhere")),
    Case("proxy_loss: a TRAIN_SEQ_LEN that is no number", "index", tool("tools.proxy_loss", env=dict(
        TRAIN_SEQ_LEN="x", TRAIN_FILES="/nowhere/*.bin")), ("TRAIN_SEQ_LEN='x'", "TRAIN_FILES")),
    Case("a diverged run", "divergence", trainer(MATRIX_LR="1e30", SCALAR_LR="1e30", TIED_EMBED_LR="1e30",
                                                 GRAD_CLIP_NORM="0"), ("the run diverged", "step"), (4,)),
    Case("a checkpoint with a byte changed", "checkpoint", damaged_checkpoint(True), ("damaged.ckpt", "damaged"),
         fast=False),
    Case("a checkpoint cut in half", "checkpoint", damaged_checkpoint(False), ("damaged.ckpt", "damaged"), fast=False),
    Case("RANK beyond WORLD_SIZE", "ranks", trainer(RANK="3", WORLD_SIZE="2"), ("RANK=3", "WORLD_SIZE=2")),
    Case("WORLD_SIZE without MASTER_ADDR", "ranks", trainer(RANK="0", WORLD_SIZE="2", MASTER_ADDR="", MASTER_PORT=""),
         ("WORLD_SIZE=2", "MASTER_ADDR")),
    Case("a negative SEED", "settings", trainer(SEED="-1"), ("SEED='-1'",)),
    Case("a SEED beyond 64 bits", "settings", trainer(SEED=str(2**70)), ("SEED=", "4294967295")),
    Case("TRAIN_FILES matching the validation shard", "splits",
         trainer(TRAIN_FILES=str(DATA / "embedded_mix_sp1024" / "*.bin")), ("TRAIN_FILES=", "VAL_FILES")),
    Case("experiment: a negative first seed", "experiment", tool("tools.experiment", "--first-seed", "-1", "--out",
                                                                 "{folder}/e"), ("--first-seed=-1",)),
    Case("SIGINT mid-run", "fault", interrupted(signal.SIGINT), ("interrupted",), (130,), fast=False),
    Case("SIGHUP mid-run", "fault", interrupted(signal.SIGHUP), ("interrupted",), (130,), fast=False),
    Case("SIGTERM mid-run", "fault", interrupted(signal.SIGTERM), ("interrupted",), (130,), fast=False),
    Case("a shard cut under the run", "fault", shard_cut_under_the_run, ("p_train_000000.bin", "changed while the run"),
         fast=False),
    Case("a rank that stops answering", "fault", peer_gone(signal.SIGSTOP), ("lost the other ranks: rank 1",), (3,),
         fast=False),
    Case("a rank killed", "fault", peer_gone(signal.SIGKILL), ("lost the other ranks: rank 1",), (3,), fast=False),
    Case("a full disk (a file-size limit)", "fault", full_disk, ("probe", "cannot write"), (1,), fast=False),
    Case("a sidecar without its shard's hash", "sidecar", with_shards(raw_sidecar(shard_content=None)),
         ("p_train_000000.domains.npz", "holds no hash of its shard's content")),
    Case("a shard edited at its size after its index", "index", shard_edited_after_its_index,
         ("i.cidx", "the training shards")),
    Case("an index header with a negative offset", "index", index_header_edited, ("i.cidx", "offset -64")),
    Case("index: --out in a missing folder", "index", tool("curriculum.index_build", "--train-files",
         str(DATA / "embedded_docs_sp1024" / "*train_*.bin"), "--out", "{folder}/missing/i.cidx"),
         ("--out=", "does not exist")),
    Case("index: a VOCAB_SIZE below the shards' tokens", "index", lambda f: build_index(
         f, str(DATA / "embedded_docs_sp1024" / "*train_000000.bin"), "--out", str(f / "i.cidx"), env=dict(VOCAB_SIZE="50")),
         ("holds token id", "--vocab-size=50")),
    Case("a copy of the validation shard among the training shards", "splits", validation_copy_in_training,
         ("p_train_000009.bin (a copy of", "a split it is scored on")),
    Case("a model beyond ulimit -v", "memory", model_beyond_ulimit, ("NUM_LAYERS=4000", "ulimit -v")),
    Case("a phase beyond the memory check", "memory", phases_file(
         '[datasets.d]\nfiles = "{data}/embedded_docs_sp1024/*train_*.bin"\n[[phase]]\nname = "huge"\n'
         'seq_len = 4194304\nbatch_tokens = 16777216\nmixture = {{ d = 1.0 }}\n'), ("phase 1 (huge)", "GiB")),
    Case("plugin: --copy-to on a full disk", "plugin", copy_to_full_disk, ("--copy-to=", "cannot write"), (1,)),
    Case("Ctrl-C during the index build", "fault", index_build_interrupted, ("interrupted; no index was written",),
         (130,), fast=False),
    Case("a shard rewritten at its size under the run", "fault", shard_rewritten_under_the_run,
         ("p_train_000000.bin", "content changed"), fast=False),
    Case("Ctrl-C under tools.experiment", "fault", experiment_interrupted, ("interrupted during baseline-seed1337",),
         (130,), fast=False),
    Case("Ctrl-C under tools.launch (torchrun)", "fault", launch_interrupted,
         ("(rank 1): interrupted", "launch: SIGINT"), (130,), fast=False),
]


def judge(case: Case, outcome: Outcome, folder: Path) -> Verdict:
    hidden = [p for p in folder.rglob(".*") if ".tmp" in p.name]
    if outcome.rc is None:
        return Verdict(case, "hang", f"no end after {outcome.seconds:.0f} s", outcome)
    if "Traceback (most recent call last)" in outcome.text:
        return Verdict(case, "traceback", outcome.text.strip().splitlines()[-1][:200], outcome)
    if outcome.rc < 0:
        return Verdict(case, "crash", f"killed by signal {-outcome.rc}", outcome)
    if hidden:
        return Verdict(case, "half-written", ", ".join(p.name for p in hidden), outcome)
    missing = [w for w in case.says if w not in outcome.text]
    if outcome.rc not in case.exit or missing:
        return Verdict(case, "silent", f"exit {outcome.rc}" + (f", the message lacks {missing}" if missing else ""), outcome)
    return Verdict(case, "ok", "", outcome)


def probe(fast_only: bool = False, only: str = "", log=print) -> list[Verdict]:
    verdicts = []
    for case in CASES:
        if (fast_only and not case.fast) or (only and only not in case.name):
            continue
        with tempfile.TemporaryDirectory(prefix="probe_") as tmp:
            v = judge(case, case.run(Path(tmp)), Path(tmp))
        verdicts.append(v)
        log(f"probe: {v.kind:<12} {case.surface:<10} {case.name}" + (f"  ({v.detail})" if v.detail else ""))
    return verdicts


def totals(verdicts: list[Verdict]) -> dict[str, int]:
    kinds = ("ok", "traceback", "hang", "crash", "half-written", "silent")
    return {k: sum(v.kind == k for v in verdicts) for k in kinds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bad_inputs", description=__doc__.split("\n\n")[0])
    p.add_argument("--fast", action="store_true", help="only the cases of a few seconds each")
    p.add_argument("--only", default="", help="only the cases whose name holds this")
    a = p.parse_args(argv)
    verdicts = probe(a.fast, a.only)
    t = totals(verdicts)
    print(f"probe: {len(verdicts)} cases: " + ", ".join(f"{k} {n}" for k, n in t.items()))
    return 0 if t["ok"] == len(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
