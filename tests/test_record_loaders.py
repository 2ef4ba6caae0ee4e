"""curriculum/record_loaders.py (with documents.py and sequences.py): the late records' two
loaders, bit for bit with the curriculum off against references written here from their
description (SPEC.md's "The loaders of the late records"), and what the curriculum keeps when on."""
from __future__ import annotations

import glob
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from curriculum.plugin import CurriculumDocumentLoader, CurriculumSequenceLoader, LoaderSettingsError
from curriculum.shards import DataError, open_shard, write_shard

BOS = 1


# ------------------------------------------------------------ references, from the description only
class ReferenceDocuments:
    """The records' document packer, as described: token by token, no numpy tricks."""

    def __init__(self, pattern: str, rank: int, world: int, seq_len: int, bucket: int = 64):
        self.files = sorted(glob.glob(pattern))
        self.rank, self.world, self.seq_len, self.bucket = rank, world, seq_len, bucket
        self.index = -1
        self.open_next()

    def open_next(self):
        self.index = (self.index + 1) % len(self.files)
        self.tokens = [int(t) for t in np.asarray(open_shard(self.files[self.index]))]
        self.cursor = self.tokens.index(BOS)

    def next_batch(self, global_tokens: int, accum: int):
        n = global_tokens // (self.world * accum)
        span = n + 1
        while self.cursor + span * self.world > len(self.tokens):
            self.open_next()
        mine = self.tokens[self.cursor + self.rank * span:self.cursor + self.rank * span + span]
        self.cursor += span * self.world
        inputs, targets = mine[:-1], mine[1:]
        doc_starts = [i for i, t in enumerate(inputs) if t == BOS]
        if not doc_starts or doc_starts[0] != 0:
            doc_starts = [0] + doc_starts
        pieces = []
        for a, b in zip(doc_starts, doc_starts[1:] + [n]):
            pieces += list(range(a, b, self.seq_len))
        bounds = pieces + [n]
        longest = max(b - a for a, b in zip(bounds, bounds[1:]))
        while len(bounds) % self.bucket:
            bounds.append(n)
        return inputs, targets, bounds, longest


