"""BatchSource.state_dict / load_state_dict: a loader restored from a saved state gives exactly the
batches, counts and log lines the uninterrupted loader gives, for every order, pool, rank and
mixture, inside a phase and across a phase change."""
from __future__ import annotations

import glob
import io

import numpy as np
import pytest
import torch

from curriculum.loader import Position
from curriculum import CurriculumConfig, Mixture, open_shard, write_shard
from sources import batch_source

T = 32
SEQS = 4
TIMINGS = ("data_wait_ms_total", "data_wait_ms_per_step", "reader_cpu_ms_per_step")  # wall clock, not state


def domain_files(dataset, name):
    return tuple(sorted(glob.glob(dataset["folders"][f"embedded_{name}_sp1024"] + "/*train_*.bin")))


def small_stream(dataset, tmp_path, name: str, tokens: int) -> tuple:
    """The first `tokens` of a domain's training text as its own shard: small enough to wrap or run out."""
    text = np.concatenate([np.asarray(open_shard(f)) for f in domain_files(dataset, name)])[:tokens]
    path = tmp_path / f"{name}_train_000000.bin"
    write_shard(path, text)
    return (path,)


def saved(state: dict) -> dict:
    """The state as a checkpoint carries it: through torch.save and back."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def make(files, *, config=CurriculumConfig(), order="sequential", rank=0, world=1, mixture=None, seed=7, align="none"):
    return batch_source(None if mixture else files, seq_len=T, batch_seqs=SEQS, rank=rank, world_size=world,
                       vocab_size=1024, device=torch.device("cpu"), config=config, order=order, seed=seed, mixture=mixture,
                       align=align)


def take(batches, n: int, start: int, total: int) -> list[torch.Tensor]:
    out = []
    for k in range(start, start + n):
        x, y = batches.next_batch(Position(k / total))
        out.append(torch.cat([x, y[:, -1:]], dim=1))
    return out


def comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMINGS}


def check_resume(factory, before: int, after: int, change=None, change_at: int | None = None):
    """Take `before` batches, save, take `after` more; a new loader restored from the save must
    give the same `after` batches, the same log line and the same summary. `change(batches)`,
    when given, is a phase change applied at batch `change_at` in both runs."""
    total = before + after
    reference, restored = factory(), factory()
    try:
        expected, state = [], None
        for k in range(total):
            if change and k == change_at:
                change(reference)
            if k == before:
                state = saved(reference.state_dict())
            expected += take(reference, 1, k, total)
        ref_line, ref_summary = reference.log_line(total, 1.0), comparable(reference.summary(Position(step=total))['data'])
        restored.load_state_dict(state)
        got = []
        for k in range(before, total):
            if change and k == change_at:
                change(restored)
            got += take(restored, 1, k, total)
        assert len(got) == after
        for k, (a, b) in enumerate(zip(expected[before:], got)):
            assert torch.equal(a, b), f"batch {before + k} differs after the restore"
        ref_wait = ref_line.split("data_wait_ms:")
        new_wait = restored.log_line(total, 1.0).split("data_wait_ms:")
        assert new_wait[0] == ref_wait[0] and new_wait[1].split(" ", 1)[1:] == ref_wait[1].split(" ", 1)[1:]
        assert comparable(restored.summary(Position(step=total))['data']) == ref_summary
    finally:
        reference.close()
        restored.close()


@pytest.mark.parametrize("order", ["sequential", "shuffled"])
@pytest.mark.parametrize("pool", [None, "fresh", "carry"])
def test_a_restored_loader_goes_on_exactly_in_every_order_and_pool(dataset, tmp_path, order, pool):
    files = small_stream(dataset, tmp_path, "prose", 3000)  # 2 passes and more in 40 batches: wraps inside
    config = CurriculumConfig(enabled=True, pool=pool) if pool else CurriculumConfig()
    check_resume(lambda: make(files, config=config, order=order), before=17, after=23)


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_restores_its_own_part(dataset, tmp_path, rank):
    files = small_stream(dataset, tmp_path, "docs", 20000)
    config = CurriculumConfig(enabled=True, pool="carry")
    for order in ("sequential", "shuffled"):
        check_resume(lambda: make(files, config=config, order=order, rank=rank, world=2), before=9, after=11)


@pytest.mark.parametrize("order", ["sequential", "shuffled"])
def test_aligned_rows_restore_their_pass_and_skipped_tokens_alone_and_in_a_mixture(dataset, tmp_path, order):
    files = domain_files(dataset, "prose")
    config = CurriculumConfig(enabled=True, pool="carry")
    check_resume(lambda: make(files, config=config, order=order, align="bos", rank=1, world=2), before=7, after=9)
    mix = Mixture(("docs", "prose"), (domain_files(dataset, "docs"), files), ("wrap", "wrap"), (0.5, 0.5))
    check_resume(lambda: make(None, config=config, order=order, mixture=mix, align="bos"), before=7, after=9)


@pytest.mark.parametrize("order", ["sequential", "shuffled"])
def test_a_mixture_that_wraps_and_drops_restores_its_credits_passes_and_drops(dataset, tmp_path, order):
    mix = Mixture(("docs", "prose", "code"), (small_stream(dataset, tmp_path, "docs", 4000), domain_files(dataset, "prose"),
                                              small_stream(dataset, tmp_path, "code", 1500)),
                  ("wrap", "wrap", "drop"), (0.5, 0.3, 0.2))
    config = CurriculumConfig(enabled=True, pool="carry")
    # code runs out near batch 20, docs wraps near batch 25: the save at 18 sits before both
    check_resume(lambda: make(None, config=config, order=order, mixture=mix), before=18, after=22)


@pytest.mark.parametrize("save_before_change", [True, False])
def test_a_restore_inside_a_phase_and_across_a_phase_change(dataset, tmp_path, save_before_change):
    mix = Mixture(("docs", "prose"), (domain_files(dataset, "docs"), domain_files(dataset, "prose")),
                  ("wrap", "wrap"), (0.7, 0.3))
    phase2 = CurriculumConfig(enabled=True, pool="carry", schedule="constant", target=0.2)

    def enter_phase_2(batches):  # a new shape, filter and mixture, as a phases file's second phase
        batches.reconfigure(T // 2, SEQS * 2, phase2, [0.2, 0.8])
    for order in ("sequential", "shuffled"):
        check_resume(lambda: make(None, config=CurriculumConfig(enabled=True), order=order, mixture=mix),
                     before=10, after=14, change=enter_phase_2, change_at=14 if save_before_change else 6)


PHASES = '''
schedule_progress = "phase"
[datasets.docs]
files = "{docs}"
[datasets.code]
files = "{code}"
on_exhaust = "drop"
[[phase]]
name = "carry"
steps = 6
mixture = {{ docs = 0.6, code = 0.4 }}
curriculum = true
pool = "carry"
[[phase]]
name = "short"
seq_len = 16
mixture = {{ docs = 0.3, code = 0.7 }}
'''


@pytest.mark.parametrize("order", ["sequential", "shuffled"])
@pytest.mark.parametrize("save_at", [3, 9])  # inside the first phase, and after the change at step 6
def test_a_loader_following_a_phases_file_restores_its_phase_and_goes_on_across_the_change(dataset, tmp_path, order,
                                                                                          save_at):
    phases = tmp_path / "phases.toml"
    phases.write_text(PHASES.format(docs=domain_files(dataset, "docs")[0], code=small_stream(dataset, tmp_path, "code", 900)[0]))

    def loader():
        return batch_source(domain_files(dataset, "prose"), seq_len=T, batch_seqs=SEQS, rank=0, world_size=1,
                           vocab_size=1024, device=torch.device("cpu"), config=CurriculumConfig(), order=order, seed=3,
                           phases=str(phases), grad_accum_steps=2)

    def steps(batches, first: int, last: int) -> tuple[list, list]:
        rows, lines = [], []
        for step in range(first, last):
            at = Position(step / 16, 1.0, step, step * 2 * SEQS * T, 10.0 * step)
            for _ in range(2):  # GRAD_ACCUM_STEPS micro-batches per step
                x, y = batches.next_batch(at)
                rows.append(torch.cat([x, y[:, -1:]], dim=1))
            lines += batches.drain_log(step + 1)
        return rows, lines

    def end(batches) -> dict:
        out = batches.summary(Position(1.0, 1.0, 16, 16 * 2 * SEQS * T, 160.0))
        out["data"] = comparable(out["data"])
        return out

    reference, restored = loader(), loader()
    try:
        rows, lines = steps(reference, 0, save_at)
        state = saved(reference.state_dict())
        more, more_lines = steps(reference, save_at, 16)
        expected = end(reference)
        restored.load_state_dict(state)
        got, got_lines = steps(restored, save_at, 16)
        assert len(got) == len(more) and all(torch.equal(a, b) for a, b in zip(more, got))
        assert got[-1].shape[1] == 17 and rows[0].shape[1] == T + 1  # the second phase's shorter rows
        assert [line.split(" data_wait_ms:")[0] for line in got_lines] == \
            [line.split(" data_wait_ms:")[0] for line in more_lines]
        assert any(line.startswith("phase:2/2 name:short step:6") for line in lines + more_lines)
        assert end(restored) == expected and [p["name"] for p in expected["phases"]] == ["carry", "short"]
        assert expected["phases"][0]["steps"] == 6 and "code" in expected["data"]["datasets_dropped"]
    finally:
        reference.close()
        restored.close()
