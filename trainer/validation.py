"""The validation split as the trainer scores it: its tokens, the bytes behind val_bpb (the
tokenizer's counts, or the late records' per-token sidecars) and each target's domain."""
from __future__ import annotations

import glob
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from curriculum import DomainIndex, open_shard, shard_token_count
from trainer.settings import SettingsError, validation_shards


def load_validation_tokens(pattern: str, seq_len: int, max_tokens: int) -> Tensor:
    """The validation split, truncated to whole seq_len windows plus one target token (files
    named `_bytes_` are byte sidecars, not tokens: skipped, as the late records skip them)."""
    tokens = np.concatenate([np.asarray(open_shard(f)) for f in validation_shards(pattern)])
    if max_tokens:
        tokens = tokens[:max_tokens]
    usable = ((len(tokens) - 1) // seq_len) * seq_len
    if usable <= 0:
        raise SettingsError(f"the validation split ({len(tokens)} tokens) is shorter than one window of {seq_len}")
    return torch.from_numpy(tokens[:usable + 1].astype(np.int32))  # int32: half the memory of int64


def load_validation_bytes(pattern: str, n_tokens: int) -> Tensor:
    """VAL_BYTES_FILES: the bytes each validation token stands for (the late records' sidecars,
    uint16 per token in the shard format), the first n_tokens of them; checked against the
    split's length before any work (trainer/settings.py)."""
    counts = np.concatenate([np.asarray(open_shard(f)) for f in sorted(glob.glob(pattern))])
    return torch.from_numpy(counts[:n_tokens].astype(np.int32))


def load_validation_domains(pattern: str, n_targets: int) -> tuple[Tensor, tuple[str, ...]]:
    """(the domain id of each of the first n_targets target tokens, the domain names) from the
    sidecars beside the validation shards: a target counts for the document it belongs to."""
    files = validation_shards(pattern)
    notes: list[str] = []
    domains = DomainIndex.from_shards(files, [shard_token_count(f) for f in files], notes)
    if domains is None:
        raise SettingsError(f"VAL_DOMAINS=1: the domains of the validation shards ({pattern}) are not known: "
                            f"{notes[0] if notes else 'they have no domains sidecars'}; make data writes them "
                            f"for the embedded corpus")
    targets = np.arange(1, n_targets + 1)  # target j is token j of the split
    return torch.from_numpy(domains.domains_at(targets).astype(np.int64)), domains.names


@dataclass
class ByteTables:
    """Per token id: UTF-8 bytes of the piece without its leading '▁', whether it has that
    '▁', and whether it is a boundary (control, unknown, unused) that resets the space."""
    base_bytes: Tensor
    has_leading_space: Tensor
    is_boundary: Tensor

    @classmethod
    def from_sentencepiece(cls, path: str, vocab_size: int) -> "ByteTables":
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=path)
        ids = list(range(min(sp.vocab_size(), vocab_size)))
        pieces = sp.id_to_piece(ids)
        special = np.array([sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) for i in ids], dtype=bool)
        byte = np.array([sp.is_byte(i) for i in ids], dtype=bool)
        spaced = np.array([p.startswith("\u2581") for p in pieces], dtype=bool) & ~special & ~byte
        utf8 = np.array([len(p.encode("utf-8")) for p in pieces], dtype=np.int64) - 3 * spaced  # '▁' is 3 bytes
        base = np.where(special, 0, np.where(byte, 1, utf8))
        pad = vocab_size - len(ids)  # ids past the tokenizer's: unused, boundaries worth nothing
        return cls(torch.from_numpy(np.concatenate([base, np.zeros(pad, dtype=np.int64)])),
                   torch.from_numpy(np.concatenate([spaced, np.zeros(pad, dtype=bool)])),
                   torch.from_numpy(np.concatenate([special, np.ones(pad, dtype=bool)])))

    def to(self, device) -> "ByteTables":
        return ByteTables(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))

    def count(self, prev: Tensor, tgt: Tensor) -> Tensor:
        """Bytes the target tokens stand for, given the token before each."""
        extra = self.has_leading_space[tgt] & ~self.is_boundary[prev]
        return self.base_bytes[tgt] + extra.long()
