"""curriculum/loader.py: the batch seam, read-ahead, selection on real text, ranks, determinism."""
from __future__ import annotations

import glob
import re
from collections import Counter

import numpy as np
import pytest
import sentencepiece as spm
import torch

from curriculum.loader import DataPath, Position
from curriculum import (CurriculumConfig, DataError, open_shard, unigram_entropy,
                        write_shard, write_sidecar)
from sources import batch_source
from data.sources import SOURCES

T = 32


def real_tokens(dataset, n: int) -> np.ndarray:
    val = np.concatenate([np.asarray(open_shard(f)) for f in sorted(glob.glob(dataset["data_path"] + "/*val_*.bin"))])
    return val[:n].copy()


def write_stream(tmp_path, tokens: np.ndarray, sizes: list[int]) -> list:
    files, start = [], 0
    for i, n in enumerate(sizes):
        path = tmp_path / f"s_train_{i:06d}.bin"
        write_shard(path, tokens[start:start + n])
        files.append(path)
        start += n
    return files


def plain_batches(stream: np.ndarray, rank: int, world: int, seqs: int, count: int):
    """The baseline's loader, written independently: every micro-batch takes world x (seqs x T + 1)
    tokens of the (endless) stream, the rank takes its slice, x and y are shifted views."""
    span = seqs * T + 1
    need = count * world * span
    cycled = np.concatenate([stream] * (need // len(stream) + 1))
    for k in range(count):
        chunk = cycled[k * world * span:(k + 1) * world * span]
        local = torch.from_numpy(chunk[rank * span:(rank + 1) * span].astype(np.int64))
        yield local[:-1].view(seqs, T), local[1:].view(seqs, T)


def source(files, config=CurriculumConfig(), rank=0, world=2, seqs=4, vocab=1024):
    return batch_source(files, seq_len=T, batch_seqs=seqs, rank=rank, world_size=world, vocab_size=vocab,
                       device=torch.device("cpu"), config=config)


def test_curriculum_off_gives_exactly_the_plain_loaders_batches(dataset, tmp_path):
    tokens = real_tokens(dataset, 3000)
    files = write_stream(tmp_path, tokens, [1000, 7, 1993])  # crosses shards, wraps around, a tiny shard
    for rank in (0, 1):
        batches = source(files, rank=rank)
        try:
            for x_ref, y_ref in plain_batches(tokens, rank, 2, 4, 40):
                x, y = batches.next_batch(Position(0.3))
                assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
        finally:
            batches.close()


def test_two_ranks_read_disjoint_rows_and_select_only_from_them(dataset, tmp_path):
    tokens = real_tokens(dataset, 20000)
    files = write_stream(tmp_path, tokens, [20000])
    cfg = CurriculumConfig(enabled=True)
    seen = {}
    for rank in (0, 1):
        batches = source(files, config=cfg, rank=rank)
        rows = []
        for k in range(10):
            x, y = batches.next_batch(Position(k / 10))
            rows.append(torch.cat([x, y[:, -1:]], dim=1))
        positions = batches.read_positions[:10]
        batches.close()
        for read, kept in zip(positions, rows):
            assert len(read) == 8
            pool = [torch.from_numpy(tokens[p:p + T + 1].astype(np.int64)) for p in read.tolist()]
            assert all(any(torch.equal(row, r) for r in pool) for row in kept)  # kept rows come from this pool
        seen[rank] = {i for read in positions for p in read.tolist() for i in range(p, p + T + 1)}
    assert not seen[0] & seen[1]


def test_the_loader_is_the_trainers_data_path_and_a_stand_in_without_a_seam_method_is_not(dataset, tmp_path):
    batches = source(write_stream(tmp_path, real_tokens(dataset, 5000), [5000]), world=1)
    try:
        assert isinstance(batches, DataPath)
        batches.next_batch(Position(0.0, 1.0, 0, 0, 0.0))
        assert batches.drain_log(1) == [] and batches.drain_log(50)[0].startswith("data step:50 ")

        class NoLog:  # a loader that cannot report: the trainer could not log what it does
            def next_batch(self, at): ...
            def summary(self, at): ...
            def state_dict(self): ...
            def load_state_dict(self, state): ...
            def close(self): ...
        assert not isinstance(NoLog(), DataPath)
    finally:
        batches.close()


def test_same_inputs_select_identical_tokens(dataset, tmp_path):
    files = write_stream(tmp_path, real_tokens(dataset, 30000), [30000])
    cfg = CurriculumConfig(enabled=True, oversample=3.0)
    runs = []
    for _ in range(2):
        batches = source(files, config=cfg, world=1, seqs=5)
        runs.append([batches.next_batch(Position(k / 23, 0.6)) for k in range(23)])
        batches.close()
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*runs))


