"""`MIX` and a phases file's mixture: several datasets blended row by row, each read by its own reader."""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from ..blend import blend, integer_weights, natural_picks, renormalised
from .base import DataEvent, DataExhausted, Mixture, ReaderBase, Taken


@dataclass(frozen=True)
class MixedState:
    readers: tuple                     # each dataset's reader's state_dict
    weights: tuple[float, ...]
    credits: tuple[int, ...] = ()      # the blend's, () at a fresh start
    dropped: tuple[int, ...] = ()      # datasets used up (on_exhaust = "drop")
    draws: int = 0                     # micro-batches drawn: MIX=natural's seed and MIX=adaptive's schedule


class MixedRows(ReaderBase):
    """Several datasets blended row by row (curriculum/blend.py): each dataset is its own stream
    of which each rank reads its disjoint part, and every rank computes the same sequence of
    datasets. A dataset that would start over either wraps (an event, a pass count) or, with
    on_exhaust = "drop", leaves the mixture and the others' weights are re-normalised."""
    State = MixedState
    domain_offset = 0  # each row's domain is its dataset, given with the rows

    def __init__(self, readers: list, mixture: Mixture, world_size: int, seed: int = 0, natural: bool = False,
                 schedule=None):
        super().__init__(None)
        self.mixture, self.world_size, self.seed = mixture, world_size, seed
        self.natural, self.schedule = natural, schedule  # MIX=natural: random picks; MIX=adaptive: the weights' schedule
        self.readers = readers  # one per dataset, each in its own order
        self.totals = [r.total_tokens for r in self.readers]
        self.total_tokens = sum(self.totals)
        self._restore(MixedState(tuple(r.state_dict() for r in self.readers), tuple(mixture.weights)))

    def _restore(self, state: MixedState) -> None:
        for reader, st in zip(self.readers, state.readers):
            reader.load_state_dict(st)
        self.draws = state.draws
        self._blend(list(state.weights), set(state.dropped), list(state.credits))

    def _blend(self, weights: list[float], dropped: set[int], credits: list[int]) -> None:
        self.base_weights, self.dropped = weights, dropped
        self.weights = renormalised(self.base_weights, self.dropped)
        self.ints = integer_weights(self.weights)
        self.credits = credits or [0] * len(self.base_weights)

    def _state(self) -> MixedState:
        return MixedState(tuple(r.state_dict() for r in self.readers), tuple(self.base_weights), tuple(self.credits),
                          tuple(sorted(self.dropped)), self.draws)

    def load_state_dict(self, state: dict) -> None:
        self._restore(MixedState(tuple(state["readers"]), tuple(state["weights"]), tuple(state["credits"]),
                                 tuple(state["dropped"]), state["draws"]))

    def reshaped(self, state: dict, seq_len: int) -> dict:
        return state | dict(readers=tuple(r.reshaped(st, seq_len) for r, st in zip(self.readers, state["readers"])))

    @staticmethod
    def reweighted(state: dict, weights: list[float]) -> dict:
        """The same streams under new weights (a new phase): the blend starts afresh."""
        return state | dict(weights=tuple(weights), credits=())

    def _drop(self, out: list[int]) -> None:
        self._blend(self.base_weights, self.dropped | set(out), [])  # the readers stay where they are
        mixture = ",".join(f"{name}={w:.3f}" for name, w in zip(self.mixture.names, self.weights))
        self.events += [DataEvent("drop", self.mixture.names[d], mixture=mixture) for d in sorted(out)]

    def take(self, n: int) -> Taken:
        """n rows, their positions in their datasets' streams, and each row's dataset."""
        scheduled = None if self.schedule is None else self.schedule.at(self.draws)
        if scheduled is not None and tuple(scheduled) != tuple(self.base_weights):  # MIX=adaptive moved the weights
            self._blend(list(scheduled), self.dropped, [])
        while True:
            if not any(self.ints):
                dropped = ", ".join(self.mixture.names[d] for d in sorted(self.dropped))
                raise DataExhausted(f"every dataset of the phase's mixture is used up (on_exhaust = \"drop\": {dropped})")
            if self.natural:
                picks, credits = natural_picks(self.weights, n, self.seed, self.draws), self.credits
            else:
                picks, credits = blend(self.ints, self.credits, n)
            wanted = {d: picks.count(d) for d in set(picks)}
            out = [d for d, k in wanted.items() if self.mixture.on_exhaust[d] == "drop"
                   and not self.readers[d].fits_in_pass(k)]
            if not out:
                break
            self._drop(out)
        self.credits = credits
        self.draws += 1
        parts = {}
        for d, k in sorted(wanted.items()):
            parts[d] = self.readers[d].take(k)
            self.events += self.readers[d].new_events()
        taken = {d: 0 for d in parts}
        rows, positions = [], []
        for d in picks:
            rows.append(parts[d][0][taken[d]])
            positions.append(parts[d][1][taken[d]])
            taken[d] += 1
        return np.stack(rows), np.asarray(positions, dtype=np.int64), np.asarray(picks, dtype=np.int64)

    @property
    def tokens_consumed(self) -> int:
        return sum(r.tokens_consumed for r in self.readers)

    @property
    def tokens_skipped(self) -> int:
        return sum(r.tokens_skipped for r in self.readers)

    def where(self) -> str:
        return "; ".join(r.where() for r in self.readers)

    def describe(self) -> list[str]:
        return [line for r in self.readers for line in r.describe()]
