"""Adaptive temporal similarity compression (SPEC §4).

Event i is replaced by one ``<|similar_event|>`` token when |τ_i − τ_ref| < Δ, where τ_ref is
the gap of the previous event *in scan order*, compressed or not. Because the reference does
not depend on earlier decisions, the whole mask is one vectorised comparison of neighbouring
gaps:

- forward scan (pre-training): event i ≥ 2 is compressed when |τ_i − τ_{i−1}| < Δ, so a run of
  near-equal gaps keeps its first event;
- backward scan (fine-tuning prompts, from the prediction point): event 1 ≤ i ≤ n−2 is
  compressed when |τ_i − τ_{i+1}| < Δ, so the run keeps its most recent event.

Event 0 (whose gap τ_0 = 0 is a convention, not an observation) is never compressed, and with
``keep_last`` the last event before a prediction target is never compressed either.
Δ = 0 disables compression.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

Direction = Literal["forward", "backward"]
DIRECTIONS: tuple[Direction, ...] = ("forward", "backward")

# A compressed event costs exactly one token: <|similar_event|>.
COMPRESSED_EVENT_TOKENS = 1


def gaps_from_times(times: ArrayLike) -> np.ndarray:
    """Absolute times ``[n]`` → inter-event gaps ``[n]`` with τ_0 = 0 (float64)."""
    t = np.asarray(times, dtype=np.float64)
    gaps = np.zeros_like(t)
    if t.size > 1:
        gaps[1:] = np.diff(t)
    return gaps


def similar_mask(
    gaps: ArrayLike,
    delta: float,
    direction: Direction = "forward",
    keep_last: bool = False,
) -> np.ndarray:
    """Boolean mask ``[n]``: True where the event is replaced by ``<|similar_event|>``."""
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    tau = np.asarray(gaps, dtype=np.float64)
    n = tau.size
    mask = np.zeros(n, dtype=bool)
    if delta == 0 or n < 3:
        return mask
    step = np.abs(np.diff(tau))  # step[j] = |τ_{j+1} − τ_j|
    if direction == "forward":
        mask[2:] = step[1:] < delta
    else:
        mask[1 : n - 1] = step[1:] < delta
    if keep_last:
        mask[-1] = False
    return mask


def compressed_costs(event_costs: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """Token cost per event after compression: compressed events cost one token."""
    costs = np.asarray(event_costs, dtype=np.int64)
    return np.where(np.asarray(mask, dtype=bool), COMPRESSED_EVENT_TOKENS, costs)


def events_in_budget(costs: ArrayLike, budget: int) -> int:
    """How many of the most recent events fit in ``budget`` tokens (costs per event, in order)."""
    c = np.asarray(costs, dtype=np.int64)[::-1]
    return int(np.searchsorted(np.cumsum(c), budget, side="right"))


@dataclass(frozen=True)
class CompressionStats:
    """Compression figures for one dataset at one Δ (SPEC §4).

    ``events_per_budget`` is the mean, over sequences, of the number of most recent events that
    fit in ``budget`` tokens with backward compression (the fine-tuning prompt's view), and
    ``events_per_budget_uncompressed`` the same at Δ = 0. Sequences whose events all fit are
    counted in ``capped_sequences``: for them the figure is a lower bound.
    """

    delta: float
    budget: int
    num_sequences: int
    num_events: int
    compressed_events: int
    tokens_uncompressed: int
    tokens_compressed: int
    tokens_per_event: float
    tokens_per_event_uncompressed: float
    compression_ratio: float
    events_per_budget: float
    events_per_budget_uncompressed: float
    capped_sequences: int

    def to_dict(self) -> dict:
        return asdict(self)


def compression_stats(
    sequences: Iterable[tuple[np.ndarray, np.ndarray]],
    delta: float,
    budget: int,
) -> CompressionStats:
    """Statistics over ``(gaps, event_costs)`` pairs, one per sequence.

    ``event_costs[i]`` is the number of tokens event i takes when rendered in full.
    """
    n_seq = n_events = n_comp = tok_full = tok_comp = capped = 0
    fit_comp: list[int] = []
    fit_full: list[int] = []
    for gaps, costs in sequences:
        costs = np.asarray(costs, dtype=np.int64)
        mask = similar_mask(gaps, delta, "backward", keep_last=True)
        comp = compressed_costs(costs, mask)
        n_seq += 1
        n_events += costs.size
        n_comp += int(mask.sum())
        tok_full += int(costs.sum())
        tok_comp += int(comp.sum())
        fit_comp.append(events_in_budget(comp, budget))
        fit_full.append(events_in_budget(costs, budget))
        capped += int(fit_comp[-1] == costs.size)
    return CompressionStats(
        delta=float(delta),
        budget=int(budget),
        num_sequences=n_seq,
        num_events=n_events,
        compressed_events=n_comp,
        tokens_uncompressed=tok_full,
        tokens_compressed=tok_comp,
        tokens_per_event=tok_comp / max(n_events, 1),
        tokens_per_event_uncompressed=tok_full / max(n_events, 1),
        compression_ratio=tok_full / max(tok_comp, 1),
        events_per_budget=float(np.mean(fit_comp)) if fit_comp else 0.0,
        events_per_budget_uncompressed=float(np.mean(fit_full)) if fit_full else 0.0,
        capped_sequences=capped,
    )
