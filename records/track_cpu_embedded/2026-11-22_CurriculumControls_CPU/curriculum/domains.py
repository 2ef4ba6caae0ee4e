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

from .shards import write_atomic

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
    np.savez(buf, starts=starts, domain_ids=domain_ids, domain_names=np.asarray(domain_names), continues=continues)
    write_atomic(sidecar_path(shard), buf.getvalue())


@dataclass(frozen=True)
class DomainIndex:
    """Every document of the training stream (the shards in order): where it starts, in tokens
    from the first shard's first token, and its domain."""
    starts: np.ndarray      # int64, ascending, starts[0] == 0
    domain_ids: np.ndarray  # int64
    names: tuple[str, ...]
    total_tokens: int

    @classmethod
    def from_shards(cls, shards: list[str | Path], lengths: list[int]) -> "DomainIndex | None":
        """The index from the shards' sidecars; None unless every shard has one, all naming the
        same domains."""
        starts, ids, names, offset = [], [], None, 0
        for shard, length in zip(shards, lengths):
            path = sidecar_path(shard)
            if not path.is_file():
                return None
            with np.load(path) as side:
                shard_names = tuple(str(n) for n in side["domain_names"])
                if names is not None and shard_names != names:
                    return None
                names = shard_names
                skip = int(bool(side["continues"]) and offset > 0)  # one document across two shards
                starts.append(side["starts"][skip:] + offset)
                ids.append(side["domain_ids"][skip:].astype(np.int64))
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