def repetitive_and_prose_rows(sp) -> tuple[list[list[int]], list[list[int]]]:
    """Real text: reStructuredText tables and lists from the Python docs (repetitive rows) and
    entries of the Jargon File (varied prose), cut into T-token rows (the loader's rows are
    these plus the next row's first token, the last target)."""
    docs = next(s for s in SOURCES if s.name == "python-docs")
    jargon = next(s for s in SOURCES if s.name == "jargon-file")
    table_line = re.compile(r"^\s*(\+[-=+]+\+|\|.*\||=+( +=+)+|\* .{0,30})\s*$")
    tables = "\n".join(line for _, text in docs.documents(docs.files()[:200])
                       for line in text.splitlines() if table_line.match(line))
    prose = "\n".join(text for _, text in list(jargon.documents(jargon.files()))[300:700])

    def rows(text):
        ids = sp.encode(text)
        return [ids[i:i + T] for i in range(0, len(ids) - T, T)]
    return rows(tables), rows(prose)


def test_v_schedule_keeps_easier_sequences_early_and_late_than_in_the_middle(dataset, tmp_path):
    sp = spm.SentencePieceProcessor(model_file=dataset["tokenizer"])
    easy, hard = repetitive_and_prose_rows(sp)
    n = min(len(easy), len(hard), 600)
    assert n >= 200
    # Alternate the kinds, in pools of 16 rows plus the one extra token each micro-batch reads,
    # so that every pool holds 8 repetitive and 8 prose rows, aligned.
    pools = [easy[i:i + 8] for i in range(0, n - 8, 8)], [hard[i:i + 8] for i in range(0, n - 8, 8)]
    mixed = [tok for e, h in zip(*pools) for pair in zip(e, h) for row in pair for tok in row]
    mixed = [tok for k in range(0, len(mixed), 16 * T) for tok in mixed[k:k + 16 * T] + [1]]
    files = write_stream(tmp_path, np.asarray(mixed, dtype=np.uint16), [len(mixed)])
    batches = source(files, config=CurriculumConfig(enabled=True), world=1, seqs=8)
    repetitive = {tuple(r) for r in easy[:n]}
    kept, share = {}, {}
    for progress in (0.0, 0.45, 1.0):
        scores, rows = [], []
        for _ in range(10):
            x, y = batches.next_batch(Position(progress))
            full = torch.cat([x, y[:, -1:]], 1)
            scores += unigram_entropy(full, 1024).tolist()
            rows += [tuple(r) for r in x.tolist()]
        kept[progress] = float(np.mean(scores))
        share[progress] = sum(r in repetitive for r in rows) / len(rows)
    batches.close()
    assert kept[0.0] < kept[0.45] - 0.25 and kept[1.0] < kept[0.45] - 0.25, kept
    assert share[0.0] > 0.75 and share[1.0] > 0.75 and share[0.45] < 0.5, share


