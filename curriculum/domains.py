"""Which domain each training token comes from: a sidecar file beside a shard, and lookups.

`make data` writes `<shard>.domains.npz` beside every training shard of the embedded corpus:
`starts` (int64, ascending: where each document that touches the shard begins, relative to
the shard; the first is 0), `domain_ids` (uint8, one per document), `domain_names`, and
`continues` (whether the first document began in the shard before). FineWeb's shards have none, and then nothing is reported.
The loader maps each row it reads to the domain of the row's middle token (off the critical
path, on its read-ahead thread), so a log can show what a curriculum did to the mixture.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .shards import DataError, shard_content_hash, write_atomic

SIDECAR_SUFFIX = ".domains.npz"


def sidecar_path(shard: str | Path) -> Path:
    shard = Path(shard)
    return shard.with_name(shard.stem + SIDECAR_SUFFIX)


def write_sidecar(shard: str | Path, starts: np.ndarray, domain_ids: np.ndarray, domain_names: list[str],
                  continues: bool = False) -> None:
    starts, domain_ids = np.asarray(starts, dtype=np.int64), np.asarray(domain_ids, dtype=np.uint8)
    if len(starts) != len(domain_ids) or not len(starts) or starts[0] != 0 or np.any(np.diff(starts) <= 0):
        raise ValueError(f"{shard}: document starts must begin at 0 and ascend, one domain id each")
    if domain_ids.max() >= len(domain_names):
        raise ValueError(f"{shard}: domain id {domain_ids.max()} has no name among {domain_names}")
    buf = io.BytesIO()
    np.savez(buf, starts=starts, domain_ids=domain_ids, domain_names=np.asarray(domain_names), continues=continues,
             shard_content=np.asarray(shard_content_hash(shard)))  # ties it to this content of its shard
    write_atomic(sidecar_path(shard), buf.getvalue())


class SidecarError(DataError):
    """A sidecar that cannot be trusted; the message names the file and what is wrong."""


SIDECAR_KEYS = ("starts", "domain_ids", "domain_names", "continues")


def read_sidecar(shard: str | Path, shard_tokens: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], bool]:
    """(starts, domain ids, names, continues) of a shard's sidecar, every field checked: keys,
    shapes, dtypes, ranges, order, names, and its shard's content hash against the shard's (a
    sidecar without one, from an older build or written by hand, is refused: nothing ties it to
    the shard it lies beside)."""
    path = sidecar_path(shard)
    try:
        with np.load(path, allow_pickle=False) as side:
            missing = [k for k in SIDECAR_KEYS if k not in side.files]
            if missing:
                raise SidecarError(f"{path}: not a domains sidecar (missing {', '.join(missing)})")
            starts, ids, names = side["starts"], side["domain_ids"], side["domain_names"]
            continues = side["continues"]
            fingerprint = str(side["shard_content"]) if "shard_content" in side.files else None
    except SidecarError:
        raise
    except Exception as e:  # a zip that is not one, truncated, pickled objects: numpy's many errors
        raise SidecarError(f"{path}: not a readable domains sidecar ({type(e).__name__}: {e})") from None
    # a link (the challenge's file names for the embedded corpus) is checked as the shard it names
    if fingerprint is None:
        raise SidecarError(f"{path}: holds no hash of its shard's content (an older data build's, or written by hand), "
                           f"so nothing ties it to {Path(shard).name}; rebuild the data (make data) or write it with "
                           f"curriculum.domains.write_sidecar")
    if fingerprint != shard_content_hash(shard):
        raise SidecarError(f"{path}: written for another version of {Path(shard).name} (its content hash differs); "
                           f"rebuild the data (make data)")
    if starts.ndim != 1 or ids.shape != starts.shape or not len(starts):
        raise SidecarError(f"{path}: starts and domain_ids must be 1-D of one length, got {starts.shape} and {ids.shape}")
    if starts.dtype.kind not in "iu" or ids.dtype.kind not in "iu" or names.dtype.kind != "U" or names.ndim != 1:
        raise SidecarError(f"{path}: starts and domain_ids must be integers and domain_names text, got "
                           f"{starts.dtype}, {ids.dtype}, {names.dtype}")
    if starts[0] != 0 or np.any(np.diff(starts) <= 0):
        bad = 0 if starts[0] != 0 else int(np.flatnonzero(np.diff(starts) <= 0)[0]) + 1
        raise SidecarError(f"{path}: document starts must begin at 0 and ascend; start {bad} is {int(starts[bad])}"
                           + (f" after {int(starts[bad - 1])}" if bad else ""))
    if int(starts[-1]) >= max(shard_tokens, 1):
        raise SidecarError(f"{path}: a document starts at {int(starts[-1])}, past the shard's {shard_tokens} tokens")
    if not len(names) or len(set(names.tolist())) != len(names):
        raise SidecarError(f"{path}: domain_names must be distinct and not empty, got {names.tolist()}")
    if ids.min() < 0 or ids.max() >= len(names):
        raise SidecarError(f"{path}: domain id {int(ids.max() if ids.max() >= len(names) else ids.min())} has no name "
                           f"among {names.tolist()}")
    return starts.astype(np.int64), ids.astype(np.int64), tuple(str(n) for n in names), bool(continues)


@dataclass(frozen=True)
class DomainIndex:
    """Every document of the training stream (the shards in order): where it starts, in tokens
    from the first shard's first token, and its domain."""
    starts: np.ndarray      # int64, ascending, starts[0] == 0
    domain_ids: np.ndarray  # int64
    names: tuple[str, ...]
    total_tokens: int

    @classmethod
    def from_shards(cls, shards: list[str | Path], lengths: list[int], notes: list[str] | None = None
                    ) -> "DomainIndex | None":
        """The index from the shards' sidecars; None unless every shard has one, all naming the
        same domains (a note says why, where some have one). A damaged sidecar is a SidecarError."""
        present = [sidecar_path(s).is_file() for s in shards]
        if not all(present):
            if any(present) and notes is not None:
                notes.append(f"data: no domain mix is reported: {present.count(False)} of {len(shards)} shards have no "
                             f"sidecar (e.g. {Path(shards[present.index(False)]).name})")
            return None
        starts, ids, names, offset, first = [], [], None, 0, None
        for shard, length in zip(shards, lengths):
            side_starts, side_ids, shard_names, continues = read_sidecar(shard, length)
            if names is not None and shard_names != names:
                if notes is not None:
                    notes.append(f"data: no domain mix is reported: {sidecar_path(first).name} names the domains "
                                 f"{', '.join(names)}, {sidecar_path(shard).name} names {', '.join(shard_names)}")
                return None
            names, first = shard_names, first or shard
            skip = int(continues and offset > 0)  # one document across two shards
            starts.append(side_starts[skip:] + offset)
            ids.append(side_ids[skip:])
            offset += length
        if names is None:
            return None
        return cls(np.concatenate(starts), np.concatenate(ids), names, offset)

    def domains_at(self, positions: np.ndarray) -> np.ndarray:
        """The domain id of the token at each stream position (taken modulo the stream's length)."""
        where = np.searchsorted(self.starts, np.asarray(positions) % self.total_tokens, side="right") - 1
        return self.domain_ids[where]

    def documents_spanned(self, row_starts: np.ndarray, row_length: int) -> int:
        """How many distinct documents the rows [start, start + row_length) touch together."""
        first = np.searchsorted(self.starts, np.asarray(row_starts) % self.total_tokens, side="right") - 1
        last = np.searchsorted(self.starts, (np.asarray(row_starts) + row_length - 1) % self.total_tokens,
                               side="right") - 1
        docs = set()
        for a, b in zip(first.tolist(), last.tolist()):
            docs.update(range(a, b + 1) if a <= b else [*range(a, len(self.starts)), *range(0, b + 1)])
        return len(docs)


def mix_text(names: tuple[str, ...], counts: np.ndarray) -> str:
    """`docs=0.412,prose=0.301,code=0.287`: each domain's share of the counted rows."""
    total = max(int(np.sum(counts)), 1)
    return ",".join(f"{name}={int(c) / total:.3f}" for name, c in zip(names, counts))
