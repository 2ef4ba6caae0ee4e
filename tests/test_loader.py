"""curriculum/loader.py: the batch seam, read-ahead, selection on real text, ranks, determinism."""
from __future__ import annotations

import glob
import re

import numpy as np
import pytest
import sentencepiece as spm
import torch

from curriculum import BatchSource, CurriculumConfig, open_shard, unigram_entropy, write_shard
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
    return BatchSource(files, seq_len=T, batch_seqs=seqs, rank=rank, world_size=world, vocab_size=vocab,
                       device=torch.device("cpu"), config=config)


def test_curriculum_off_gives_exactly_the_plain_loaders_batches(dataset, tmp_path):
    tokens = real_tokens(dataset, 3000)
    files = write_stream(tmp_path, tokens, [1000, 7, 1993])  # crosses shards, wraps around, a tiny shard
    for rank in (0, 1):
        batches = source(files, rank=rank)
        try:
            for x_ref, y_ref in plain_batches(tokens, rank, 2, 4, 40):
                x, y = batches.next_batch(progress=0.3)
                assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
        finally:
            batches.close()


def test_two_ranks_read_disjoint_spans_and_select_only_from_them(dataset, tmp_path):
    tokens = real_tokens(dataset, 20000)
    files = write_stream(tmp_path, tokens, [20000])
    cfg = CurriculumConfig(enabled=True)
    seen = {}
    for rank in (0, 1):
        batches = source(files, config=cfg, rank=rank)
        rows = []
        for k in range(10):
            x, y = batches.next_batch(progress=k / 10)
            rows.append(torch.cat([x, y[:, -1:]], dim=1))
        spans = batches.spans[:10]
        batches.close()
        for (start, end), r in zip(spans, rows):
            window = torch.from_numpy(tokens[start:end].astype(np.int64))
            for row in r:  # every kept row is a (T + 1)-token row of this rank's own span
                offsets = [i for i in range(0, end - start - T, T) if torch.equal(window[i:i + T + 1], row)]
                assert offsets
        seen[rank] = {i for s, e in spans for i in range(s, e)}
    assert not seen[0] & seen[1]


def test_same_inputs_select_identical_tokens(dataset, tmp_path):
    files = write_stream(tmp_path, real_tokens(dataset, 30000), [30000])
    cfg = CurriculumConfig(enabled=True, oversample=3.0)
    runs = []
    for _ in range(2):
        batches = source(files, config=cfg, world=1, seqs=5)
        runs.append([batches.next_batch(progress=k / 23, warmdown_start=0.6) for k in range(23)])
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
            x, y = batches.next_batch(progress)
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
        batches.next_batch(progress=0.0)
    line = batches.log_line(step=3, progress=0.0)
    m = re.fullmatch(r"curriculum step:3 progress:0\.0000 target:0\.0000 kept_score_mean:([\d.]+) "
                     r"kept_score_min:([\d.]+) kept_score_max:([\d.]+) pool_score_mean:([\d.]+) data_wait_ms:[\d.]+", line)
    assert m
    kept_mean, kept_min, kept_max, pool_mean = map(float, m.groups())
    assert kept_min <= kept_mean <= kept_max and kept_mean < pool_mean  # target 0 keeps the easier half
    s = batches.summary(steps=3)
    batches.close()
    assert s["sequences_read"] == 6 * 8 and s["sequences_kept"] == 6 * 4 and s["kept_score_mean"] == pytest.approx(kept_mean, abs=1e-4)
    plain = source(files, world=1)
    plain.next_batch(0.5)
    assert re.fullmatch(r"data step:1 progress:0\.5000 data_wait_ms:[\d.]+", plain.log_line(1, 0.5))
    plain.close()


def test_a_bad_shard_met_by_the_read_ahead_thread_is_raised_in_the_loop(dataset, tmp_path):
    files = write_stream(tmp_path, real_tokens(dataset, 500), [500])
    bad = tmp_path / "z_train_000001.bin"
    bad.write_bytes(b"not a shard at all, just some bytes" * 40)
    batches = source(files + [bad], world=1)
    with pytest.raises(RuntimeError, match="z_train_000001.bin: magic"):
        for _ in range(100):
            batches.next_batch(0.0)
    batches.close()
