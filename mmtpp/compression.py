"""Adaptive temporal similarity compression (design §4), under three rules and a calibrated Δ.

Event i is replaced by ``<|similar_event|>`` when it is *similar* to its reference, the previous
event in scan order (compressed or not): its predecessor in a forward scan (pre-training; a run
keeps its first event), its successor in a backward scan (fine-tuning prompts; a run keeps its
most recent event). A rule measures a distance d_i between event i and its reference and
compresses the event when d_i < Δ:

- ``absolute`` (the paper's rule, the default): d_i = |τ_i − τ_ref|, Δ in the dataset's time unit;
- ``relative``: d_i = |log τ_i − log τ_ref|, so gaps within a factor e^Δ of each other are similar
  and Δ means the same in seconds, minutes or hours. Ties: two zero gaps are similar (d = 0),
  a zero and a non-zero gap never are (d = ∞), the limits of the log rule;
- ``typed``: the relative distance when event i has the same type as its reference, ∞ otherwise.

Because the reference does not depend on earlier decisions, a mask is one vectorised comparison
of neighbouring gaps. Event 0 (whose gap τ_0 = 0 is a convention, not an observation) is never
compressed, nor is event 1 in a forward scan (its reference would be event 0) or the last event
in a backward scan (it has no successor); with ``keep_last`` the last event before a prediction
target is never compressed either. Δ = 0 disables every rule.

A compressed event costs one token, or two with ``keep_type`` (``<|similar_event|><|type_k|>``:
the mark sequence survives while time, text and image are dropped). ``calibrate`` finds the Δ of
a rule that reaches a target (a compressed fraction, or a gain in events per token budget) on
given sequences, by an exact search over the finite set of distances that can change the mask.
What a rule does to a whole dataset (tokens, events per budget) is ``mmtpp.compression_stats``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

Direction = Literal["forward", "backward"]
DIRECTIONS: tuple[Direction, ...] = ("forward", "backward")
Mode = Literal["absolute", "relative", "typed"]
MODES: tuple[Mode, ...] = ("absolute", "relative", "typed")
TargetKind = Literal["fraction", "gain"]
TARGET_KINDS: tuple[TargetKind, ...] = ("fraction", "gain")

# A compressed event costs exactly one token, <|similar_event|> (two with keep_type).
COMPRESSED_EVENT_TOKENS = 1


@dataclass(frozen=True)
class CompressionRule:
    """How events are judged similar: ``mode`` (see module docstring), its threshold ``delta``
    (time units for ``absolute``, log-gap units for ``relative`` and ``typed``; 0 = off) and
    whether a compressed event keeps its type token (``keep_type``)."""

    mode: Mode
    delta: float
    keep_type: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"compression mode must be one of {MODES}, got {self.mode!r}")
        if isinstance(self.delta, bool) or not isinstance(self.delta, int | float | np.number):
            raise ValueError(f"delta must be a number, got {self.delta!r}")
        if not math.isfinite(self.delta) or self.delta < 0:
            raise ValueError(f"delta must be >= 0, got {self.delta}")
        if not isinstance(self.keep_type, bool | np.bool_):
            raise ValueError(f"keep_type must be true or false, got {self.keep_type!r}")
        object.__setattr__(self, "delta", float(self.delta))
        object.__setattr__(self, "keep_type", bool(self.keep_type))

    @property
    def compressed_tokens(self) -> int:
        """Tokens a compressed event costs: ``<|similar_event|>`` (+ ``<|type_k|>``)."""
        return COMPRESSED_EVENT_TOKENS + int(self.keep_type)

    @property
    def needs_types(self) -> bool:
        return self.mode == "typed"

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``relative Δ=0.2: gaps within ×1.22``."""
        if self.delta == 0:
            return f"{self.mode} Δ=0: no compression"
        if self.mode == "absolute":
            text = f"absolute Δ={self.delta:g}: gaps within ±{self.delta:g} time units"
        else:
            same = "same type and " if self.mode == "typed" else ""
            text = f"{self.mode} Δ={self.delta:g}: {same}gaps within ×{math.exp(self.delta):.3g}"
        return text + (", type token kept" if self.keep_type else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressionRule:
        unknown = set(data) - {"mode", "delta", "keep_type"}
        if unknown:
            raise ValueError(f"unknown compression rule keys {sorted(unknown)}")
        return cls(**data)


def gaps_from_times(times: ArrayLike) -> np.ndarray:
    """Absolute times ``[n]`` → inter-event gaps ``[n]`` with τ_0 = 0 (float64)."""
    t = np.asarray(times, dtype=np.float64)
    gaps = np.zeros_like(t)
    if t.size > 1:
        gaps[1:] = np.diff(t)
    return gaps


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def reference_distances(
    mode: Mode,
    gaps: ArrayLike,
    types: ArrayLike | None = None,
    direction: Direction = "forward",
    keep_last: bool = False,
) -> np.ndarray:
    """Distance ``[n]`` of each event to its reference under ``mode``; +inf where the event is
    never compressed (event 0, the end without a reference, the kept last event, a type change
    under ``typed``, NaN gaps). The mask at any Δ > 0 is ``distances < Δ``."""
    if mode not in MODES:
        raise ValueError(f"compression mode must be one of {MODES}, got {mode!r}")
    _check_direction(direction)
    tau = np.asarray(gaps, dtype=np.float64)
    n = tau.size
    d = np.full(n, np.inf)
    if n < 3:
        return d
    a, b = (tau[1:], tau[:-1])  # a[j] = τ_{j+1}, b[j] = τ_j: neighbouring gaps
    if mode == "absolute":
        step = np.abs(a - b)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.abs(np.log(a) - np.log(b))
        # ties: two zero gaps are identical (d = 0); zero vs non-zero is an infinite ratio,
        # which the log already gives as inf
        step[(a == 0) & (b == 0)] = 0.0
    if mode == "typed":
        if types is None:
            raise ValueError("the typed compression rule needs the event types")
        k = np.asarray(types)
        if k.shape != tau.shape:
            raise ValueError(f"types has shape {k.shape}, gaps {tau.shape}: they must match")
        step[k[1:] != k[:-1]] = np.inf
    step[np.isnan(step)] = np.inf
    # step[j] compares events j+1 and j: forward judges event j+1 (j >= 1), backward event j
    if direction == "forward":
        d[2:] = step[1:]
    else:
        d[1 : n - 1] = step[1:]
    if keep_last:
        d[-1] = np.inf
    return d


def mask(
    rule: CompressionRule,
    gaps: ArrayLike,
    types: ArrayLike | None = None,
    direction: Direction = "forward",
    keep_last: bool = False,
) -> np.ndarray:
    """Boolean mask ``[n]``: True where the event is replaced by ``<|similar_event|>`` under
    ``rule`` (``types [n]`` needed by the ``typed`` rule only)."""
    if rule.delta == 0:
        _check_direction(direction)
        return np.zeros(np.asarray(gaps).size, dtype=bool)
    return reference_distances(rule.mode, gaps, types, direction, keep_last) < rule.delta


def similar_mask(
    gaps: ArrayLike,
    delta: float,
    direction: Direction = "forward",
    keep_last: bool = False,
) -> np.ndarray:
    """The ``absolute`` rule's mask ``[n]`` (the paper's rule): |τ_i − τ_ref| < Δ."""
    return mask(CompressionRule("absolute", delta), gaps, None, direction, keep_last)


def compressed_costs(
    event_costs: ArrayLike, mask: ArrayLike, tokens: int = COMPRESSED_EVENT_TOKENS
) -> np.ndarray:
    """Token cost per event after compression: a compressed event costs ``tokens``
    (``rule.compressed_tokens``)."""
    costs = np.asarray(event_costs, dtype=np.int64)
    return np.where(np.asarray(mask, dtype=bool), tokens, costs)


def events_in_budget(costs: ArrayLike, budget: int) -> int:
    """How many of the most recent events fit in ``budget`` tokens (costs per event, in order)."""
    c = np.asarray(costs, dtype=np.int64)[::-1]
    return int(np.searchsorted(np.cumsum(c), budget, side="right"))


# --- calibration (``auto``) -------------------------------------------------------------------


@dataclass(frozen=True)
class CompressionTarget:
    """What ``calibrate`` aims for: ``fraction`` = the share of events compressed (in [0, 1)),
    ``gain`` = events per token budget relative to Δ = 0 (≥ 1)."""

    kind: TargetKind
    value: float

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            kinds = TARGET_KINDS
            raise ValueError(f"compression target kind must be one of {kinds}, got {self.kind!r}")
        v = float(self.value)
        if self.kind == "fraction" and not 0 <= v < 1:
            raise ValueError(f"a compressed-fraction target must be in [0, 1), got {v}")
        if self.kind == "gain" and not (math.isfinite(v) and v >= 1):
            raise ValueError(f"an events-per-budget gain target must be >= 1, got {v}")
        object.__setattr__(self, "value", v)

    def describe(self) -> str:
        """``fraction=0.5`` or ``gain=2``; ``parse`` reads it back."""
        return f"{self.kind}={self.value:g}"

    @classmethod
    def parse(cls, text: str) -> CompressionTarget:
        kind, sep, value = str(text).partition("=")
        if not sep:
            raise ValueError(f"a compression target reads 'fraction=F' or 'gain=G', got {text!r}")
        try:
            number = float(value)
        except ValueError as err:
            raise ValueError(f"compression target {text!r}: {value!r} is not a number") from err
        return cls(kind.strip(), number)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Calibration:
    """The result of ``calibrate``: the ``rule`` with its Δ, the ``target``, the figure the
    rule ``achieved`` on the calibration sequences, and whether that reaches the target."""

    rule: CompressionRule
    target: CompressionTarget
    achieved: float
    reached: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.to_dict(),
            "target": self.target.describe(),
            "achieved": self.achieved,
            "reached": self.reached,
        }


