"""Document-packed batches, the late records' layout: one `[1, N]` stream per rank and the
document boundaries in `cu_seqlens` for a varlen attention kernel.

`DocumentStream` (readers/documents.py) reads the shards as those records do. `document_pieces`
cuts a span's documents into pieces of at most `max_len` tokens (a first piece starts at 0
whether or not a BOS is there) and `cu_seqlens` lists their starts, then N, padded with N to a
multiple of the bucket size.

With the curriculum on (`PieceSelector`), the unit is a piece: a pool of pieces is read, each is
scored by the curriculum's score, and the pieces whose score ranks are centred on the
schedule's percentile are packed until N tokens are filled (the last one cut to fit). All of it
is host work on the loader's read-ahead thread, so the training loop never waits on the device
for it and `cu_seqlens` has exactly the entries its batch needs, as the record's has.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import CurriculumConfig
from .schedules import target_percentile
from .scores import NEEDS_UNIGRAM_COUNTS, SCORES
from .readers.documents import DocumentStream
from .shards import BOS_ID, DataError, read_shard, shard_token_count

BOS_SAMPLE_TOKENS = 1 << 20  # a shard whose first million tokens hold no BOS is not a shard of documents
RECORD_BUCKETS = 4           # the records' warm-up compiles cu_seqlens of 1-4 buckets (64 to 256 entries)


def check_document_shards(files: list[Path]) -> list[str]:
    """Problems with shards meant for document packing, found before any batch: unreadable or
    empty shards, and shards without a BOS (id 1) in their first BOS_SAMPLE_TOKENS tokens."""
    problems = []
    for f in files:
        try:
            n = shard_token_count(f)
        except ValueError as err:
            problems.append(str(err))
            continue
        if n == 0:
            problems.append(f"{f}: holds no tokens")
        elif not (read_shard(f)[0:min(n, BOS_SAMPLE_TOKENS)] == BOS_ID).any():
            problems.append(f"{f}: no BOS (id {BOS_ID}) in its first {min(n, BOS_SAMPLE_TOKENS):,} tokens: documents "
                            f"cannot be found (each must begin with BOS)")
    return problems


def document_pieces(starts: np.ndarray, n: int, max_len: int) -> np.ndarray:
    """The starts of the pieces of n tokens whose documents begin at `starts` (relative BOS
    positions, ascending): 0 first, then every document cut every `max_len` tokens."""
    starts = np.asarray(starts, dtype=np.int64)
    if not len(starts) or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    lengths = np.diff(np.append(starts, n))
    per_doc = -(-lengths // max_len)
    first = np.repeat(np.cumsum(per_doc) - per_doc, per_doc)  # each piece's index of its document's first piece
    return np.repeat(starts, per_doc) + max_len * (np.arange(per_doc.sum()) - first)


def pad_boundaries(piece_starts: np.ndarray, n: int, bucket: int) -> tuple[np.ndarray, int]:
    """cu_seqlens (int32: the piece starts, then n, padded with n to a multiple of `bucket`)
    and the longest piece."""
    bounds = np.append(piece_starts, n)
    out = np.full(-(-len(bounds) // bucket) * bucket, n, dtype=np.int32)
    out[:len(bounds)] = bounds
    return out, int(np.diff(bounds).max())


def cu_seqlens(starts: np.ndarray, n: int, max_len: int, bucket: int) -> tuple[np.ndarray, int]:
    """The record's boundaries of an n-token batch whose documents begin at `starts`."""
    return pad_boundaries(document_pieces(starts, n, max_len), n, bucket)


@dataclass
class PackedBatch:
    """One micro-batch of one rank, on the host."""
    inputs: np.ndarray       # [N] tokens
    targets: np.ndarray      # [N] each input's next token in its text
    cu_seqlens: np.ndarray   # int32, a multiple of the bucket size
    max_seqlen: int
    documents: int           # BOS positions among the inputs
    pieces: int              # boundaries before the padding, minus one
    stats: dict              # the curriculum's numbers for this batch ({} when off)
    state_after: dict | None = None  # where the stream and the pool stand after it (set by the producer)


def pack_record_batch(stream: DocumentStream, n: int, max_len: int, bucket: int) -> PackedBatch:
    """The record's batch: the next span, cut where its documents begin."""
    span, starts = stream.take(n)
    pieces = document_pieces(starts, n, max_len)  # once: every numpy call here holds the main thread's GIL
    cu, longest = pad_boundaries(pieces, n, bucket)
    return PackedBatch(span[:-1].astype(np.int64), span[1:].astype(np.int64), cu, longest, len(starts), len(pieces), {})


class PieceScorer:
    """The curriculum's score of pieces of any lengths: pieces of one length are scored in one
    call of the row score (curriculum/scores.py), on the host."""

    def __init__(self, score: str, vocab_size: int, files: list[Path]):
        if score not in SCORES:
            raise DataError(f"CURRICULUM_SCORE={score}: document pieces are scored from their tokens "
                            f"({', '.join(SCORES)}); an index scores the rows of its own layout, not pieces")
        self.fn, self.vocab_size = SCORES[score], vocab_size
        if score in NEEDS_UNIGRAM_COUNTS:
            from .selector import corpus_surprisal
            surprisal, _ = corpus_surprisal(tuple(files), vocab_size)
            self.fn = lambda tokens, vocab, table=surprisal: SCORES[score](tokens, vocab, surprisal=table)

    def __call__(self, pieces: list[np.ndarray]) -> np.ndarray:
        lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
        scores = np.empty(len(pieces), dtype=np.float64)
        for length in np.unique(lengths).tolist():
            which = np.flatnonzero(lengths == length)
            rows = torch.from_numpy(np.stack([pieces[i] for i in which.tolist()]).astype(np.int64))
            scores[which] = self.fn(rows, self.vocab_size).double().numpy()
        return scores


