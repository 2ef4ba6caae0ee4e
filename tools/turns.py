"""Separate trainer processes that take turns step by step: step-time ratios that drift cannot move.

Each arm is a real `train_gpt.py` process, launched as a user launches it (its own loader and
read-ahead thread, allocator, compiled model and optimiser state), but only one of them trains
at a time: a process waits for a token on its pipe, runs one optimiser step, and hands the token
to the next. Step k of every arm is measured within a few seconds of step k of the others, so a
shared or throttled machine's drift (10% between runs a few minutes apart on the 2-core VMs this
project runs on) cancels in the per-round ratios; runs one after the other cannot cancel it.
Each ring also holds two baseline processes: their geometric mean is the reference, and one
against the other (the A/A control) is the method's own error.

The arms can change one thing each inside the real trainer (the variants below, given to
train_gpt.main as its `Hooks` and to the data path as its `keep`), so that the bench separates the curriculum's mechanics from the content it keeps and from the state the
model reaches:

  ftz          flush denormal floats to zero (FTZ/DAZ) in every thread, from the process's start
  bf16_attention
               a CPU's training steps attend in bf16 under autocast, as before train_gpt.attend
               took them to fp32 (Hooks.attention_fp32=False): what the fp32 attention saves
  atomic_kernels
               PyTorch's deterministic mode left off (Hooks.repeatable_kernels=False): on a
               CPU, inductor's own fused kernels, atomics and all
  pool_only    the curriculum reads, scores and selects as usual, but trains on the pool's first
               rows: the pool's cost without its content
  read_only    the read-ahead reads the curriculum's pool, nothing is scored or selected, the
               step trains on its first rows: reading twice the rows, alone
  record=PATH  save the batches the timed steps trained on (uint16, one .npy)
  replay=PATH  a baseline process whose timed steps train on batches recorded by another arm:
               the content's cost without the pool
  pretrain=N   before the timed steps, N untimed steps on the baseline's own batches: the
               weights and optimiser state of a baseline-trained model (with replay: another
               arm's content into the baseline's state)
  profile=A-B  torch.profiler over timed steps A..B: self CPU time per operator

    python -m tools.turns        # the child side; the bench launches it (TURNS_* variables)
"""
from __future__ import annotations

import json
import math
import os
import random
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools import launch

SETTLE_MS = 25.0  # the pause between one process's step and the next one's (see Turns.wait)
VARIANTS = ("ftz", "bf16_attention", "atomic_kernels", "pool_only", "read_only", "record", "replay", "pretrain", "profile")


@dataclass(frozen=True)
class Arm:
    """One trainer process of a ring: its settings and the variants it runs with."""
    name: str
    env: dict = field(default_factory=dict)
    variants: tuple[str, ...] = ()


def parse_variants(raw: str) -> dict[str, str]:
    """`TURNS_VARIANTS`, e.g. "ftz,replay=/tmp/b.npy", as {name: value}; unknown names are an error."""
    out = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        name, _, value = part.partition("=")
        if name not in VARIANTS:
            raise ValueError(f"TURNS_VARIANTS: {name!r} is not one of {', '.join(VARIANTS)}")
        out[name] = value
    return out


# =============================================================================================
# The child: train_gpt.main() with its steps taken in turn
# =============================================================================================


class Turns:
    """This process's place in the ring: read a byte to begin a step, write one to end it."""

    def __init__(self, read_fd: int, write_fd: int, ready_fd: int, settle_ms: float = SETTLE_MS):
        self.read_fd, self.write_fd, self.ready_fd, self.settle_ms = read_fd, write_fd, ready_fd, settle_ms

    def wait(self) -> None:
        if os.read(self.read_fd, 1) != b"t":  # EOF: a process of the ring ended early
            raise SystemExit("tools.turns: the ring broke (another arm's process ended); stopping")
        # The process before this one has handed on the token, but its OpenMP workers still spin
        # for a while and its loop goes on to the next wait: without a pause, every arm's step
        # would pay for whichever arm precedes it in the ring (1-2% measured, the same for all).
        time.sleep(self.settle_ms / 1000.0)

    def hand_on(self, last: bool = False) -> None:
        try:
            os.write(self.write_fd, b"t")
        except BrokenPipeError:  # the last token of the ring: its first process may be gone already
            if not last:
                raise

    def ready(self) -> None:
        os.write(self.ready_fd, b"r")
        os.close(self.ready_fd)


