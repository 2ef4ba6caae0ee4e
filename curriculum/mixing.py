"""Mixing named datasets: `MIX=natural`, `stratified` or `adaptive` (weights that follow the loss).

- `natural`: each row's dataset drawn at random (seeded, the same on every rank) with probability
  proportional to the datasets' sizes: what a shuffled stream of their union gives.
- `stratified`: the same proportions held exactly, to one row, in every micro-batch: the smooth
  weighted round-robin of curriculum/blend.py.
- `adaptive`: stratified between update points; every `MIX_UPDATE_EVERY` micro-batches the
  weights move by a rule (`MIX_RULE`) from each dataset's mean training loss over the window:
  - `odm` (Albalak et al. 2023, EXP3): with K datasets and t the update's number,
    eps_t = min(1/K, sqrt(ln K / (K t))); the reward R_i = beta R_i + (1 - beta) loss_i / w_i
    (beta = `MIX_SMOOTHING`; divided by the weight, as EXP3 does, so a rarely drawn dataset's
    reward is not understated); w_i = (1 - K eps_t) softmax(eps_{t-1} R)_i + eps_t.
    Unlearnable data (random tokens) keeps a high loss, so ODM moves weight *toward* it.
  - `excess_loss` (DoReMi-style): lambda_i = max(loss_i - reference_i, 0);
    a_i = w_i exp(eta lambda_i) normalised (eta = `MIX_STEP_SIZE`); w = (1 - K m) a + m with the
    floor m = `MIX_MIN_WEIGHT`. The reference is a reference model's loss on each dataset
    (`MIX_REFERENCE`), so data the reference cannot learn either has no excess and gains nothing.

No host synchronisation on the critical path: the rows' losses are summed per dataset on the
device (`index_add_`); at an update point the window's sums are all-reduced across ranks
asynchronously and copied to the host without blocking, and read at the *next* update point,
`MIX_UPDATE_EVERY` micro-batches later. The weights they give apply from the draw
`READ_AHEAD + 2` micro-batches after that (the read-ahead may hold the ones in between), so every
rank applies them at the same row and the blend is the same sequence everywhere, whatever the
threads' timing.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .blend import natural_picks  # noqa: F401  (MIX=natural draws through the blend)
from .config import MIX_MODES, MIX_RULES, MixConfig, parse_reference  # noqa: F401  (declared with the settings)
from .shards import DataError



# ------------------------------------------------------------------------------------------
# the rules: pure functions of numbers (tested against their formulas)
# ------------------------------------------------------------------------------------------

def odm_exploration(k: int, t: int) -> float:
    """EXP3's eps_t = min(1/K, sqrt(ln K / (K t))); eps_0 = 1/K."""
    return 1.0 / k if t <= 0 else min(1.0 / k, math.sqrt(math.log(k) / (k * t)))


def odm_update(rewards: list[float], weights: list[float], losses: list[float | None], t: int,
               smoothing: float) -> tuple[list[float], list[float]]:
    """Update t (1, 2, ...): the rewards and the new weights. A dataset with no rows in the window
    (loss None) keeps its reward."""
    k = len(weights)
    rewards = [r if loss is None else smoothing * r + (1.0 - smoothing) * loss / max(w, 1e-12)
               for r, w, loss in zip(rewards, weights, losses)]
    eps, eps_before = odm_exploration(k, t), odm_exploration(k, t - 1)
    top = max(eps_before * r for r in rewards)
    e = [math.exp(eps_before * r - top) for r in rewards]
    return rewards, [(1.0 - k * eps) * x / sum(e) + eps for x in e]


def excess_loss_update(weights: list[float], losses: list[float | None], reference: list[float], step_size: float,
                       min_weight: float) -> list[float]:
    """One exponentiated-gradient step on the clipped excess loss, then the floor."""
    k = len(weights)
    excess = [0.0 if loss is None else max(loss - ref, 0.0) for loss, ref in zip(losses, reference)]
    logits = [math.log(max(w, 1e-300)) + step_size * x for w, x in zip(weights, excess)]
    top = max(logits)
    a = [math.exp(v - top) for v in logits]
    return [(1.0 - k * min_weight) * x / sum(a) + min_weight for x in a]


# ------------------------------------------------------------------------------------------
# the schedule the reader follows, and the rule's state
# ------------------------------------------------------------------------------------------

class WeightSchedule:
    """The weights each draw of the blend uses: (first draw, weights) entries, in order. The
    reader (on the read-ahead thread) asks for its draw's; the loader adds entries that start
    far enough ahead that the reader has not drawn there yet."""

    def __init__(self):
        self.entries: list[tuple[int, tuple[float, ...]]] = []

    def add(self, first_draw: int, weights: list[float]) -> None:
        self.entries = [e for e in self.entries if e[0] < first_draw] + [(first_draw, tuple(weights))]

    def at(self, draw: int) -> tuple[float, ...] | None:
        current = None
        for first, weights in self.entries:
            if first > draw:
                break
            current = weights
        return current

    def state_dict(self) -> dict:
        return dict(entries=[list(e) for e in self.entries[-8:]])

    def load_state_dict(self, state: dict) -> None:
        self.entries = [(int(a), tuple(b)) for a, b in state["entries"]]


