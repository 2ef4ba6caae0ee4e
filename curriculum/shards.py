"""The challenge's token shard format: 256 little-endian int32 of header, then uint16 tokens.

header[0] = 20240520 (magic), header[1] = 1 (version), header[2] = number of tokens, and the
file is exactly 1024 + 2 * n bytes. Reading is memory-mapped, so a 100M-token shard costs
nothing until a span of it is sliced.
"""
from __future__ import annotations

import hashlib
import os
import time
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
    """A shard that became shorter, or whose content changed, while a run read it."""


CHANGE_CHECK_SECONDS = 1.0  # how often a reader looks at its shard's time stamp


class ShardTokens:
    """A shard's tokens read with `pread`, not memory-mapped: a shard truncated or replaced
    while a run reads it is a ShardChanged naming it, where a memory map would kill the process
    with SIGBUS; so is one rewritten in place at the same size (its time stamp, looked at once a
    second, moved and its content hash differs from the one taken at the open). Slicing (step 1)
    returns a fresh array; `np.asarray` reads it whole. Each read is one system call on the
    read-ahead thread (about a microsecond per row: `make bench`'s loader)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.n = shard_token_count(self.path)
        self.fd = os.open(self.path, os.O_RDONLY)
        self.opened_as = stat_key(os.fstat(self.fd))
        self.content = _content_hash(self.fd)
        self.next_check = time.monotonic() + CHANGE_CHECK_SECONDS

    def check_unchanged(self) -> None:
        """Raise ShardChanged if the file was rewritten with other content since it was opened."""
        now = stat_key(os.fstat(self.fd))
        if now != self.opened_as:
            if _content_hash(self.fd) != self.content:
                raise ShardChanged(f"{self.path}: the shard's content changed while the run read it (rewritten at "
                                   f"{time.strftime('%H:%M:%S', time.localtime(now[3] / 1e9))}, {now[2]:,} bytes); "
                                   f"what it read before and after would not be one dataset")
            self.opened_as = now  # touched, same content

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("ShardTokens: only contiguous slices")
        start, stop, _ = key.indices(self.n)
        if time.monotonic() >= self.next_check:
            self.check_unchanged()
            self.next_check = time.monotonic() + CHANGE_CHECK_SECONDS
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


WHOLE_HASH_BYTES = 32 << 20   # a shard up to this size is hashed whole (every embedded shard is)
EDGE_BYTES = 1 << 20          # beyond it: its first and last MiB,
SAMPLE_BLOCKS = 64            # and this many blocks spread evenly between them, one at its middle,
SAMPLE_BLOCK_BYTES = 64 << 10  # each this long: 6 MiB of a 200 MB FineWeb shard


def stat_key(st: os.stat_result) -> tuple:
    """What changes when a file is rewritten or replaced (a rewrite of the same size moves its time)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


_HASHED: dict[tuple, str] = {}  # stat_key -> content hash: each version of a file is hashed once a process


def shard_content_hash(path: str | Path) -> str:
    """A sha256 of a shard's content, not its name: the whole file up to WHOLE_HASH_BYTES; of a
    larger one, its size, its first and last MiB and 64 blocks of 64 KiB spread evenly between
    them (the middle one at the file's middle), so that opening 80 FineWeb shards reads 480 MiB,
    not 16 GB (`make bench` measures it). A change that touches none of those blocks is missed
    here; a change made while a run reads the shard is caught by its time stamp (ShardTokens)."""
    with open(path, "rb") as f:
        return _content_hash(f.fileno())


def _content_hash(fd: int) -> str:
    key = stat_key(os.fstat(fd))
    if key in _HASHED:
        return _HASHED[key]
    digest = _hash_fd(fd, key[2])
    # a file written in the last seconds may be written again within its clock's tick, at the
    # same time stamp: its hash is not kept
    if time.time_ns() - key[3] > 2_000_000_000:
        _HASHED[key] = digest
    return digest


def _hash_fd(fd: int, size: int) -> str:
    h = hashlib.sha256(f"{size}\0".encode())
    if size <= WHOLE_HASH_BYTES:
        offset = 0
        while chunk := os.pread(fd, 8 << 20, offset):
            h.update(chunk)
            offset += len(chunk)
        return h.hexdigest()
    inner = size - 2 * EDGE_BYTES - SAMPLE_BLOCK_BYTES
    middle = [EDGE_BYTES + inner * i // (SAMPLE_BLOCKS - 1) for i in range(SAMPLE_BLOCKS)]
    middle[SAMPLE_BLOCKS // 2] = (size - SAMPLE_BLOCK_BYTES) // 2  # the exact middle, where an edit is likeliest
    for offset, length in [(0, EDGE_BYTES), *((m, SAMPLE_BLOCK_BYTES) for m in middle), (size - EDGE_BYTES, EDGE_BYTES)]:
        h.update(os.pread(fd, length, offset))
    return h.hexdigest()


def shards_fingerprint(paths: list[str | Path]) -> str:
    """A sha256 that tells one set of shards from another: each shard's name and content hash
    (`shard_content_hash`). Cheap enough to take at the start of every run, even over the whole
    published training set."""
    h = hashlib.sha256()
    for path in paths:
        path = Path(path)
        h.update(f"{path.name}\0{shard_content_hash(path)}\0".encode())
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


class ContentWatch:
    """The content hashes of the shards a run reads, taken when its data path opens and compared
    when it ends: a shard rewritten or replaced under the run (even at the same size, even where
    no reader looked at it again) ends the run before its artifact names data it did not read."""

    def __init__(self, files: list[str | Path]):
        self.hashes = {Path(f): shard_content_hash(f) for f in files}

    def check(self) -> None:
        changed = []
        for path, digest in self.hashes.items():
            try:
                if shard_content_hash(path) != digest:
                    changed.append(path)
            except OSError:
                changed.append(path)
        if changed:
            raise DataError(f"{changed[0]}{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}: the training "
                            f"shard's content changed during the run (its hash differs from the one taken at the start); "
                            f"the weights were trained on data no summary could name, so none is written")