class ReplayedBatches:
    """A baseline loader whose micro-batches are replaced by recorded ones: it still reads,
    counts and reports as the baseline does, so only the content changes."""

    def __init__(self, inner, path: str):
        self.inner, self.recorded, self.i = inner, np.load(path, mmap_mode="r"), 0

    def next_batch(self, at):
        import torch
        x, _ = self.inner.next_batch(at)
        row = self.recorded[self.i % len(self.recorded)]
        self.i += 1
        pair = torch.from_numpy(row.astype(np.int64)).to(x.device)
        return pair[0], pair[1]

    def __getattr__(self, name):
        return getattr(self.inner, name)


class RecordedBatches:
    """A loader that keeps a copy of every micro-batch it hands out."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def next_batch(self, at):
        x, y = self.inner.next_batch(at)
        self.batches.append(np.stack([x.cpu().numpy(), y.cpu().numpy()]).astype(np.uint16))
        return x, y

    def __getattr__(self, name):
        return getattr(self.inner, name)


def child_main() -> None:
    environment = environment_bytes(os.environ)  # as the process began, before anything sets a variable
    variants = parse_variants(os.environ.get("TURNS_VARIANTS", ""))
    import torch
    ftz = torch.set_flush_denormal(True) if "ftz" in variants else None  # before any thread is made
    import train_gpt as tg
    from curriculum.loader import Position

    fds = os.environ.get("TURNS_FDS")
    turns = Turns(*map(int, fds.split(","))) if fds else None
    state = dict(timed=False, step=0, steps_ms=[], steps_at=[], steps_faults=[], steps_sys_ms=[], profile=None)
    profile_span = tuple(int(v) for v in variants["profile"].split("-")) if "profile" in variants else None

    def timed_batches(job, batches):
        if "replay" in variants:
            return ReplayedBatches(batches, variants["replay"])
        if "record" in variants:
            state["recorder"] = RecordedBatches(batches)
            return state["recorder"]
        return batches

    def before_timed(job):
        n = int(variants.get("pretrain") or 0)
        if n:  # the weights and optimiser state of a baseline-trained model, on the baseline's own batches
            batches = job.make_batches()
            for k in range(n):
                tg.train_step(job.model, job.base_model, job.optimizers, job.s, batches, Position(k / n), job.bf16)
            batches.close()
            job.log(f"turns: {n} untimed steps on the baseline's batches before the timed steps")
        state["timed"], state["iterations"] = True, job.s.iterations
        if turns:
            turns.ready()

    def timed_step(step):
        if turns:
            turns.wait()
        profiler = None
        if profile_span and state["step"] == profile_span[0]:
            profiler = state["profiler"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        loss, tokens = step()
        if loss.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()  # CLOCK_MONOTONIC: one clock for every process of the machine
        state["steps_ms"].append(1000.0 * (t1 - t0))
        state["steps_at"].append((t0, t1))
        usage1 = resource.getrusage(resource.RUSAGE_SELF)  # the whole process: its threads too
        state["steps_faults"].append(usage1.ru_minflt - usage0.ru_minflt)
        state["steps_sys_ms"].append(1000.0 * (usage1.ru_stime - usage0.ru_stime))
        if profile_span and state["step"] == profile_span[1]:
            state["profiler"].__exit__(None, None, None)
            state["profile"] = operator_table(state["profiler"], profile_span[1] - profile_span[0] + 1)
        state["step"] += 1
        if turns:
            turns.hand_on()
            if state["step"] == state["iterations"]:  # one more round: nobody evaluates while another still steps
                turns.wait()
                turns.hand_on(last=True)
        return loss, tokens

    keep = "pool_first" if "pool_only" in variants else "read_first" if "read_only" in variants else "selected"
    tg.main(tg.Hooks(attention_fp32="bf16_attention" not in variants, repeatable_kernels="atomic_kernels" not in variants,
                     keep=keep, timed_batches=timed_batches, before_timed=before_timed, timed_step=timed_step))
    if "record" in variants:
        tg.write_atomic(Path(variants["record"]), npy_bytes(np.stack(state["recorder"].batches)))
    out = dict(steps_ms=state["steps_ms"], steps_at=state["steps_at"], steps_faults=state["steps_faults"],
               steps_sys_ms=state["steps_sys_ms"], variants=variants, flush_denormal=ftz, profile=state["profile"],
               environment_bytes=environment)
    tg.write_atomic(Path(os.environ["TURNS_OUT"]), (json.dumps(out) + "\n").encode())
    tg.shut_down_distributed()


def npy_bytes(array: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def operator_table(profiler, steps: int) -> list[dict]:
    """Self CPU time per operator and step, largest first."""
    rows = [dict(op=e.key, self_cpu_ms_per_step=e.self_cpu_time_total / 1000.0 / steps, calls_per_step=e.count / steps)
            for e in profiler.key_averages()]
    return sorted(rows, key=lambda r: -r["self_cpu_ms_per_step"])


# =============================================================================================
# The coordinator: one ring of processes per repeat, the arms in a seeded order
# =============================================================================================


class RingError(RuntimeError):
    pass


def child_environment(arm: Arm, env: dict, workdir: Path, run_id: str) -> dict:
    """A trainer process's environment: the run's settings, the arm's, and where its output goes."""
    return dict(env) | arm.env | dict(TURNS_VARIANTS=",".join(arm.variants), RUN_ID=run_id, LOG_DIR=str(workdir),
                                      TURNS_OUT=str(workdir / f"{run_id}.turns.json"))