def test_log_line_and_summary_report_device_statistics(dataset, tmp_path):
    files = write_stream(tmp_path, real_tokens(dataset, 20000), [20000])
    batches = source(files, config=CurriculumConfig(enabled=True), world=1)
    for k in range(6):
        batches.next_batch(Position(0.0))
    line = batches.log_line(step=3, progress=0.0)
    m = re.fullmatch(r"curriculum step:3 progress:0\.0000 target:0\.0000 kept_score_mean:([\d.]+) "
                     r"kept_score_min:([\d.]+) kept_score_max:([\d.]+) pool_score_mean:([\d.]+) data_wait_ms:[\d.]+", line)
    assert m
    kept_mean, kept_min, kept_max, pool_mean = map(float, m.groups())
    assert kept_min <= kept_mean <= kept_max and kept_mean < pool_mean  # target 0 keeps the easier half
    s = batches.summary(Position(step=3))['data']
    batches.close()
    assert s["sequences_read"] == 6 * 8 and s["sequences_trained"] == 6 * 4 and s["sequences_discarded"] == 6 * 4 and s["kept_score_mean"] == pytest.approx(kept_mean, abs=1e-4)
    plain = source(files, world=1)
    plain.next_batch(Position(0.5))
    assert re.fullmatch(r"data step:1 progress:0\.5000 data_wait_ms:[\d.]+", plain.log_line(1, 0.5))
    plain.close()


def test_a_bad_shard_is_named_before_any_batch(dataset, tmp_path):
    files = write_stream(tmp_path, real_tokens(dataset, 500), [500])
    bad = tmp_path / "z_train_000001.bin"
    bad.write_bytes(b"not a shard at all, just some bytes" * 40)
    with pytest.raises(DataError, match="TRAIN_FILES: .*z_train_000001.bin: magic"):  # the plan's check, one message
        source(files + [bad], world=1)


def test_a_token_beyond_the_vocabulary_met_by_the_read_ahead_thread_is_raised_in_the_loop(dataset, tmp_path):
    files = write_stream(tmp_path, real_tokens(dataset, 5000), [5000])
    batches = source(files, world=1, vocab=500)  # the real text uses ids up to 1023
    with pytest.raises(DataError, match=r"token id \d+ near position .* but VOCAB_SIZE=500"):
        for _ in range(100):
            batches.next_batch(Position(0.0))
    batches.close()


def rows_at(tokens: np.ndarray, positions) -> list[tuple]:
    return [tuple(tokens[p:p + T + 1].tolist()) for p in positions]


def trained_rows(x: torch.Tensor, y: torch.Tensor) -> list[tuple]:
    return [tuple(r) for r in torch.cat([x, y[:, -1:]], dim=1).tolist()]


@pytest.mark.parametrize("rank", [0, 1])
def test_carry_trains_every_row_read_once_or_leaves_it_waiting(dataset, tmp_path, rank):
    tokens = real_tokens(dataset, 40000)
    files = write_stream(tmp_path, tokens, [40000])
    cfg = CurriculumConfig(enabled=True, pool="carry", oversample=2.5)
    batches = source(files, config=cfg, rank=rank, seqs=4)  # pools of 10: 6 waiting, 4 fresh
    trained = []
    for k in range(30):
        trained += trained_rows(*batches.next_batch(Position(k / 30)))
    read = [p for block in batches.read_positions[:30] for p in block.tolist()]
    waiting = [tuple(r) for r in batches.selector.pool.waiting.rows.tolist()]
    s = batches.summary(Position(step=30))['data']
    batches.close()
    assert [len(b) for b in batches.read_positions[:3]] == [10, 4, 4]  # the stream is read at the baseline's rate
    assert len(waiting) == 4 * (2.5 - 1) == s["sequences_waiting"]
    assert Counter(trained) + Counter(waiting) == Counter(rows_at(tokens, read))  # each row exactly once
    assert s["sequences_read"] == len(read) == s["sequences_trained"] + s["sequences_waiting"]
    assert s["sequences_discarded"] == 0 and s["tokens_discarded"] == 0 and s["pool"] == "carry"
    assert 0 < s["wait_mean"] <= s["wait_max"]


