"""What every reader is (`Reader`) and says (`DataEvent`), and the one state idiom they share.

A reader turns training shards into rows of seq_len + 1 tokens, each rank its disjoint share.
Its state is a frozen dataclass that holds everything needed to go on exactly where it stands,
seq_len included; `state_dict` gives it as a plain dict (what the read-ahead hands over with each
block and a checkpoint saves) and `load_state_dict` goes on from one. `reshaped` gives the state
a new sequence length starts from.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

from pathlib import Path

import numpy as np


class DataExhausted(Exception):
    """Every dataset of the phase's mixture is used up (on_exhaust = "drop"): training ends here."""


@dataclass(frozen=True)
class DataEvent:
    """A pass begun (`wrap`) or a dataset leaving the mixture (`drop`); dataset None is the
    whole training stream."""
    kind: str
    dataset: str | None = None
    passes: int = 0
    mixture: str = ""   # after a drop: the weights the others go on with

    def __str__(self) -> str:
        if self.kind == "drop":
            return f"drop dataset:{self.dataset} (used up) mixture:{self.mixture}"
        return f"wrap dataset:{self.dataset} pass:{self.passes}"

    def line(self, step: int) -> str:
        if self.dataset is None:
            return (f"data: wrap step:{step} pass:{self.passes} the training stream started over from its first shard; "
                    f"from here on every token has been read before")
        return f"data: {self} step:{step}"


@dataclass(frozen=True)
class Mixture:
    """Named datasets blended by weight (a phase's `mixture`)."""
    names: tuple[str, ...]
    files: tuple[tuple[Path, ...], ...]
    on_exhaust: tuple[str, ...]
    weights: tuple[float, ...]


Taken = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # rows [n, seq_len + 1], stream positions, datasets


class Reader(Protocol):
    """What the read-ahead and the loader need of a reader."""
    total_tokens: int
    domain_offset: int          # a row's domain is that of its token at this offset
    tokens_skipped: int         # of the stream, in this rank's rows' stretches, not in its rows
    last_draw: object           # DATA_ORDER=curriculum: the last take's draw (readers/index_order.py), else None

    def take(self, n: int) -> Taken: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def reshaped(self, state: dict, seq_len: int) -> dict: ...
    def new_events(self) -> list[DataEvent]: ...
    def where(self) -> str: ...
    def describe(self) -> list[str]: ...   # lines for the log when the reader is made

    @property
    def tokens_consumed(self) -> int: ...


class DatasetReader(Reader, Protocol):
    """A reader of one dataset, as a mixture (readers/mixed.py) blends them: it also says whether
    n more rows fit in its current pass (a dataset that would wrap is dropped or wrapped there)."""
    def fits_in_pass(self, n: int) -> bool: ...


class ReaderBase:
    """The parts every reader shares: its events, and its dataclass state as a dict."""
    State: type = None  # the reader's frozen dataclass state
    last_draw = None
    tokens_skipped = 0

    def __init__(self, dataset: str | None):
        self.dataset, self.events = dataset, []

    def new_events(self) -> list[DataEvent]:
        events, self.events = self.events, []
        return events

    def describe(self) -> list[str]:
        return []

    def _state(self):
        """Where the reader stands, as its dataclass."""
        raise NotImplementedError

    def _restore(self, state) -> None:
        """Go on from its dataclass state."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return dataclasses.asdict(self._state())

    def load_state_dict(self, state: dict) -> None:
        self._restore(self.State(**state))

    def reshaped(self, state: dict, seq_len: int) -> dict:
        """Another length: by default the stream goes on where it stands, cut into rows of it."""
        return state | dict(seq_len=seq_len)
