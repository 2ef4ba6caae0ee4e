"""The difficulty index: every training row's start and its scores, built once, beside the shards.
This module is what a run needs of it (the format, its checks and the lookup);
curriculum/index_build.py builds it and is never imported by a run:

    python -m curriculum.index_build [--signals all] [--processes 2]   # settings as the trainer reads them

The rows are the ones a run reads when it visits whole rows (`DATA_ORDER=shuffled` or
`curriculum`, or `DATA_ALIGN=bos`): slot j of a shard holds its tokens [j * L, j * L + L + 1),
or with `bos` the row table's rows (curriculum/readers/aligned.py). The file is small and memory-mapped:
a magic line, a JSON header (the fingerprint, each column's dtype, place and parameters) and
the columns: `start` (int64, each row's first token as a position in the training stream) and
one float32 column per signal (curriculum/signals.py). Its fingerprint names the shards
(`shards_fingerprint`), the tokenizer's sha256, the row length, the alignment and the vocabulary:
a run whose index does not match its data stops before training, naming what differs.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .order import slots_per_shard
from .readers.aligned import row_table
from .shards import DataError, shards_fingerprint, write_atomic

MAGIC = b"CURRICULUM-INDEX 1\n"
ALIGNMENT = 64  # each column starts at a multiple of it
BUILD = "python -m curriculum.index_build"  # the command named in every message that asks for a new index


class IndexMismatch(DataError):
    """An index that is missing, unreadable, or built for other data; the message says what differs."""


def index_path(files: list[Path], seq_len: int, align: str, doc_max: int) -> Path:
    """Where the index of these rows lives by default: beside the first shard."""
    cut = f"_doc{doc_max}" if align == "bos" and doc_max else ""
    return Path(files[0]).parent / f"curriculum_index_seq{seq_len}_{align}{cut}.cidx"


@functools.lru_cache(maxsize=8)
def tokenizer_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fingerprint(files: list[Path], seq_len: int, align: str, doc_max: int, vocab_size: int,
                tokenizer: str | None) -> dict:
    """What an index must have been built for; tokenizer None: not known (it is not compared)."""
    return dict(shards=shards_fingerprint(files), shard_count=len(files), seq_len=seq_len, align=align,
                doc_max_tokens=doc_max if align == "bos" else 0, vocab_size=vocab_size,
                tokenizer_sha256=None if tokenizer is None else tokenizer_sha256(str(tokenizer)))


FINGERPRINT_NAMES = dict(shards="the training shards (TRAIN_FILES)", shard_count="the number of training shards",
                         seq_len="TRAIN_SEQ_LEN", align="DATA_ALIGN", doc_max_tokens="DOC_MAX_TOKENS",
                         vocab_size="VOCAB_SIZE", tokenizer_sha256="the tokenizer (TOKENIZER_PATH)")


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowLayout:
    """The rows of a training set as the index numbers them."""
    seq_len: int
    align: str
    doc_max: int
    shard: np.ndarray      # [R] int32
    start: np.ndarray      # [R] int64, in the training stream
    shard_start: np.ndarray

    @classmethod
    def build(cls, shards: list[np.ndarray], files: list[Path], seq_len: int, align: str, doc_max: int) -> "RowLayout":
        lengths = [len(t) for t in shards]
        shard_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        if align == "bos":
            table = row_table(tuple(files), seq_len, doc_max)
            return cls(seq_len, align, doc_max, table.row_shard, table.row_start, shard_start)
        per_shard = slots_per_shard(lengths, seq_len)
        shard = np.repeat(np.arange(len(shards), dtype=np.int32), per_shard)
        first = np.concatenate([[0], np.cumsum(per_shard)[:-1]])
        within = (np.arange(int(per_shard.sum())) - np.repeat(first, per_shard)) * seq_len
        return cls(seq_len, align, doc_max, shard, shard_start[shard] + within, shard_start)

    @property
    def rows(self) -> int:
        return len(self.start)

    def read(self, shards: list[np.ndarray], files: list[Path], ids: np.ndarray) -> np.ndarray:
        """Rows [len(ids), seq_len + 1] of the given row numbers."""
        if self.align == "bos":
            table = row_table(tuple(files), self.seq_len, self.doc_max)
            return np.stack([table.row(shards, int(r)) for r in ids])
        width = self.seq_len + 1
        return np.stack([shards[i][s:s + width] for i, s in
                         zip(self.shard[ids].tolist(), (self.start[ids] - self.shard_start[self.shard[ids]]).tolist())])


# ---------------------------------------------------------------------------------------------
# the file
# ---------------------------------------------------------------------------------------------

@dataclass
class DifficultyIndex:
    path: Path
    header: dict
    columns: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return int(self.header["rows"])

    @property
    def signals(self) -> list[str]:
        return sorted(k for k in self.columns if k != "start")

    def parameters(self, signal: str) -> dict:
        return self.header["columns"][signal].get("params", {})

    @classmethod
    def open(cls, path: str | Path) -> "DifficultyIndex":
        path = Path(path)
        try:
            with open(path, "rb") as f:
                magic = f.read(len(MAGIC))
                if magic != MAGIC:
                    raise IndexMismatch(f"{path}: not a curriculum index (it does not begin with {MAGIC!r})")
                size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(size))
            file_size = path.stat().st_size
            body = len(MAGIC) + 8 + size  # where the columns may begin
            rows = header["rows"] if isinstance(header, dict) else None
            if type(rows) is not int or rows < 0 or not isinstance(header.get("columns"), dict):
                raise ValueError("rows must be a whole number >= 0 and columns a table")
            columns = {}
            for name, col in header["columns"].items():
                dtype = np.dtype(col["dtype"])
                if type(col["offset"]) is not int or col["offset"] < body:
                    raise ValueError(f"column {name}'s offset {col['offset']!r} is not past the header's {body} bytes")
                if col["offset"] + dtype.itemsize * header["rows"] > file_size:
                    raise IndexMismatch(f"{path}: column {name} runs past the end of the file (truncated?)")
                columns[name] = np.memmap(path, dtype=dtype, mode="r", offset=col["offset"], shape=(header["rows"],))
        except OSError as e:
            raise IndexMismatch(f"{path}: cannot read the index ({e.strerror}); build it with {BUILD} "
                                f"(or make index), the run's settings in the environment") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            if isinstance(e, IndexMismatch):
                raise
            raise IndexMismatch(f"{path}: a damaged index header ({e}); build it again with {BUILD}") from None
        return cls(path, header, columns)

    def differences(self, expected: dict) -> list[str]:
        """What in `expected` (a `fingerprint`) this index was not built for."""
        got = self.header["fingerprint"]
        out = []
        for key, want in expected.items():
            if want is None:
                continue
            have = got.get(key)
            if have != want:
                shown = (lambda v: f"{v[:12]}…" if isinstance(v, str) and len(v) > 16 else repr(v))
                out.append(f"{FINGERPRINT_NAMES.get(key, key)}: built for {shown(have)}, this run has {shown(want)}")
        return out

    def check(self, expected: dict, signal: str | None = None) -> None:
        problems = self.differences(expected)
        if signal is not None and signal not in self.columns:
            problems.append(f"no {signal} scores (it holds {', '.join(self.signals) or 'none'})")
        if problems:
            build = ("python -m tools.proxy_loss" if signal == "proxy_loss" else
                     BUILD + (f" --signals {signal}" if signal else ""))
            raise IndexMismatch(f"the difficulty index {self.path} does not match this run: " + "; ".join(problems)
                                + f". Build it with {build}, the run's settings in the environment")


def write_index(path: Path, fp: dict, start: np.ndarray, scores: dict[str, tuple[np.ndarray, dict]]) -> None:
    """Write atomically: a magic line, the header's length and JSON, then 64-byte-aligned columns."""
    arrays = {"start": (np.ascontiguousarray(start, dtype="<i8"), {})}
    arrays |= {k: (np.ascontiguousarray(v, dtype="<f4"), p) for k, (v, p) in scores.items()}
    # the offsets depend on the header's length, which depends on the offsets: fix a generous size
    columns = {k: dict(dtype=a.dtype.str, offset=0, params=p) for k, (a, p) in arrays.items()}
    header = dict(fingerprint=fp, rows=int(len(start)), columns=columns, written=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    reserve = len(json.dumps(header)) + 32 * len(columns) + 256
    offset = -(-(len(MAGIC) + 8 + reserve) // ALIGNMENT) * ALIGNMENT
    for k, (a, _) in arrays.items():
        columns[k]["offset"] = offset
        offset += -(-a.nbytes // ALIGNMENT) * ALIGNMENT
    text = json.dumps(header).encode()
    if len(text) > reserve:
        raise AssertionError("index header outgrew its reserve")
    parts = [MAGIC, len(text).to_bytes(8, "little"), text]
    pos = len(MAGIC) + 8 + len(text)
    for k, (a, _) in arrays.items():
        parts.append(b"\0" * (columns[k]["offset"] - pos))
        parts.append(a.tobytes())
        pos = columns[k]["offset"] + a.nbytes
    write_atomic(path, b"".join(parts))


def add_scores(path: Path, signal: str, scores: np.ndarray, params: dict) -> None:
    """The index with one more (or a rebuilt) column, rewritten atomically."""
    index = DifficultyIndex.open(path)
    if len(scores) != index.rows:
        raise ValueError(f"{path}: {len(scores)} scores for {index.rows} rows")
    kept = {k: (np.asarray(v), index.parameters(k)) for k, v in index.columns.items() if k not in ("start", signal)}
    write_index(path, index.header["fingerprint"], np.asarray(index.columns["start"]), kept | {signal: (scores, params)})


def open_checked(files: list[Path], seq_len: int, align: str, doc_max: int, vocab_size: int, tokenizer: str | None,
                 signal: str, path: str = "") -> DifficultyIndex:
    """The run's index (`path`, or the default beside the shards), checked against its data and
    holding `signal`; else one IndexMismatch naming everything that differs."""
    index = DifficultyIndex.open(Path(path) if path else index_path(files, seq_len, align, doc_max))
    index.check(fingerprint(files, seq_len, align, doc_max, vocab_size, tokenizer), signal)
    return index


class ScoreLookup:
    """CURRICULUM_SCORE=index:<signal>: each read row's score, looked up by its stream position
    on the read-ahead thread, so the pool is ranked by an offline signal with no device work."""

    def __init__(self, index: DifficultyIndex, signal: str):
        self.index, self.signal = index, signal
        self.start = np.asarray(index.columns["start"])
        self.scores = np.asarray(index.columns[signal])

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        i = np.minimum(np.searchsorted(self.start, positions), len(self.start) - 1)
        missing = self.start[i] != positions
        if missing.any():
            raise DataError(f"CURRICULUM_SCORE=index:{self.signal}: the row at stream position "
                            f"{int(positions[missing][0]):,} is not a row of {self.index.path}")
        return self.scores[i]