def environment_bytes(env: dict) -> int:
    """What the environment takes on a new process's stack: each `KEY=value` and its NUL."""
    return sum(len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items())


def equal_sizes(envs: list[dict]) -> list[dict]:
    """The environments padded (TURNS_PAD) to one size. The environment's size moves where a
    process's stack and so its buffers are placed; two processes of one program can differ by a
    percent in speed from that alone, and arms that differ in a name's length would carry it."""
    pad = "TURNS_PAD"
    longest = max(environment_bytes(e | {pad: ""}) for e in envs)
    return [e | {pad: "x" * (longest - environment_bytes(e | {pad: ""}))} for e in envs]


def run_ring(arms: list[Arm], env: dict, workdir: Path, tag: str, timeout_s: float = 1800,
             layout: str = "fixed") -> dict[str, dict]:
    """Launch one process per arm, start the token when all have compiled and warmed up, and
    return each arm's turns output and trainer summary. `layout`: "fixed" starts every process
    without address randomisation (fixed_layout), "random" as the system starts it."""
    n = len(arms)
    pipes = [os.pipe() for _ in range(n)]
    ready_r, ready_w = os.pipe()
    procs = []
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run_ids = [f"{tag}-{i}-{arm.name}" for i, arm in enumerate(arms)]
        envs = equal_sizes([child_environment(arm, env, workdir, run_id) | dict(
            TURNS_FDS=",".join(map(str, (pipes[i][0], pipes[(i + 1) % n][1], ready_w))))
            for i, (arm, run_id) in enumerate(zip(arms, run_ids))])
        for i, (arm, run_id, child_env) in enumerate(zip(arms, run_ids, envs)):
            fds = (pipes[i][0], pipes[(i + 1) % n][1], ready_w)
            log = open(workdir / f"{run_id}.stderr", "w")
            procs.append((arm, run_id, log, launch.start_trainer(
                child_env, entry=("-m", "tools.turns"), pass_fds=fds, stdout=subprocess.DEVNULL, stderr=log,
                preexec_fn=fixed_layout if layout == "fixed" else None)))
        first_write = pipes[0][1]
        for r, w in pipes:  # only the ring's processes hold the ends now, so a death breaks it
            os.close(r)
            if w != first_write:
                os.close(w)
        os.close(ready_w)
        ready_w = None
        deadline = time.monotonic() + timeout_s
        got = 0
        while got < n:
            chunk = os.read(ready_r, n - got)
            if not chunk:
                raise RingError(failure(procs, "a process ended before its first timed step"))
            got += len(chunk)
        os.write(first_write, b"t")
        os.close(first_write)
        for arm, run_id, log, proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
        bad = [p for p in procs if p[3].returncode]
        if bad:
            raise RingError(failure(procs, f"{', '.join(p[1] for p in bad)} failed"))
    except BaseException:
        for _, _, _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise
    finally:
        os.close(ready_r)
        if ready_w is not None:
            os.close(ready_w)
        for _, _, log, _ in procs:
            log.close()
    out = {}
    for arm, run_id, _, _ in procs:
        turns = json.loads((workdir / f"{run_id}.turns.json").read_text())
        summary = json.loads((workdir / f"{run_id}.json").read_text())
        out[arm.name] = dict(turns=turns, summary=summary, run_id=run_id)
    return out


