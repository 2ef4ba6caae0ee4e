"""Building the difficulty index (curriculum/index.py holds its format): every row scored by the
signals of curriculum/signals.py, in worker processes, with a progress line.

    python -m curriculum.index_build [--signals all] [--processes 2] [--out FILE]

The defaults come from the trainer's settings in the environment. A run never imports this
module: what it ships counts only the format and the lookup.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from .index import DifficultyIndex, IndexMismatch, RowLayout, fingerprint, index_path, write_index
from .shards import DataError, read_shard
from .signals import SIGNALS, TEXT_SIGNALS, TOKEN_SIGNALS, ByteTable, compute_signals, signal_parameters

CHUNK_ROWS = 2048


_WORKER: dict = {}


def _init_pool_worker(*init):
    """A pool's worker ignores Ctrl-C: the parent handles it, once, not a traceback per worker."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(*init)


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
    for f, tokens in zip(files, shards):  # a pass over each shard: seconds against the build's minutes
        top = int(np.asarray(tokens).max()) if len(tokens) else 0
        if top >= vocab_size:
            raise DataError(f"{f}: holds token id {top}, not below --vocab-size={vocab_size} (VOCAB_SIZE): the shards "
                            f"were written with a larger vocabulary")
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
        with multiprocessing.get_context("fork").Pool(processes, _init_pool_worker, init) as pool:
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
    p = argparse.ArgumentParser(prog="python -m curriculum.index_build", description="Build the difficulty index of a "
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


def out_problems(out: str) -> list[str]:
    """--out's problems, found before the build's minutes: a folder that is missing or not
    writable, or a folder where the file belongs."""
    if not out:
        return []
    path = Path(out)
    if path.is_dir():
        return [f"--out={out!r}: is a folder; name the index file (e.g. {path / 'train.cidx'})"]
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return [f"--out={out!r}: the folder {folder} does not exist"]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [f"--out={out!r}: the folder {folder} is not writable"]
    return []


def main(argv: list[str] | None = None) -> int:
    import glob
    import signal
    # Ctrl-C and `kill -INT` stop the build even where the launching shell ignored SIGINT (a job
    # started with `&` inherits it ignored, and Python leaves it so)
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
    if not 2 <= a.vocab_size <= 65536:
        problems.append(f"--vocab-size={a.vocab_size} (VOCAB_SIZE): must be in [2, 65536] (shards hold uint16 tokens)")
    problems += out_problems(a.out)
    if not signals:
        problems.append("--signals: none given")
    bad = [s for s in signals if s not in TOKEN_SIGNALS + TEXT_SIGNALS]
    if bad:
        problems.append(f"--signals: {', '.join(bad)} not among {', '.join(TOKEN_SIGNALS + TEXT_SIGNALS)} "
                        f"(proxy_loss: python -m tools.proxy_loss)")
    if any(s in TEXT_SIGNALS for s in signals) and not Path(a.tokenizer).is_file():
        problems.append(f"--tokenizer={a.tokenizer!r}: no such file (the text signals decode with it)")
    if problems:
        print("curriculum.index_build: " + "; ".join(problems), file=sys.stderr)
        return 2
    try:
        result = build_index(files, seq_len=a.seq_len, align=a.align, doc_max=a.doc_max_tokens, vocab_size=a.vocab_size,
                             tokenizer=a.tokenizer, signals=signals, processes=a.processes,
                             out=Path(a.out) if a.out else None)
    except DataError as e:
        print(f"curriculum.index_build: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the index is written whole at the end, under a temporary name: nothing is left
        print("curriculum.index_build: interrupted; no index was written", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk while writing it: write_atomic names the file and removed its temporary
        print(f"curriculum.index_build: cannot write {e.filename}: {e.strerror}; no index was written", file=sys.stderr)
        return 1
    print(f"index: {result['path']}: {result['rows']:,} rows of {a.seq_len + 1} tokens ({result['tokens']:,} tokens)")
    for s, rate in result["rates"].items():
        print(f"index: {s:<20} {rate / 1e6:8.2f} M tokens/s per process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
