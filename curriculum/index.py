"""The difficulty index: every training row's start and its scores, built once, beside the shards.

    python -m curriculum.index [--signals all] [--processes 2]   # settings as the trainer reads them

The rows are the ones a run reads when it visits whole rows (`DATA_ORDER=shuffled` or
`curriculum`, or `DATA_ALIGN=bos`): slot j of a shard holds its tokens [j * L, j * L + L + 1),
or with `bos` the row table's rows (curriculum/rows.py). The file is small and memory-mapped:
a magic line, a JSON header (the fingerprint, each column's dtype, place and parameters) and
the columns: `start` (int64, each row's first token as a position in the training stream) and
one float32 column per signal (curriculum/signals.py). Its fingerprint names the shards
(`shards_fingerprint`), the tokenizer's sha256, the row length, the alignment and the vocabulary:
a run whose index does not match its data stops before training, naming what differs.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .order import slots_per_shard
from .rows import DataError, row_table
from .shards import read_shard, shards_fingerprint, write_atomic
from .signals import SIGNALS, TEXT_SIGNALS, TOKEN_SIGNALS, ByteTable, compute_signals, signal_parameters

MAGIC = b"CURRICULUM-INDEX 1\n"
ALIGNMENT = 64  # each column starts at a multiple of it
CHUNK_ROWS = 2048


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
            columns = {}
            for name, col in header["columns"].items():
                dtype = np.dtype(col["dtype"])
                if col["offset"] + dtype.itemsize * header["rows"] > file_size:
                    raise IndexMismatch(f"{path}: column {name} runs past the end of the file (truncated?)")
                columns[name] = np.memmap(path, dtype=dtype, mode="r", offset=col["offset"], shape=(header["rows"],))
        except OSError as e:
            raise IndexMismatch(f"{path}: cannot read the index ({e.strerror}); build it with python -m curriculum.index "
                                f"(or make index), the run's settings in the environment") from None
        except (ValueError, KeyError, TypeError) as e:
            if isinstance(e, IndexMismatch):
                raise
            raise IndexMismatch(f"{path}: a damaged index header ({e}); build it again with python -m curriculum.index") from None
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
                     "python -m curriculum.index" + (f" --signals {signal}" if signal else ""))
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


def index_problems(files: list[Path], seq_len: int, align: str, doc_max: int, vocab_size: int, tokenizer: str | None,
                   order: str, curriculum_score: str, order_score: str, path: str = "") -> list[str]:
    """Before any work: the index a run's DATA_ORDER=curriculum or CURRICULUM_SCORE=index:<signal>
    needs, missing or built for other data (one message per index, naming what differs)."""
    wanted = []
    if order == "curriculum":
        wanted.append(("DATA_ORDER=curriculum", order_score))
    if curriculum_score.startswith("index:"):
        if order == "sequential" and align == "none":
            return [f"CURRICULUM_SCORE={curriculum_score}: the index scores whole rows, which DATA_ORDER=sequential "
                    f"does not read (spans of the stream); use DATA_ORDER=shuffled or curriculum, or DATA_ALIGN=bos"]
        wanted.append((f"CURRICULUM_SCORE={curriculum_score}", curriculum_score.split(":", 1)[1]))
    out = []
    for what, signal in wanted:
        try:
            open_checked(files, seq_len, align, doc_max, vocab_size, tokenizer, signal, path)
        except DataError as e:
            out.append(f"{what}: {e}")
    return out


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


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(files, layout, vocab_size, tokenizer, signals, threads):
    import torch
    torch.set_num_threads(threads)
    shards = [read_shard(f) for f in files]
    table = ByteTable.from_sentencepiece(tokenizer, vocab_size) if any(s in TEXT_SIGNALS for s in signals) else None
    surprisal = None
    if "unigram_rarity" in signals:
        from .selector import corpus_surprisal
        surprisal = corpus_surprisal(tuple(files), vocab_size)[0]
    _WORKER.update(files=files, shards=shards, layout=layout, vocab_size=vocab_size, table=table, signals=signals,
                   surprisal=surprisal)


def _score_chunk(bounds: tuple[int, int]) -> tuple[int, dict[str, np.ndarray], dict[str, float]]:
    w = _WORKER
    a, b = bounds
    rows = w["layout"].read(w["shards"], w["files"], np.arange(a, b))
    out, seconds = {}, {}
    for name in w["signals"]:  # one at a time, so each signal's own rate is measured
        t0 = time.perf_counter()
        out |= compute_signals([name], rows, w["vocab_size"], w["table"], w["surprisal"])
        seconds[name] = time.perf_counter() - t0
    return a, out, seconds


class Progress:
    """A progress line with a rate and an ETA: redrawn in place on a terminal, every 10% otherwise."""

    def __init__(self, total: int, unit: str, tokens_per_unit: int, stream=sys.stderr):
        self.total, self.unit, self.stream, self.done, self.tokens_per_unit = total, unit, stream, 0, tokens_per_unit
        self.t0, self.shown = time.perf_counter(), -1
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, n: int) -> None:
        self.done += n
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.done * self.tokens_per_unit / elapsed
        eta = elapsed * (self.total - self.done) / max(self.done, 1)
        tenth = 10 * self.done // max(self.total, 1)
        if self.tty or tenth != self.shown or self.done == self.total:
            self.shown = tenth
            line = (f"index: {self.done / max(self.total, 1):6.1%} {self.done:,}/{self.total:,} {self.unit} "
                    f"{rate / 1e6:7.2f} M tokens/s ETA {eta:5.0f} s")
            self.stream.write(("\r" + line) if self.tty else line + "\n")
            if self.tty and self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()


def build_index(files: list[Path], *, seq_len: int, align: str, doc_max: int, vocab_size: int, tokenizer: str,
                signals: list[str], processes: int = 1, out: Path | None = None, progress: bool = True) -> dict:
    """Score every row with `signals` and write the index (the columns an existing index of the
    same data holds for other signals are kept). Returns each signal's rate in tokens/s (of one
    process) and the path."""
    files = [Path(f) for f in files]
    unknown = [s for s in signals if s not in SIGNALS or s == "proxy_loss"]
    if unknown:
        raise ValueError(f"--signals: {', '.join(unknown)} cannot be built here (allowed: "
                         f"{', '.join(TOKEN_SIGNALS + TEXT_SIGNALS)}; proxy_loss: python -m tools.proxy_loss)")
    shards = [read_shard(f) for f in files]
    layout = RowLayout.build(shards, files, seq_len, align, doc_max)
    path = out or index_path(files, seq_len, align, doc_max)
    fp = fingerprint(files, seq_len, align, doc_max, vocab_size, tokenizer)
    kept: dict[str, tuple[np.ndarray, dict]] = {}
    if path.exists():
        try:
            old = DifficultyIndex.open(path)
            if not old.differences(fp):
                kept = {k: (np.array(v), old.parameters(k)) for k, v in old.columns.items() if k != "start" and k not in signals}
        except IndexMismatch:
            pass  # rebuilt whole
    bounds = [(a, min(a + CHUNK_ROWS, layout.rows)) for a in range(0, layout.rows, CHUNK_ROWS)]
    scores = {s: np.zeros(layout.rows, dtype=np.float32) for s in signals}
    seconds = {s: 0.0 for s in signals}
    bar = Progress(layout.rows, "rows", seq_len + 1) if progress else None
    init = (files, layout, vocab_size, tokenizer, signals, 1 if processes > 1 else max(os.cpu_count() or 1, 1))
    width = seq_len + 1

    def collect(result):
        a, out_, secs = result
        for s in signals:
            scores[s][a:a + len(out_[s])] = out_[s]
            seconds[s] += secs[s]
        if bar:
            bar.update(len(out_[signals[0]]))

    if processes > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(processes, _init_worker, init) as pool:
            for result in pool.imap(_score_chunk, bounds):
                collect(result)
    else:  # in the caller's process: its torch thread count and _WORKER are put back after
        import torch
        threads = torch.get_num_threads()
        try:
            _init_worker(*init)
            for bound in bounds:
                collect(_score_chunk(bound))
        finally:
            torch.set_num_threads(threads)
            _WORKER.clear()
    surprisal_counted = 0
    if "unigram_rarity" in signals:
        from .selector import corpus_surprisal
        surprisal_counted = corpus_surprisal(tuple(files), vocab_size)[1]
    columns = kept | {s: (scores[s], signal_parameters(s, surprisal_counted)) for s in signals}
    write_index(path, fp, layout.start, columns)
    rates = {s: layout.rows * width / max(seconds[s], 1e-9) for s in signals}
    return dict(path=path, rows=layout.rows, tokens=layout.rows * width, rates=rates)


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------

def env_whole(env, name: str, default: int, problems: list[str]) -> int:
    """A whole-number variable's value, or its default with the problem noted (never a traceback)."""
    raw = (env.get(name) or "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        problems.append(f"{name}={raw!r}: must be a whole number")
        return default


def _settings(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The arguments, their defaults from the trainer's variables, and those variables' problems."""
    env, problems = os.environ, []
    p = argparse.ArgumentParser(prog="python -m curriculum.index", description="Build the difficulty index of a "
                                "training set. Defaults come from the trainer's settings in the environment.")
    data_path = env.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    p.add_argument("--train-files", default=env.get("TRAIN_FILES") or os.path.join(data_path, "*train_*.bin"))
    p.add_argument("--tokenizer", default=env.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model"))
    p.add_argument("--vocab-size", type=int, default=env_whole(env, "VOCAB_SIZE", 1024, problems))
    p.add_argument("--seq-len", type=int, default=env_whole(env, "TRAIN_SEQ_LEN", 2048, problems))
    p.add_argument("--align", default=env.get("DATA_ALIGN") or "none", choices=("none", "bos"))
    p.add_argument("--doc-max-tokens", type=int, default=env_whole(env, "DOC_MAX_TOKENS", 0, problems))
    p.add_argument("--signals", default="all", help="comma-separated, or all (every signal but proxy_loss)")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default="", help="the index file (default: beside the first shard)")
    return p.parse_args(argv), problems


def main(argv: list[str] | None = None) -> int:
    import glob
    a, problems = _settings(argv)
    signals = list(TOKEN_SIGNALS + TEXT_SIGNALS) if a.signals == "all" else [s.strip() for s in a.signals.split(",") if s.strip()]
    files = sorted(Path(f) for f in glob.glob(a.train_files))
    if not files:
        problems.append(f"--train-files={a.train_files!r}: matches no file")
    if a.seq_len < 1:
        problems.append(f"--seq-len={a.seq_len}: must be >= 1")
    if a.processes < 1:
        problems.append(f"--processes={a.processes}: must be >= 1")
    if a.doc_max_tokens < 0:
        problems.append(f"--doc-max-tokens={a.doc_max_tokens}: must be >= 0")
    if not signals:
        problems.append("--signals: none given")
    bad = [s for s in signals if s not in TOKEN_SIGNALS + TEXT_SIGNALS]
    if bad:
        problems.append(f"--signals: {', '.join(bad)} not among {', '.join(TOKEN_SIGNALS + TEXT_SIGNALS)} "
                        f"(proxy_loss: python -m tools.proxy_loss)")
    if any(s in TEXT_SIGNALS for s in signals) and not Path(a.tokenizer).is_file():
        problems.append(f"--tokenizer={a.tokenizer!r}: no such file (the text signals decode with it)")
    if problems:
        print("curriculum.index: " + "; ".join(problems), file=sys.stderr)
        return 2
    try:
        result = build_index(files, seq_len=a.seq_len, align=a.align, doc_max=a.doc_max_tokens, vocab_size=a.vocab_size,
                             tokenizer=a.tokenizer, signals=signals, processes=a.processes,
                             out=Path(a.out) if a.out else None)
    except DataError as e:
        print(f"curriculum.index: {e}", file=sys.stderr)
        return 2
    print(f"index: {result['path']}: {result['rows']:,} rows of {a.seq_len + 1} tokens ({result['tokens']:,} tokens)")
    for s, rate in result["rates"].items():
        print(f"index: {s:<20} {rate / 1e6:8.2f} M tokens/s per process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