def failure(procs, what: str) -> str:
    for _, _, _, proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    tails = []
    for arm, run_id, log, proc in procs:
        log.flush()
        text = Path(log.name).read_text()[-1500:]
        if proc.returncode not in (0, -9) and text.strip():
            tails.append(f"--- {run_id} (exit {proc.returncode}):\n{text}")
    return f"tools.turns: {what}\n" + "\n".join(tails)


PAIR = ("baseline", "baseline_again")  # the A/A control's two processes: one program, two names
ORDER_SCHEME = "pair balanced"          # how ring_order lays a ring out; rings kept under another are not pooled


def ring_order(arms: list[Arm], k: int) -> list[Arm]:
    """The arms of the k-th ring in a seeded order of their own, so that no arm always follows
    the same one (a rotation would keep every arm's neighbours), and the A/A pair launched in
    turn: `baseline` first in even rings, `baseline_again` first in odd ones. A process launched
    earlier may run a little faster (19 fp32 rings seeded without this launched `baseline` first
    in 13); balanced, launch order cancels out of the A/A control instead of being read as it."""
    order = list(arms)
    random.Random(k).shuffle(order)
    names = [a.name for a in order]
    if set(PAIR) <= set(names):
        i, j = names.index(PAIR[0]), names.index(PAIR[1])
        if (i < j) != (k % 2 == 0):
            order[i], order[j] = order[j], order[i]
    return order


def run_single(arm: Arm, env: dict, workdir: Path) -> dict:
    """One process on its own, no ring (the recording run): its turns output."""
    workdir.mkdir(parents=True, exist_ok=True)
    child_env = child_environment(arm, env, workdir, arm.name)
    child_env.pop("TURNS_FDS", None)
    done = launch.run_trainer(child_env, entry=("-m", "tools.turns"), capture_output=True, text=True)
    if done.returncode:
        raise RingError(f"tools.turns: the {arm.name} run failed:\n{done.stderr[-2000:]}")
    return json.loads((workdir / f"{arm.name}.turns.json").read_text())


