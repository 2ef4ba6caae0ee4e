"""The challenge's token shard format: 256 little-endian int32 of header, then uint16 tokens.

header[0] = 20240520 (magic), header[1] = 1 (version), header[2] = number of tokens, and the
file is exactly 1024 + 2 * n bytes. Reading is memory-mapped, so a 100M-token shard costs
nothing until a span of it is sliced.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
BOS_ID = 1  # every document of the challenge's shards begins with it


class ShardFormatError(ValueError):
    """A file that is not a valid shard; the message names the file and what is wrong."""


class DataError(ValueError):
    """Training data that cannot be trained on, found while reading it; the message says where.
    Here, with no torch import, so that the data build (numpy and sentencepiece only) can raise it."""


def shard_token_count(path: str | Path) -> int:
    """Validate a shard's header and size without reading its tokens; return its length."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise ShardFormatError(f"{path}: cannot read shard ({e.strerror})") from None
    if len(raw) < HEADER_BYTES:
        raise ShardFormatError(f"{path}: {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    header = np.frombuffer(raw, dtype="<i4")
    if int(header[0]) != SHARD_MAGIC:
        raise ShardFormatError(f"{path}: magic {int(header[0])} is not {SHARD_MAGIC}")
    if int(header[1]) != SHARD_VERSION:
        raise ShardFormatError(f"{path}: version {int(header[1])} is not {SHARD_VERSION}")
    n = int(header[2])
    if n < 0 or size != HEADER_BYTES + 2 * n:
        raise ShardFormatError(f"{path}: header says {n} tokens, so {HEADER_BYTES + 2 * n} bytes, "
                               f"but the file has {size} bytes")
    return n


def open_shard(path: str | Path) -> np.memmap:
    """The shard's tokens as a read-only memory map (validated first)."""
    n = shard_token_count(path)
    if n == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,))


class ShardChanged(ShardFormatError):
    """A shard that became shorter while a run read it."""


class ShardTokens:
    """A shard's tokens read with `pread`, not memory-mapped: a shard truncated or replaced
    while a run reads it is a ShardChanged naming it, where a memory map would kill the process
    with SIGBUS. Slicing (step 1) returns a fresh array; `np.asarray` reads it whole. Each read
    is one system call on the read-ahead thread (about a microsecond per row: `make bench`'s loader)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.n = shard_token_count(self.path)
        self.fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("ShardTokens: only contiguous slices")
        start, stop, _ = key.indices(self.n)
        want = max(stop - start, 0) * 2
        data = os.pread(self.fd, want, HEADER_BYTES + 2 * start) if want else b""
        if len(data) != want:
            raise ShardChanged(f"{self.path}: the shard changed while the run read it: {HEADER_BYTES + 2 * start + len(data)}"
                               f" bytes where it had {HEADER_BYTES + 2 * self.n} at the start")
        return np.frombuffer(data, dtype=TOKEN_DTYPE)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        tokens = self[0:self.n]
        return tokens if dtype is None else tokens.astype(dtype)

    def __del__(self):
        try:
            os.close(self.fd)
        except (AttributeError, OSError):
            pass


def read_shard(path: str | Path) -> ShardTokens:
    """The shard's tokens for a run's readers: validated, then read by pread (ShardTokens)."""
    return ShardTokens(path)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write under a temporary name beside `path`, then rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a read-only folder: named by the file meant, not the temporary
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    except BaseException:  # an interrupt: no hidden half-written temporary is left behind
        tmp.unlink(missing_ok=True)
        raise


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write tokens as a shard, atomically."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() > 0xFFFF):
        raise ValueError(f"{path}: token ids must fit in uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, tokens.size)
    write_atomic(path, header.tobytes() + tokens.astype(TOKEN_DTYPE, copy=False).tobytes())


SAMPLE_BYTES = 1 << 20


def shards_fingerprint(paths: list[str | Path]) -> str:
    """A sha256 that tells one set of shards from another without reading all of it: each
    shard's name and size, its header and its first and last MiB. Cheap enough to take at the
    start of every run, even over the whole published training set."""
    h = hashlib.sha256()
    for path in paths:
        path = Path(path)
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES + SAMPLE_BYTES)
            f.seek(max(size - SAMPLE_BYTES, 0))
            tail = f.read()
        h.update(f"{path.name}\0{size}\0".encode())
        h.update(hashlib.sha256(head).digest() + hashlib.sha256(tail).digest())
    return h.hexdigest()


def unigram_counts(paths: list[str | Path], vocab_size: int, max_tokens: int = 1 << 26,
                   chunk: int = 1 << 20) -> tuple[np.ndarray, int]:
    """Each token id's count over the shards, and how many tokens were counted. Up to
    `max_tokens` every token counts; beyond, equally spaced `chunk`-token pieces of every shard
    do (a 2^26-token sample pins 1,024 frequencies far below their differences, and takes a
    second, where the whole published set would take minutes)."""
    shards = [open_shard(p) for p in paths]
    total = sum(len(s) for s in shards)
    counts = np.zeros(vocab_size, dtype=np.int64)
    counted = 0
    for tokens in shards:
        if total <= max_tokens:
            pieces = [tokens]
        else:
            n = max(1, round(len(tokens) / total * max_tokens / chunk))
            starts = np.linspace(0, max(len(tokens) - chunk, 0), n).astype(np.int64)
            pieces = [tokens[s:s + chunk] for s in starts]
        for piece in pieces:
            counts += np.bincount(piece, minlength=vocab_size)[:vocab_size]
            counted += len(piece)
    return counts, counted