def _fits(costs: np.ndarray, bounds: np.ndarray, budget: int) -> np.ndarray:
    """Events of each sequence that fit in ``budget`` from its end (``events_in_budget`` for
    every sequence at once): costs ``[N]`` concatenated, sequence s = ``bounds[s]:bounds[s+1]``,
    all sequences non-empty. Event i fits when the sum of costs from i to its sequence's end
    is ≤ budget."""
    total = np.concatenate([[0], np.cumsum(costs)])
    suffix = total[np.repeat(bounds[1:], np.diff(bounds))] - total[:-1]
    return np.add.reduceat((suffix <= budget).astype(np.int64), bounds[:-1])


def calibrate(
    mode: Mode,
    sequences: Sequence[tuple[ArrayLike, ...]],
    target: CompressionTarget,
    budget: int = 4096,
    direction: Direction = "backward",
    keep_last: bool = True,
    keep_type: bool = False,
) -> Calibration:
    """The smallest Δ (in ``mode``'s units) whose rule reaches ``target`` on ``sequences``:
    ``(gaps, costs)`` or ``(gaps, costs, types)`` tuples (``costs`` may be None for a
    ``fraction`` target; ``types`` needed by ``typed``), typically the training split's.

    Both figures are step functions of Δ that only change at the distances
    ``reference_distances`` yields, so the search runs over those distinct values c_0 < c_1 < …
    (exact counts for ``fraction``, bisection over the sorted values for ``gain``, which is
    monotone because a compressed event never costs more than a full one). The returned Δ is
    the midpoint between the chosen c_k and the next distance (1.5·c_k past the largest), so
    the mask on these sequences is the same for any Δ near it. A target of 0 (or gain 1)
    returns Δ = 0. When the target cannot be reached (e.g. ``typed`` with few same-type
    neighbours), the result is the smallest Δ reaching the largest achievable figure, with
    ``reached=False``.
    """
    rule0 = CompressionRule(mode, 0.0, keep_type)  # validates mode and keep_type
    gain = target.kind == "gain"
    dists, costs = _distances(mode, sequences, gain, direction, keep_last)
    keep = [i for i, d in enumerate(dists) if d.size > 0]
    d_all = np.concatenate([dists[i] for i in keep])
    finite = d_all[np.isfinite(d_all)]
    cands, counts = np.unique(finite, return_counts=True)  # sorted distinct distances
    if gain:
        kept = [costs[i] for i in keep]
        measure = _gain_measure(d_all, cands, kept, budget, rule0.compressed_tokens)
    else:
        reached_at = np.cumsum(counts) / d_all.size  # fraction when c_0..c_k are compressed

        def measure(k: int) -> float:
            return float(reached_at[k]) if k >= 0 else 0.0

    best = measure(cands.size - 1)
    goal = min(target.value, best)
    k = -1 if goal <= measure(-1) else _first_reaching(measure, cands.size, goal)
    rule = CompressionRule(mode, _delta_at(cands, k), keep_type)
    return Calibration(rule, target, measure(k), bool(best >= target.value))