def ratios_in_turns(rings: list[dict[str, dict]], base: str | tuple[str, ...], skip: int = 3, end: int | None = None,
                    block: int = 10) -> dict[str, dict]:
    """Each arm's step time against `base` (one arm, or several whose geometric mean per round is
    the reference: two baseline processes halve what one process's own luck adds): per round the
    log of the ratio, averaged over blocks of `block` rounds (neighbouring rounds share the
    machine's state, blocks much less), the blocks of every ring pooled; the geometric-mean
    ratio and its 95% t-interval over blocks."""
    bases = (base,) if isinstance(base, str) else tuple(base)
    import scipy.stats
    blocks: dict[str, list[float]] = {}
    medians: dict[str, list[float]] = {}
    per_ring: dict[str, list[float]] = {}  # one ratio per pair of processes: how much processes differ
    for ring in rings:
        base_ms = np.exp(np.mean([np.log(ring[b]["turns"]["steps_ms"][skip:end]) for b in bases], axis=0))
        for name, run in ring.items():
            ms = np.asarray(run["turns"]["steps_ms"][skip:end])
            medians.setdefault(name, []).append(float(np.median(ms)))
            if name in bases:
                continue
            logs = np.log(ms / base_ms)
            usable = len(logs) // block * block
            blocks.setdefault(name, []).extend(logs[:usable].reshape(-1, block).mean(axis=1).tolist())
            per_ring.setdefault(name, []).append(float(np.exp(logs.mean())))
    out = {}
    for name, values in blocks.items():
        values = np.asarray(values)
        mean = float(values.mean())
        if len(values) > 1 and values.std() > 0:
            ci = scipy.stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
            low, high = math.exp(ci.low), math.exp(ci.high)
        else:
            low = high = math.exp(mean)
        out[name] = dict(ratio=math.exp(mean), ratio_ci95=[low, high], blocks=len(values),
                         median_ms=float(np.mean(medians[name])), per_ring=per_ring[name],
                         ring_ci95=ring_interval(per_ring[name]))
    for b in bases:
        out[b] = dict(ratio=1.0, ratio_ci95=[1.0, 1.0], blocks=0, median_ms=float(np.mean(medians[b])),
                      per_ring=[1.0] * len(rings), ring_ci95=[1.0, 1.0])
    return out


def ring_interval(per_ring: list[float]) -> list[float]:
    """The 95% t-interval of the geometric mean over rings, each ring one pair of processes. The
    blocks' interval samples the rounds inside each process; a process's own speed (its memory
    layout, where ASLR put it) is one draw per ring, and only this interval counts it."""
    import scipy.stats
    logs = np.log(np.asarray(per_ring))
    if len(logs) < 2 or logs.std() == 0:
        return [float(np.exp(logs.mean()))] * 2
    ci = scipy.stats.ttest_1samp(logs, 0.0).confidence_interval(0.95)
    return [math.exp(ci.low), math.exp(ci.high)]


def profile_difference(rings: list[dict[str, dict]], base: str, arm: str, top: int = 12) -> list[dict]:
    """The operators whose self CPU time per step differs most between two profiled arms
    (means over the rings), with both times."""
    def per_op(name):
        total: dict[str, float] = {}
        for ring in rings:
            for row in ring[name]["turns"]["profile"] or []:
                total[row["op"]] = total.get(row["op"], 0.0) + row["self_cpu_ms_per_step"] / len(rings)
        return total
    a, b = per_op(base), per_op(arm)
    rows = [dict(op=op, base_ms=a.get(op, 0.0), arm_ms=b.get(op, 0.0), difference_ms=b.get(op, 0.0) - a.get(op, 0.0))
            for op in set(a) | set(b)]
    rows.sort(key=lambda r: -abs(r["difference_ms"]))
    total = dict(op="(all operators)", base_ms=sum(a.values()), arm_ms=sum(b.values()))
    total["difference_ms"] = total["arm_ms"] - total["base_ms"]
    return [total] + rows[:top]


def costs_nothing(ratio: dict, margin: float = 0.02) -> bool:
    """The README's rule: "costs nothing" only where the 95% CI holds 1.00 and lies inside 1 +- margin;
    both intervals, the blocks' and the rings' (where there is one), must."""
    intervals = [ratio["ratio_ci95"]] + ([ratio["ring_ci95"]] if "ring_ci95" in ratio else [])
    return all(low <= 1.0 <= high and 1.0 - margin <= low and high <= 1.0 + margin for low, high in intervals)


ADDR_NO_RANDOMIZE = 0x0040000  # personality(2): the process and what it execs are laid out without ASLR


def fixed_layout() -> None:
    """Run in a ring's child before exec: every process of one program is then laid out the same,
    so that a ring compares arms, not where address randomisation happened to put each process."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.personality(ADDR_NO_RANDOMIZE)


if __name__ == "__main__":
    child_main()