class AdaptiveMix:
    """MIX=adaptive's loss sums on the device, their reduction, and the rule's state."""

    def __init__(self, config: MixConfig, names: tuple[str, ...], start: list[float], reference: list[float] | None,
                 device: torch.device, lag: int, schedule: WeightSchedule, world_size: int):
        self.config, self.names, self.device, self.lag, self.schedule = config, names, device, lag, schedule
        self.reference, self.world_size = reference, world_size
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums = torch.zeros(2, len(names), dtype=self.dtype, device=device)  # loss sums, rows
        self.weights, self.rewards, self.updates = list(start), [0.0] * len(names), 0
        self.pending = None   # (work, host copy, event) of the window last reduced
        self.history: list[dict] = []   # every update: step, micro-batch, weights, the window's losses

    def observe(self, per_token_loss: Tensor, domains: Tensor) -> None:
        """The trained rows' losses, summed per dataset on the device (no synchronisation)."""
        row_loss = per_token_loss.detach().to(self.dtype).mean(dim=1)
        self.sums[0].index_add_(0, domains, row_loss)
        self.sums[1].index_add_(0, domains, torch.ones_like(row_loss))

    def at_micro_batch(self, micro_batch: int, step: int) -> str | None:
        """After micro-batch `micro_batch` (0-based) was observed: at an update point, read the
        window before, move the weights, and start reducing this window. The log line, if any."""
        if (micro_batch + 1) % self.config.update_every:
            return None
        line = None
        if self.pending is not None:
            line = self._apply(self._read(), micro_batch, step)
        window, self.sums = self.sums, torch.zeros_like(self.sums)
        work = None
        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            work = dist.all_reduce(window, async_op=True)
        host = torch.empty(window.shape, dtype=window.dtype, pin_memory=self.device.type == "cuda")
        if work is None:
            host.copy_(window, non_blocking=True)
        self.pending = (work, host, window)
        return line

    def _read(self) -> np.ndarray:
        work, host, window = self.pending
        if work is not None:  # done long ago: a whole window of steps has passed
            work.wait()
            host.copy_(window)
        elif self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        self.pending = None
        return host.numpy().copy()

    def _apply(self, window: np.ndarray, micro_batch: int, step: int) -> str:
        losses = [None if n == 0 else float(s / n) for s, n in zip(window[0], window[1])]
        self.updates += 1
        c = self.config
        if c.rule == "odm":
            self.rewards, self.weights = odm_update(self.rewards, self.weights, losses, self.updates, c.smoothing)
        else:
            self.weights = excess_loss_update(self.weights, losses, self.reference, c.step_size, c.min_weight)
        first_draw = micro_batch + self.lag + 2  # the reader may already hold micro_batch + 1 .. + lag + 1
        self.schedule.add(first_draw, self.weights)
        self.history.append(dict(step=step, micro_batch=micro_batch, first_draw=first_draw,
                                 weights=[round(w, 6) for w in self.weights],
                                 losses=[None if x is None else round(x, 6) for x in losses]))
        shown = ",".join(f"{n}={w:.3f}" for n, w in zip(self.names, self.weights))
        seen = ",".join(f"{n}={'-' if x is None else f'{x:.3f}'}" for n, x in zip(self.names, losses))
        return f"mix: step:{step} update:{self.updates} weights:{shown} window_loss:{seen} from_micro_batch:{first_draw}"

    def state_dict(self) -> dict:
        pending = None if self.pending is None else self._read_for_state()
        return dict(sums=self.sums.cpu(), weights=list(self.weights), rewards=list(self.rewards), updates=self.updates,
                    pending=pending, history=list(self.history))

    def _read_for_state(self):
        window = self._read()
        self.pending = (None, torch.from_numpy(window.copy()), None)  # read, kept for the next update
        return window

    def load_state_dict(self, state: dict) -> None:
        self.sums = state["sums"].to(self.device)
        self.weights, self.rewards, self.updates = list(state["weights"]), list(state["rewards"]), state["updates"]
        self.history = list(state["history"])
        self.pending = None if state["pending"] is None else (None, torch.from_numpy(np.asarray(state["pending"])), None)


def reference_losses(raw: str, names: tuple[str, ...]) -> list[float]:
    """MIX_REFERENCE's loss per dataset: given (name=loss,...), or the per-domain means
    tools.proxy_loss stored in an index (index:<file>); a DataError names a dataset without one."""
    if raw.startswith("index:"):
        from .index import DifficultyIndex
        means = DifficultyIndex.open(raw[len("index:"):]).parameters("proxy_loss").get("domain_means") or {}
    else:
        means = parse_reference(raw)
    missing = [n for n in names if n not in means]
    if missing:
        raise DataError(f"MIX_REFERENCE={raw!r}: no reference loss for {', '.join(missing)} (it has "
                        f"{', '.join(means) or 'none'})")
    return [float(means[n]) for n in names]