def _distances(
    mode: Mode,
    sequences: Sequence[tuple[ArrayLike, ...]],
    gain: bool,
    direction: Direction,
    keep_last: bool,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each sequence's ``reference_distances`` and, for a ``gain`` target, its per-event token
    costs, checked (at least one sequence must have events)."""
    dists, costs = [], []
    for s, item in enumerate(sequences):
        types = item[2] if len(item) > 2 else None
        if mode == "typed" and types is None:
            raise ValueError(f"sequence {s}: the typed rule needs (gaps, costs, types) tuples")
        d = reference_distances(mode, item[0], types, direction, keep_last)
        if gain:
            if item[1] is None:
                raise ValueError(f"sequence {s}: a gain target needs per-event token costs")
            c = np.asarray(item[1], dtype=np.int64)
            if c.shape != d.shape:
                raise ValueError(f"sequence {s}: costs has shape {c.shape}, gaps {d.shape}")
            costs.append(c)
        dists.append(d)
    if not dists or sum(d.size for d in dists) == 0:
        raise ValueError("calibration needs at least one non-empty sequence")
    return dists, costs


def _gain_measure(
    d_all: np.ndarray, cands: np.ndarray, costs: list[np.ndarray], budget: int, small: int
) -> Callable[[int], float]:
    """Events per ``budget`` relative to Δ = 0 when the distances ≤ c_k are compressed (each to
    ``small`` tokens), as a function of k (k = −1: none); ``costs`` of the non-empty
    sequences, in the order of ``d_all``."""
    c_all = np.concatenate(costs)
    bounds = np.concatenate([[0], np.cumsum([c.size for c in costs])])
    full = _fits(c_all, bounds, budget).mean()
    if full == 0:
        raise ValueError(f"no sequence's last event fits in budget={budget} tokens")

    def measure(k: int) -> float:
        if k < 0:
            return 1.0
        comp = np.where(d_all <= cands[k], small, c_all)
        return float(_fits(comp, bounds, budget).mean() / full)

    return measure


def _first_reaching(measure: Callable[[int], float], size: int, goal: float) -> int:
    """The smallest k in 0..size−1 with measure(k) ≥ goal, by bisection (measure is
    non-decreasing in k and reaches goal at size − 1)."""
    lo, hi = 0, size - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if measure(mid) >= goal:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _delta_at(cands: np.ndarray, k: int) -> float:
    """The Δ that compresses exactly the distances ≤ c_k (k = −1: none)."""
    if k < 0:
        return 0.0
    upper = cands[k + 1] if k + 1 < cands.size else 2 * cands[k] + 1e-12
    mid = (cands[k] + upper) / 2
    # neighbouring floats have no midpoint strictly above c_k: take the next float
    return float(mid if mid > cands[k] else np.nextafter(cands[k], np.inf))