class ReferenceSequences:
    """The records' calibration loader, as described."""

    def __init__(self, pattern: str, rank: int, world: int, seq_len: int):
        self.files = sorted(glob.glob(pattern))[rank::world]
        self.shards = [np.asarray(open_shard(f)) for f in self.files]
        self.seq_len, self.rng = seq_len, np.random.Generator(np.random.PCG64(rank))
        self.starts = [self.draw(s) for s in self.shards]

    def draw(self, shard):
        n, L = len(shard), self.seq_len
        m = min(L - 1, max(0, n - L - 1))
        phase = int(self.rng.integers(m + 1)) if m > 0 else 0
        return list(phase + self.rng.permutation((n - 1 - phase) // L) * L)

    def next_batch(self, global_tokens: int, accum: int, world: int):
        rows = global_tokens // (world * accum) // self.seq_len
        xs, ys = [], []
        for _ in range(rows):
            remaining = np.array([len(s) for s in self.starts], dtype=np.float64)
            if remaining.sum() == 0:
                self.starts = [self.draw(s) for s in self.shards]
                remaining = np.array([len(s) for s in self.starts], dtype=np.float64)
            i = int(self.rng.choice(len(self.files), p=remaining / remaining.sum()))
            s = self.starts[i].pop()
            window = self.shards[i][s:s + self.seq_len + 1].astype(np.int64)
            xs.append(window[:-1])
            ys.append(window[1:])
        return np.stack(xs), np.stack(ys)


# ------------------------------------------------------------ data
@pytest.fixture(scope="module")
def small_shards(dataset, tmp_path_factory):
    """Four shards of real text of different sizes (one needs a skip, batches cross and wrap)."""
    folder = tmp_path_factory.mktemp("docs")
    tokens = np.asarray(open_shard(sorted(glob.glob(dataset["data_path"] + "/*train_*.bin"))[0]))
    start = int(np.flatnonzero(tokens == BOS)[3]) - 37  # the first shard begins inside a document
    for i, n in enumerate([9000, 4100, 12000, 6500]):
        write_shard(folder / f"fineweb_train_{i:06d}.bin", tokens[start:start + n])
        start += n
    return str(folder / "fineweb_train_*.bin")


def h_for(pattern: str, rank: int = 0, world: int = 1, seq_len: int = 128, **more) -> SimpleNamespace:
    return SimpleNamespace(rank=rank, world_size=world, train_seq_len=seq_len, train_files=pattern, vocab_size=1024,
                           **more)


@pytest.fixture
def curriculum_off(monkeypatch):
    for name in ("CURRICULUM", "CURRICULUM_POOL", "CURRICULUM_SCORE", "DATA_ORDER", "MIX", "GPTQ_RESERVE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAX_WALLCLOCK_SECONDS", "0")
    monkeypatch.setenv("ITERATIONS", "100")
    return monkeypatch


# ------------------------------------------------------------ curriculum off: the records' values
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_documents_off_are_the_records_batches_on_every_rank_through_shard_changes_and_wraps(small_shards, world,
                                                                                             curriculum_off):
    global_tokens, accum = 1536 * world // 2, 2 if world < 8 else 1
    for rank in range(world):
        ours = CurriculumDocumentLoader(h_for(small_shards, rank, world), torch.device("cpu"))
        ref = ReferenceDocuments(small_shards, rank, world, 128)
        try:
            for _ in range(100):  # past the end of the four shards twice
                x, y, cu, longest = ours.next_batch(global_tokens, accum)
                rx, ry, rcu, rlongest = ref.next_batch(global_tokens, accum)
                assert x.dtype == y.dtype == torch.int64 and cu.dtype == torch.int32 and x.shape == (1, len(rx))
                assert x[0].tolist() == rx and y[0].tolist() == ry
                assert cu.tolist() == rcu and longest == rlongest and isinstance(longest, int)
            assert ours.batches.stream.wraps >= 1
        finally:
            ours.close()


def test_documents_off_keep_the_records_stale_size_for_batches_prepared_ahead(small_shards, curriculum_off):
    """The records prepare two batches ahead with the size asked for when they were queued."""
    ours = CurriculumDocumentLoader(h_for(small_shards), torch.device("cpu"))
    ref = ReferenceDocuments(small_shards, 0, 1, 128)
    asked = [512, 512, 1024, 256, 2048, 512, 512]
    prepared = [asked[0], asked[0]] + asked[:-2]
    for a, p in zip(asked, prepared):
        x, _, cu, _ = ours.next_batch(a, 1)
        rx, _, rcu, _ = ref.next_batch(p, 1)
        assert x[0].tolist() == rx and cu.tolist() == rcu
    ours.close()


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sequences_off_are_the_records_calibration_rows(small_shards, world, curriculum_off):
    for rank in range(world):
        if rank >= 4:
            continue
        ours = CurriculumSequenceLoader(h_for(small_shards, rank, world, seq_len=96), torch.device("cpu"))
        ref = ReferenceSequences(small_shards, rank, world, 96)
        for _ in range(30):  # past the re-draw of every shard
            x, y = ours.next_batch(96 * 8 * world, 1)
            rx, ry = ref.next_batch(96 * 8 * world, 1, world)
            assert x.dtype == torch.int64 and x.shape == (8, 96)
            assert np.array_equal(x.numpy(), rx) and np.array_equal(y.numpy(), ry)


# ------------------------------------------------------------ curriculum on
def on_loader(pattern, monkeypatch, world=1, rank=0, **env):
    monkeypatch.setenv("CURRICULUM", "1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return CurriculumDocumentLoader(h_for(pattern, rank, world), torch.device("cpu"))


@pytest.mark.parametrize("pool", ["fresh", "carry"])
def test_documents_on_pack_true_next_tokens_fixed_n_and_follow_the_v(small_shards, curriculum_off, pool):
    loader = on_loader(small_shards, curriculum_off, CURRICULUM_POOL=pool)
    tokens = np.concatenate([np.asarray(open_shard(f)) for f in sorted(glob.glob(small_shards))])
    text = tokens.tobytes()
    scores = []
    for step in range(100):
        loader.set_progress(step / 99)
        x, y, cu, longest = loader.next_batch(1024, 1)
        assert x.shape == y.shape == (1, 1024) and cu[0] == 0 and len(cu) % 64 == 0
        bounds = [b for b in cu.tolist() if b < 1024] + [1024]
        assert bounds == sorted(bounds) and longest == max(np.diff(bounds)) and longest <= 128
        for a, b in zip(bounds, bounds[1:]):  # each piece's inputs and targets are its text, shifted by one
            piece = np.concatenate([x[0, a:b].numpy(), y[0, b - 1:b].numpy()]).astype(np.uint16)
            assert piece[1:].tolist() == y[0, a:b].tolist()
            assert text.find(piece.tobytes()) % 2 == 0  # somewhere in the shards, on a token boundary
        line = loader.log_line(step + 1)
        scores.append(float(re.search(r"kept_score_mean:(\S+)", line).group(1)))
    # the V in what is kept: easier at first, hardest near the peak (0.45), easier again
    early, peak, late = np.mean(scores[:10]), np.mean(scores[40:50]), np.mean(scores[90:])
    assert peak > early and peak > late
    results = loader.results()
    assert results["tokens_trained"] == 100 * 1024
    if pool == "fresh":
        assert results["tokens_read"] == 100 * 2048
    else:
        assert results["tokens_read"] == 2048 + 99 * 1024 and results["pieces_waiting"] > 0
    loader.close()


def test_documents_on_the_ranks_read_disjoint_pieces_and_the_same_seed_chooses_the_same(small_shards, curriculum_off):
    seen = []
    for rank in range(2):
        batches = []
        for _ in range(2):
            loader = on_loader(small_shards, curriculum_off, world=2, rank=rank)
            batches.append([loader.next_batch(2048, 1)[0][0].numpy().tobytes() for _ in range(3)])
            loader.close()
        assert batches[0] == batches[1]
        seen.append(batches[0])
    assert not set(seen[0]) & set(seen[1])


def test_documents_on_random_control_keeps_other_pieces_than_the_v(small_shards, curriculum_off):
    v = on_loader(small_shards, curriculum_off)
    first_v = v.next_batch(1024, 1)[0]
    v.close()
    r = on_loader(small_shards, curriculum_off, CURRICULUM_SCORE="random")
    first_r = r.next_batch(1024, 1)[0]
    assert not torch.equal(first_v, first_r)
    assert '"CURRICULUM_SCORE": "random"' in r.summary()
    r.close()


def test_sequences_on_keep_the_window_of_a_pool_read_in_the_records_order(small_shards, curriculum_off):
    """At progress 0 the V keeps the easiest half of each pool of twice the rows, in pool order."""
    from curriculum.scores import unigram_entropy
    curriculum_off.setenv("CURRICULUM", "1")
    ours = CurriculumSequenceLoader(h_for(small_shards, seq_len=96), torch.device("cpu"))
    ours.set_progress(0.0)
    ref = ReferenceSequences(small_shards, 0, 1, 96)
    for _ in range(6):
        x, y = ours.next_batch(96 * 8, 1)
        px, py = ref.next_batch(96 * 16, 1, 1)
        pool = torch.from_numpy(np.concatenate([px, py[:, -1:]], axis=1))
        easiest = torch.sort(torch.sort(unigram_entropy(pool, 1024), stable=True).indices[:8]).values
        assert torch.equal(x, pool[easiest, :-1]) and torch.equal(y, pool[easiest, 1:])
    assert '"loader": "sequences"' in ours.summary()


# ------------------------------------------------------------ progress
def test_progress_is_time_over_the_cap_less_the_reserve_or_steps_over_iterations(small_shards, curriculum_off):
    curriculum_off.setenv("MAX_WALLCLOCK_SECONDS", "10")
    h = h_for(small_shards, gptq_reserve_seconds=8.0)
    loader = CurriculumDocumentLoader(h, torch.device("cpu"))
    loader.next_batch(512, 1)
    loader.run.started -= 1.0  # one second into a 2-second training budget
    assert 0.5 <= loader.progress < 0.6
    loader.close()
    curriculum_off.setenv("MAX_WALLCLOCK_SECONDS", "0")
    loader = CurriculumDocumentLoader(h_for(small_shards), torch.device("cpu"))
    for _ in range(8):
        loader.next_batch(512, 2)
    assert loader.progress == 4 / 100  # 8 micro-batches of 2 per step, ITERATIONS=100
    loader.set_progress(0.7)
    assert loader.progress == 0.7
    loader.close()


# ------------------------------------------------------------ bad input: one error, before any work
def test_bad_arguments_and_settings_are_named_together(small_shards, curriculum_off, tmp_path):
    curriculum_off.setenv("DATA_ORDER", "shuffled")
    curriculum_off.setenv("CURRICULUM_SCORE", "index:compression_ratio")
    h = SimpleNamespace(rank=0, world_size=1, train_files=small_shards, vocab_size=70000)
    with pytest.raises(LoaderSettingsError) as err:
        CurriculumDocumentLoader(h, torch.device("cpu"), cu_bucket_size=0)
    text = str(err.value)
    for name in ("h.train_seq_len", "vocab_size=70000", "DATA_ORDER='shuffled'", "CURRICULUM_SCORE=index:",
                 "cu_bucket_size=0"):
        assert name in text


def test_shards_without_bos_and_spans_no_shard_holds_are_refused(small_shards, curriculum_off, tmp_path):
    tokens = np.asarray(open_shard(sorted(glob.glob(small_shards))[0]))
    write_shard(tmp_path / "fineweb_train_000000.bin", np.where(tokens == BOS, 5, tokens))
    with pytest.raises(DataError, match="no BOS"):
        CurriculumDocumentLoader(h_for(str(tmp_path / "*.bin")), torch.device("cpu"))
    loader = CurriculumDocumentLoader(h_for(small_shards), torch.device("cpu"))
    with pytest.raises(DataError, match="largest training shard"):
        loader.next_batch(20000, 1)
    loader.close()