def test_carry_at_the_constant_median_keeps_the_middle_of_each_pool(dataset, tmp_path):
    """Replayed outside the loader: each pool is the rows left over plus the fresh rows, scored
    by entropy, and the kept rows are its middle ranks."""
    tokens = real_tokens(dataset, 30000)
    files = write_stream(tmp_path, tokens, [30000])
    cfg = CurriculumConfig(enabled=True, pool="carry", schedule="constant", target=0.5)
    batches = source(files, config=cfg, world=1, seqs=4)
    waiting: list[tuple] = []
    for k in range(12):
        kept = trained_rows(*batches.next_batch(Position(k / 12)))
        pool = waiting + rows_at(tokens, batches.read_positions[k].tolist())
        h = [float(v) for v in unigram_entropy(torch.tensor(pool), 1024)]
        ranked = sorted(range(len(pool)), key=lambda i: (h[i], i))
        assert len(pool) == 8 and kept == [pool[i] for i in sorted(ranked[2:6])]  # ranks 2..5 of 8, in pool order
        waiting = [pool[i] for i in ranked[:2] + ranked[6:]]  # in rank order
    batches.close()


def test_carry_with_no_oversampling_is_the_plain_loader(dataset, tmp_path):
    tokens = real_tokens(dataset, 3000)
    files = write_stream(tmp_path, tokens, [1000, 7, 1993])
    batches = source(files, config=CurriculumConfig(enabled=True, pool="carry", oversample=1.0), rank=1)
    try:
        for x_ref, y_ref in plain_batches(tokens, 1, 2, 4, 40):
            x, y = batches.next_batch(Position(0.7))
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    finally:
        batches.close()


@pytest.mark.parametrize("pool,order", [("fresh", "shuffled"), ("carry", "sequential"), ("carry", "shuffled")])
def test_same_inputs_select_identical_batches_in_every_pool_and_order(dataset, tmp_path, pool, order):
    files = write_stream(tmp_path, real_tokens(dataset, 30000), [30000])
    cfg = CurriculumConfig(enabled=True, oversample=3.0, pool=pool)
    runs = []
    for _ in range(2):
        batches = batch_source(files, seq_len=T, batch_seqs=5, rank=0, world_size=1, vocab_size=1024,
                              device=torch.device("cpu"), config=cfg, order=order, seed=11)
        runs.append([batches.next_batch(Position(k / 23, 0.6)) for k in range(23)])
        batches.close()
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*runs))


def shuffled_source(files, rank, seed, seqs=3, world=2):
    return batch_source(files, seq_len=T, batch_seqs=seqs, rank=rank, world_size=world, vocab_size=1024,
                       device=torch.device("cpu"), config=CurriculumConfig(), order="shuffled", seed=seed)


def test_shuffled_visits_every_slot_once_per_pass_ranks_disjoint(dataset, tmp_path):
    tokens = real_tokens(dataset, 9000)
    files = write_stream(tmp_path, tokens, [3001, 20, 5979])  # slots of 33 tokens: 93, 0, 186
    slot_starts = [j * T for j in range(93)] + [3021 + j * T for j in range(186)]
    per_pass = 279 // 6  # micro-batches of 2 ranks x 3 slots within the first pass
    taken = {}
    for rank in (0, 1):
        batches = shuffled_source(files, rank, seed=5)
        for k in range(per_pass):
            x, y = batches.next_batch(Position(0.0))
            assert trained_rows(x, y) == rows_at(tokens, batches.read_positions[k].tolist())  # the rows are real slots
        taken[rank] = [p for b in batches.read_positions[:per_pass] for p in b.tolist()]
        batches.close()
    assert not set(taken[0]) & set(taken[1])
    both = taken[0] + taken[1]
    assert len(both) == len(set(both)) == per_pass * 6 and set(both) <= set(slot_starts)
    # over whole passes every slot comes once per pass, in another order each pass
    batches = shuffled_source(files, 0, seed=5, seqs=31, world=1)
    for _ in range(36):
        batches.next_batch(Position(0.0))
    s = batches.summary(Position(step=36))['data']
    batches.close()
    visits = [p for b in batches.read_positions for p in b.tolist()]
    passes = [visits[i * 279:(i + 1) * 279] for i in range(4)]
    assert all(sorted(v) == slot_starts for v in passes) and len({tuple(v) for v in passes}) == 4
    assert s["stream_wraps"] == 3 and s["data_order"] == "shuffled"  # 4 passes read: 3 starts over


