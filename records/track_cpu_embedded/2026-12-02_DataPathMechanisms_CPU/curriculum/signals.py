"""Difficulty signals computed in bulk over a training set's rows, for the index (curriculum/index.py).

Each signal maps rows [n, seq_len + 1] of token ids (numpy) to one float per row, higher meaning
harder. The token signals are `SCORES`' (curriculum/scores.py), run over big host batches; the
text signals read the rows as text, decoded with the run's tokenizer through a byte table:

- `compression_ratio`: zstd's compressed size over the text's size (the inverse of the usual
  ratio, so that higher = harder: text that compresses well is easy);
- `lexical_diversity`: the moving-average type-token ratio (MATTR) over windows of
  `MATTR_WINDOW` words: length-robust, unlike a plain type-token ratio;
- `readability`: the Flesch-Kincaid grade, 0.39 words/sentence + 11.8 syllables/word - 15.59.
  Syllable heuristic: a word's syllables are its runs of vowels (a e i o u y, either case), at
  least one per word. A sentence ends at each run of `.`, `!` or `?`; a row has at least one.

A word is a run of non-whitespace bytes of the decoded text (case and punctuation kept).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .scores import SCORES

MATTR_WINDOW = 50
ZSTD_LEVEL = 3

TOKEN_SIGNALS = ("unigram_entropy", "distinct_ratio", "repeat_bigram_rate", "unigram_rarity", "random")
TEXT_SIGNALS = ("compression_ratio", "lexical_diversity", "readability")
MODEL_SIGNALS = ("proxy_loss",)  # written by tools/proxy_loss.py, which trains the reference model
SIGNALS = TOKEN_SIGNALS + TEXT_SIGNALS + MODEL_SIGNALS


@dataclass(frozen=True)
class ByteTable:
    """Each token id's bytes in the decoded text, flat: token t is flat[offsets[t]:offsets[t + 1]].
    Control and unknown pieces decode to nothing, byte pieces (<0xNN>) to their byte, and the
    word-start mark to a space (which sentencepiece would drop at the very start of a text)."""
    flat: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_sentencepiece(cls, path: str | Path, vocab_size: int) -> "ByteTable":
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=str(path))
        pieces = []
        for t in range(vocab_size):
            if t >= sp.get_piece_size() or sp.is_control(t) or sp.is_unknown(t):
                pieces.append(b"")
            elif sp.is_byte(t):
                pieces.append(bytes([int(sp.id_to_piece(t)[3:5], 16)]))
            else:
                pieces.append(sp.id_to_piece(t).replace("\u2581", " ").encode("utf-8"))
        lengths = np.asarray([len(p) for p in pieces], dtype=np.int64)
        return cls(np.frombuffer(b"".join(pieces), dtype=np.uint8), np.concatenate([[0], np.cumsum(lengths)]))

    def decode(self, rows: np.ndarray) -> list[bytes]:
        """Each row's bytes: one gather for the whole batch, no loop over tokens."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = (self.offsets[1:] - self.offsets[:-1])[rows]
        starts = self.offsets[:-1][rows].ravel()
        flat_lengths = lengths.ravel()
        ends = np.cumsum(flat_lengths)
        index = np.repeat(starts - (ends - flat_lengths), flat_lengths) + np.arange(ends[-1] if len(ends) else 0)
        text = self.flat[index].tobytes()
        bounds = np.concatenate([[0], np.cumsum(lengths.sum(axis=1))]).tolist()
        return [text[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def bulk_unigram_entropy(rows: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """`unigram_entropy` by another route, fast on a CPU: H = log2 T - (1/T) sum over positions of
    log2(count of that position's token), which touches T entries per row instead of vocab_size."""
    n, length = rows.shape
    counts = torch.zeros(n, vocab_size, dtype=torch.int32).scatter_add_(
        1, rows, torch.ones(1, dtype=torch.int32).expand(n, length))
    log_count = torch.log2(torch.arange(length + 1, dtype=torch.float64).clamp_min(1))
    total = log_count.index_select(0, counts.gather(1, rows).view(-1)).view(n, length).sum(dim=1)
    return (np.log2(length) - total / length).float()


def token_signal(name: str, rows: np.ndarray, vocab_size: int, surprisal: torch.Tensor | None = None) -> np.ndarray:
    t = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    if name == "unigram_entropy":
        return bulk_unigram_entropy(t, vocab_size).numpy()
    if name == "repeat_bigram_rate" and vocab_size * vocab_size < 2**31:
        # numpy's sort of int32 rows uses the CPU's vector units (x86-simd-sort): about 10x torch's per-row sort
        r32 = np.asarray(rows, dtype=np.int32)
        ids = np.sort(r32[:, :-1] * vocab_size + r32[:, 1:], axis=1)
        return ((1 + (ids[:, 1:] != ids[:, :-1]).sum(axis=1)) / ids.shape[1]).astype(np.float32)
    kwargs = dict(surprisal=surprisal) if name == "unigram_rarity" else {}
    return SCORES[name](t, vocab_size, **kwargs).numpy()


def compression_ratio(texts: list[bytes], level: int = ZSTD_LEVEL) -> np.ndarray:
    import zstandard
    zc = zstandard.ZstdCompressor(level=level, write_content_size=False, write_checksum=False)
    return np.asarray([len(zc.compress(t)) / max(len(t), 1) for t in texts], dtype=np.float32)


def _word_hashes(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Every word's hash and its row. Within one process equal words hash equally, which is all
    MATTR needs (a 64-bit collision inside one row is not a practical worry)."""
    words = [t.split() for t in texts]
    counts = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    flat = np.fromiter((hash(w) for ws in words for w in ws), dtype=np.int64, count=int(counts.sum()))
    return flat, np.repeat(np.arange(len(texts)), counts)


def lexical_diversity(texts: list[bytes], window: int = MATTR_WINDOW) -> np.ndarray:
    """MATTR: the mean, over every window of `window` consecutive words, of distinct words /
    `window`; the plain type-token ratio for a row shorter than one window (0 for no words).
    Vectorised: a word at i with its previous occurrence at prev counts as new in the windows
    starting in (prev, i], so each word adds the number of such windows."""
    hashes, row = _word_hashes(texts)
    n_rows = len(texts)
    n = np.bincount(row, minlength=n_rows)
    first = np.concatenate([[0], np.cumsum(n)[:-1]])
    pos = np.arange(len(hashes)) - first[row]
    order = np.lexsort((pos, hashes, row))
    same = np.zeros(len(order), dtype=bool)
    same[1:] = (row[order][1:] == row[order][:-1]) & (hashes[order][1:] == hashes[order][:-1])
    prev = np.full(len(order), -1, dtype=np.int64)
    prev[order[1:][same[1:]]] = pos[order[:-1][same[1:]]]
    w = np.minimum(window, n[row])  # a short row: one window of all its words
    last_start = n[row] - w
    lo = np.maximum(np.maximum(pos - w + 1, prev + 1), 0)
    hi = np.minimum(pos, last_start)
    new_in = np.clip(hi - lo + 1, 0, None)
    totals = np.bincount(row, weights=new_in, minlength=n_rows)
    wr = np.minimum(window, n)
    denominator = wr * (n - wr + 1)
    return np.where(n > 0, totals / np.maximum(denominator, 1), 0.0).astype(np.float32)


_VOWEL_RUN = re.compile(rb"[aeiouyAEIOUY]+")
_NO_VOWEL_WORD = re.compile(rb"(?<!\S)[^\saeiouyAEIOUY]+(?!\S)")
_SENTENCE_END = re.compile(rb"[.!?]+")


def readability(texts: list[bytes]) -> np.ndarray:
    """The Flesch-Kincaid grade of each row (0 for a row with no words)."""
    out = np.zeros(len(texts), dtype=np.float32)
    for i, t in enumerate(texts):
        words = len(t.split())
        if not words:
            continue
        syllables = len(_VOWEL_RUN.findall(t)) + len(_NO_VOWEL_WORD.findall(t))
        sentences = max(len(_SENTENCE_END.findall(t)), 1)
        out[i] = 0.39 * words / sentences + 11.8 * syllables / words - 15.59
    return out


TEXT_FUNCTIONS = {"compression_ratio": compression_ratio, "lexical_diversity": lexical_diversity,
                  "readability": readability}


def signal_parameters(name: str, surprisal_counted: int = 0) -> dict:
    """What a signal's value depends on besides the rows: kept in the index beside its scores."""
    params = {"signal": name, "version": 1}
    if name == "compression_ratio":
        params |= dict(zstd_level=ZSTD_LEVEL, measure="compressed bytes / text bytes")
    elif name == "lexical_diversity":
        params |= dict(measure="MATTR", window_words=MATTR_WINDOW)
    elif name == "readability":
        params |= dict(measure="Flesch-Kincaid grade", syllables="vowel runs, at least one per word")
    elif name == "unigram_rarity":
        params |= dict(unigram_counts_from_tokens=surprisal_counted)
    return params


def compute_signals(names: list[str], rows: np.ndarray, vocab_size: int, byte_table: ByteTable | None = None,
                    surprisal: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """{signal: float32 scores [n]} for the rows; the text is decoded once for every text signal."""
    out = {}
    texts = byte_table.decode(rows) if any(n in TEXT_FUNCTIONS for n in names) else None
    for name in names:
        if name in TEXT_FUNCTIONS:
            out[name] = TEXT_FUNCTIONS[name](texts)
        else:
            out[name] = np.asarray(token_signal(name, rows, vocab_size, surprisal), dtype=np.float32)
    return out