@dataclass
class Piece:
    tokens: np.ndarray     # the piece's inputs and, last, the token after it (its last target)
    read_at: int           # the micro-batch it was read in
    score: float = math.nan


class PieceSelector:
    """The curriculum over document pieces for one rank: each batch reads a pool of pieces
    (`fresh`: ceil(oversample x N) tokens' worth; `carry`: the waiting pieces plus N fresh tokens),
    keeps the window centred on the schedule's percentile and packs it."""

    def __init__(self, config: CurriculumConfig, stream: DocumentStream, vocab_size: int, max_len: int, bucket: int):
        self.config, self.stream, self.max_len, self.bucket = config, stream, max_len, bucket
        self.scorer = PieceScorer(config.score, vocab_size, stream.files)
        self.waiting: list[Piece] = []
        self.micro_batch = 0

    def state_dict(self) -> dict:
        return dict(micro_batch=self.micro_batch, waiting=[(p.tokens.copy(), p.read_at, p.score) for p in self.waiting])

    def load_state_dict(self, state: dict) -> None:
        self.micro_batch = state["micro_batch"]
        self.waiting = [Piece(np.asarray(t), int(r), float(sc)) for t, r, sc in state["waiting"]]

    def read_size(self, n: int) -> int:
        """Fresh tokens this batch reads (host numbers only)."""
        if self.config.pool == "carry" and self.micro_batch > 0:
            return n
        return max(n, math.ceil(self.config.oversample * n - 1e-9))

    def _read(self, n: int) -> list[Piece]:
        span, starts = self.stream.take(n)
        cut = document_pieces(starts, n, self.max_len)
        ends = np.append(cut[1:], n)
        return [Piece(span[a:b + 1], self.micro_batch) for a, b in zip(cut.tolist(), ends.tolist())]

    def next(self, n: int, progress: float, warmdown_start: float) -> PackedBatch:
        read = self.read_size(n)
        fresh = self._read(read)
        new = [p for p in self.waiting + fresh if math.isnan(p.score)]
        if new:
            for piece, score in zip(new, self.scorer([p.tokens[:-1] for p in new])):
                piece.score = float(score)
        pool = self.waiting + fresh
        cfg = self.config
        target = target_percentile(cfg.schedule, progress, cfg.peak, cfg.target, warmdown_start)
        kept, cut_at, rest = select_pieces(pool, n, target)
        self.waiting = rest if cfg.pool == "carry" else []
        if cfg.pool == "carry" and cut_at is not None:
            self.waiting.append(cut_at)
        self.micro_batch += 1
        tokens = [p.tokens for p in kept]
        inputs = np.concatenate([t[:-1] for t in tokens]).astype(np.int64)
        targets = np.concatenate([t[1:] for t in tokens]).astype(np.int64)
        lengths = np.fromiter((len(t) - 1 for t in tokens), dtype=np.int64, count=len(tokens))
        cu, longest = pad_boundaries(np.cumsum(lengths) - lengths, n, self.bucket)
        kept_scores = [p.score for p in kept]
        stats = dict(target=target, pool_pieces=len(pool), pool_tokens=sum(len(p.tokens) - 1 for p in pool),
                     pool_score_sum=sum(p.score for p in pool), kept_score_sum=sum(kept_scores),
                     kept_score_min=min(kept_scores), kept_score_max=max(kept_scores), read_tokens=read,
                     wait_sum=sum(self.micro_batch - 1 - p.read_at for p in kept),
                     wait_max=max(self.micro_batch - 1 - p.read_at for p in kept))
        return PackedBatch(inputs, targets, cu, longest, int((inputs == BOS_ID).sum()), len(kept), stats)


def select_pieces(pool: list[Piece], n: int, percentile: float) -> tuple[list[Piece], Piece | None, list[Piece]]:
    """The pieces whose ascending score ranks (ties by pool order) cover a window of n tokens
    centred on `percentile` of the pool's tokens, in pool order, the last of the window in rank
    order cut to fit; (kept, the cut piece's remainder or None, the pieces not kept)."""
    scores = np.fromiter((p.score for p in pool), dtype=np.float64, count=len(pool))
    lengths = np.fromiter((len(p.tokens) - 1 for p in pool), dtype=np.int64, count=len(pool))
    order = np.argsort(scores, kind="stable")
    ends = np.cumsum(lengths[order])
    total = int(ends[-1])
    if total < n:
        raise DataError(f"the pool holds {total:,} tokens, fewer than the batch's {n:,}")
    start = int(round(percentile * (total - n)))
    first = int(np.searchsorted(ends, start, side="right"))  # the first piece ending after the window's start
    last = int(np.searchsorted(ends, ends[first] - lengths[order[first]] + n, side="left"))
    window = order[first:last + 1]
    fill = n - int(lengths[window[:-1]].sum())  # the last piece in rank order keeps this many inputs
    edge = int(window[-1])
    remainder = None
    if fill < lengths[edge]:
        whole = pool[edge]
        remainder = Piece(whole.tokens[fill:], whole.read_at)
        pool = list(pool)
        pool[edge] = Piece(whole.tokens[:fill + 1], whole.read_at, whole.score)
    chosen = np.zeros(len(pool), dtype=bool)
    chosen[window] = True
    kept = [p for p, c in zip(pool, chosen.tolist()) if c]
    rest = [p for p, c in zip(pool, chosen.tolist()) if not c]
    return kept, remainder, rest