def test_shuffled_order_follows_the_seed(dataset, tmp_path):
    files = write_stream(tmp_path, real_tokens(dataset, 20000), [20000])
    first = {}
    for seed in (1, 1, 2):
        batches = shuffled_source(files, 0, seed)
        batches.next_batch(Position(0.0))
        first.setdefault(seed, []).append(batches.read_positions[0].tolist())
        batches.close()
    assert first[1][0] == first[1][1] != first[2][0]


def test_domain_mix_of_read_and_kept_rows_is_counted_from_sidecars(dataset, tmp_path):
    """Two documents per shard, one of each of two domains, declared in sidecars; each row
    counts for the domain of its middle token, read by the baseline and kept by the curriculum."""
    tokens = real_tokens(dataset, 12000)
    files = write_stream(tmp_path, tokens, [6000, 6000])
    for f in files:
        write_sidecar(f, np.asarray([0, 2500]), np.asarray([0, 1]), ["docs", "prose"])

    def domain(p):
        return int((p + (T + 1) // 2) % 6000 >= 2500)
    for cfg in (CurriculumConfig(), CurriculumConfig(enabled=True, schedule="constant", target=0.0)):
        batches = source(files, config=cfg, world=1, seqs=4)
        kept = []
        for k in range(20):
            kept += trained_rows(*batches.next_batch(Position(0.5)))
        line = batches.log_line(20, 0.5)
        s = batches.summary(Position(step=20))['data']
        batches.close()
        read = [p for b in batches.read_positions[:20] for p in b.tolist()]
        by_tokens = {r: domain(p) for r, p in zip(rows_at(tokens, read), read)}
        assert s["domain_names"] == ["docs", "prose"]
        assert s["read_domain_counts"] == np.bincount([domain(p) for p in read], minlength=2).tolist()
        assert s["trained_domain_counts"] == np.bincount([by_tokens[r] for r in kept], minlength=2).tolist()
        assert s["mix_windows"][0]["read"] == s["read_domain_counts"]
        expected = "mix:" if not cfg.enabled else "read_mix:docs=[\\d.]+,prose=[\\d.]+ kept_mix:"
        assert re.search(expected + r"docs=[\d.]+,prose=[\d.]+$", line), line


@pytest.mark.parametrize("order", ["sequential", "shuffled"])
def test_a_shard_truncated_under_a_run_ends_it_with_a_message_naming_it(tmp_path, order):
    """Read by pread, not memory-mapped: a shorter file is a clear error, not SIGBUS."""
    import os
    from curriculum import DataError
    shard = tmp_path / "t_train_000000.bin"
    write_shard(shard, np.arange(4 * 4096, dtype=np.uint16) % 1000)
    b = batch_source([shard], seq_len=32, batch_seqs=4, rank=0, world_size=1, vocab_size=1024,
                    device=torch.device("cpu"), config=CurriculumConfig(), order=order, seed=1, read_ahead=1)
    b.next_batch(Position())
    os.truncate(shard, 1024 + 2 * 200)  # a copy interrupted, a disk cleaned up: 200 tokens are left
    with pytest.raises(DataError, match=f"{shard}: the shard changed while the run read it"):
        for _ in range(200):
            b.next_batch(Position())
    b.close()
