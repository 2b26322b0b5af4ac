"""Multi-step forecasts: sampled continuations and how far they are from the truth.

A forecast is S sampled continuations of up to K events after each of H histories
(``Continuations``: absolute times and types, padded past each continuation's end); the
truth is the same structure with one sample. Two views of the error:

- **per horizon**: for k = 1..K, the error of the k-th event's time measured from the
  history's end, and whether its type is right. The point forecast of the k-th time is the
  median over samples (it minimises the absolute error; a sample without a k-th event counts
  as "after every other", so the medians never decrease with k), the type the most frequent
  one among the samples that have a k-th event;
- **as a whole**: the optimal-transport distance (``mmtpp.otd``: moving an event costs
  |t − t'|, deleting or inserting one C) between each sampled continuation and the truth on a
  window [t_last, t_last + horizon], averaged over samples. C = the training mean gap is the
  recommended choice (an event is worth matching when it is off by less than two typical
  gaps); OTD grows with C and the window, so compare forecasters at the same C and horizon.

Baseline forecasters with the same output are in ``mmtpp.baseline_forecasts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mmtpp.events import EventSequence
from mmtpp.intervals import bootstrap_ci
from mmtpp.otd import otd

NO_TYPE = -1  # type of a padding slot after a continuation's last event


@dataclass(frozen=True)
class Continuations:
    """Up to K events after each of H histories, S samples each.

    ``start`` [H]: time of each history's last event; ``times`` [H, S, K]: absolute event
    times, non-decreasing and ≥ start, NaN after a continuation's last event; ``types``
    [H, S, K]: int64, ``NO_TYPE`` exactly where times are NaN.
    """

    start: np.ndarray
    times: np.ndarray
    types: np.ndarray

    def __post_init__(self) -> None:
        start = np.asarray(self.start, dtype=np.float64).reshape(-1)
        times = np.asarray(self.times, dtype=np.float64)
        types = np.asarray(self.types, dtype=np.int64)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "types", types)
        if times.ndim != 3 or types.shape != times.shape or times.shape[0] != start.size:
            raise ValueError(
                f"continuations: times {times.shape} and types {types.shape} must "
                f"be [H, S, K] with H = len(start) = {start.size}"
            )
        if not np.isfinite(start).all():
            raise ValueError(
                f"continuations: start of history {_first(~np.isfinite(start))} is not finite"
            )
        pad = np.isnan(times)
        if ((types == NO_TYPE) != pad).any():
            raise ValueError(
                f"continuations: at (history, sample, step) {_first((types == NO_TYPE) != pad)} "
                "a time is NaN without type -1 or the reverse"
            )
        if (pad[:, :, :-1] & ~pad[:, :, 1:]).any():
            raise ValueError(
                "continuations: an event follows padding at (history, sample, step) "
                f"{_first(pad[:, :, :-1] & ~pad[:, :, 1:])}"
            )
        if np.isinf(times).any() or (types[~pad] < 0).any():
            raise ValueError("continuations: times must be finite and types >= 0")
        with np.errstate(invalid="ignore"):
            before = times < start[:, None, None]
            unsorted = np.diff(times, axis=2) < 0
        if before.any():
            raise ValueError(f"continuations: event before its history's end at {_first(before)}")
        if unsorted.any():
            raise ValueError(
                f"continuations: times decrease at (history, sample, step) {_first(unsorted)}"
            )

    @property
    def histories(self) -> int:
        return self.times.shape[0]

    @property
    def samples(self) -> int:
        return self.times.shape[1]

    @property
    def steps(self) -> int:
        return self.times.shape[2]

    @property
    def lengths(self) -> np.ndarray:
        """[H, S] events in each continuation."""
        return (~np.isnan(self.times)).sum(axis=2)

    @property
    def offsets(self) -> np.ndarray:
        """[H, S, K] times since the history's end (NaN padding kept)."""
        return self.times - self.start[:, None, None]

    def check_types(self, num_types: int) -> None:
        """Raise if any event's type is not in 0..num_types − 1."""
        bad = self.types >= num_types
        if bad.any():
            raise ValueError(
                f"continuations: type {self.types[bad][0]} out of range "
                f"0..{num_types - 1} at (history, sample, step) {_first(bad)}"
            )

    @classmethod
    def from_events(
        cls, start: ArrayLike, events: Sequence[Sequence[Sequence[tuple[float, int]]]]
    ) -> Continuations:
        """From nested lists: ``events[h][s]`` is continuation s of history h as a list of
        (time, type) pairs."""
        h = len(events)
        s = max((len(e) for e in events), default=0)
        k = max((len(c) for e in events for c in e), default=0)
        times = np.full((h, s, k), np.nan)
        types = np.full((h, s, k), NO_TYPE, dtype=np.int64)
        for i, per_history in enumerate(events):
            if len(per_history) != s:
                raise ValueError(
                    f"continuations: history {i} has {len(per_history)} samples, another {s}"
                )
            for j, continuation in enumerate(per_history):
                for n, (t, kind) in enumerate(continuation):
                    times[i, j, n], types[i, j, n] = t, kind
        return cls(np.asarray(start, dtype=np.float64), times, types)

    def to_events(self) -> list[list[list[tuple[float, int]]]]:
        """Nested lists as ``from_events`` takes them (padding left out), e.g. for JSON."""
        lengths = self.lengths
        return [
            [
                list(zip(self.times[h, s, :n].tolist(), self.types[h, s, :n].tolist(), strict=True))
                for s, n in enumerate(lengths[h])
            ]
            for h in range(self.histories)
        ]


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def truth_after(
    sequences: Sequence[EventSequence],
    cuts: Sequence[int],
    steps: int,
    until: ArrayLike | None = None,
) -> Continuations:
    """The true continuation of each sequence after its first ``cuts[h]`` events (the
    history): its next ``steps`` events, or fewer where the sequence ends or an event falls
    after ``until[h]`` (absolute time)."""
    ends = None if until is None else np.broadcast_to(np.asarray(until, float), (len(cuts),))
    start, events = [], []
    for h, (seq, cut) in enumerate(zip(sequences, cuts, strict=True)):
        if not 1 <= cut <= len(seq):
            raise ValueError(
                f"truth_after: sequence {seq.seq_id}: cut {cut} must be in "
                f"1..{len(seq)} (the history keeps at least one event)"
            )
        times, types = seq.time[cut : cut + steps], seq.type[cut : cut + steps]
        if ends is not None:
            keep = times <= ends[h]
            times, types = times[keep], types[keep]
        start.append(seq.time[cut - 1])
        events.append([list(zip(times.tolist(), types.tolist(), strict=True))])
    out = Continuations.from_events(start, events)
    if out.steps < steps:  # keep K columns even when every truth is shorter
        pad = steps - out.steps
        times = np.pad(out.times, ((0, 0), (0, 0), (0, pad)), constant_values=np.nan)
        types = np.pad(out.types, ((0, 0), (0, 0), (0, pad)), constant_values=NO_TYPE)
        out = Continuations(out.start, times, types)
    return out


# --- per-horizon errors and OTD of forecasts ----------------------------------------------


def point_forecast(forecast: Continuations) -> Continuations:
    """One continuation per history: for each step k the median over samples of the k-th
    event's time (a sample that has no k-th event counts as later than all others, so the
    point forecast has a k-th event only where most samples do, and its times never
    decrease), and the most frequent type among the samples with a k-th event (ties: the
    smallest type)."""
    offsets = np.where(np.isnan(forecast.times), np.inf, forecast.offsets)
    median = np.median(offsets, axis=1)  # [H, K]; inf where at least half lack the event
    present = np.isfinite(median)
    types = np.full(median.shape, NO_TYPE, dtype=np.int64)
    for h, k in zip(*np.nonzero(present), strict=True):
        kinds = forecast.types[h, :, k]
        types[h, k] = np.bincount(kinds[kinds >= 0]).argmax()
    times = np.where(present, median + forecast.start[:, None], np.nan)
    return Continuations(forecast.start, times[:, None, :], types[:, None, :])


@dataclass(frozen=True)
class HorizonErrors:
    """Per-history, per-step errors of a point forecast (arrays [H, K], NaN where the truth
    has no k-th event); ``missing`` [K] counts targets whose truth has a k-th event but the
    point forecast has none (they are left out of the error, never silently: reported)."""

    abs_error: np.ndarray
    correct: np.ndarray
    missing: np.ndarray

    def summary(self, seed: int = 0) -> list[dict[str, Any]]:
        """For k = 1..K: targets scored, missing forecasts, and MAE and type accuracy with
        their 95% bootstrap intervals over targets (None with fewer than two targets)."""
        return [
            {
                "step": k + 1,
                "targets": int(np.isfinite(self.abs_error[:, k]).sum()),
                "missing": int(self.missing[k]),
                "mae": _mean_interval(self.abs_error[:, k], seed),
                "type_accuracy": _mean_interval(self.correct[:, k], seed),
            }
            for k in range(self.abs_error.shape[1])
        ]


def _mean_interval(values: np.ndarray, seed: int) -> dict[str, Any] | None:
    """Mean of the scored (non-NaN) values with its bootstrap interval, as a dict."""
    scored = values[~np.isnan(values)]
    return bootstrap_ci(scored, seed=seed).to_dict() if scored.size >= 2 else None


def horizon_errors(forecast: Continuations, truth: Continuations) -> HorizonErrors:
    """Error of the k-th event's time (absolute, measured from the history's end) and of its
    type, k = 1..K, for the point forecast of ``forecast`` (``point_forecast``) against the
    true next events (``truth``, one sample per history)."""
    if truth.samples != 1 or truth.histories != forecast.histories:
        raise ValueError(
            f"horizon_errors: truth must be [{forecast.histories}, 1, K], got {truth.times.shape}"
        )
    if not np.array_equal(truth.start, forecast.start):
        raise ValueError("horizon_errors: forecast and truth start at different history ends")
    steps = forecast.steps
    point = point_forecast(forecast)
    true_t = _columns(truth.times[:, 0], steps, np.nan)
    true_k = _columns(truth.types[:, 0], steps, NO_TYPE)
    pred_t, pred_k = point.times[:, 0], point.types[:, 0]
    has_truth = ~np.isnan(true_t)
    scored = has_truth & ~np.isnan(pred_t)
    abs_error = np.where(scored, np.abs(pred_t - true_t), np.nan)
    correct = np.where(scored, (pred_k == true_k).astype(float), np.nan)
    missing = (has_truth & np.isnan(pred_t)).sum(axis=0)
    return HorizonErrors(abs_error, correct, missing)


def _columns(a: np.ndarray, k: int, fill: float) -> np.ndarray:
    """``a`` [H, *] cut or padded with ``fill`` to [H, k]."""
    if a.shape[1] >= k:
        return a[:, :k]
    return np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=fill)


@dataclass(frozen=True)
class OTDScores:
    """OTD on each history's window: ``samples`` [H, S] (each sampled continuation vs the
    truth), ``mean`` [H] (averaged over samples), ``point`` [H] (the point forecast vs the
    truth). ``incomplete_samples`` [H]: samples that stop at K events before the window ends
    (the window is then not covered: generate until its end or raise K);
    ``incomplete_truth`` [H]: the truth has K events inside the window, so later true events
    may be missing from it (pass the truth with ``truth_after(..., until=...)``)."""

    samples: np.ndarray
    mean: np.ndarray
    point: np.ndarray
    incomplete_samples: np.ndarray
    incomplete_truth: np.ndarray

    def summary(self, seed: int = 0) -> dict[str, Any]:
        """Means over histories with 95% bootstrap intervals (None with fewer than two
        histories), and the incomplete counts."""
        return {
            "targets": int(self.mean.size),
            "otd": _mean_interval(self.mean, seed),
            "otd_point": _mean_interval(self.point, seed),
            "incomplete_samples": int(self.incomplete_samples.sum()),
            "incomplete_truth": int(self.incomplete_truth.sum()),
        }


def otd_scores(
    forecast: Continuations, truth: Continuations, horizon: ArrayLike, cost: float
) -> OTDScores:
    """OTD between each sampled continuation (and the point forecast) and the truth, both cut
    to the window [start, start + horizon] of their history (``horizon`` scalar or [H]; inf:
    no window, all K events of each side)."""
    if truth.samples != 1 or truth.histories != forecast.histories:
        raise ValueError(
            f"otd_scores: truth must be [{forecast.histories}, 1, K'], got {truth.times.shape}"
        )
    width = np.broadcast_to(np.asarray(horizon, dtype=np.float64), (forecast.histories,))
    if not np.all(width > 0):  # inf: no window, every event of both sides counts
        raise ValueError(f"otd_scores: horizon must be > 0, got {width[~(width > 0)][:3]}")
    point = point_forecast(forecast)
    ends = forecast.start + width
    per_sample = np.empty((forecast.histories, forecast.samples))
    point_otd = np.empty(forecast.histories)
    for h in range(forecast.histories):
        # padding is NaN, and NaN <= end is False: the window drops it too
        true_t, true_k = _window(truth.times[h, 0], truth.types[h, 0], ends[h])
        for s in range(forecast.samples):
            t, k = _window(forecast.times[h, s], forecast.types[h, s], ends[h])
            per_sample[h, s] = otd(t, k, true_t, true_k, cost)
        t, k = _window(point.times[h, 0], point.types[h, 0], ends[h])
        point_otd[h] = otd(t, k, true_t, true_k, cost)
    full = forecast.lengths == forecast.steps
    last = forecast.times[:, :, -1] if forecast.steps else np.full(full.shape, np.nan)
    windowed = np.isfinite(ends)
    incomplete_samples = (full & (last < ends[:, None]) & windowed[:, None]).sum(axis=1)
    true_full = truth.lengths[:, 0] == truth.steps
    true_last = truth.times[:, 0, -1] if truth.steps else np.full(truth.histories, np.nan)
    incomplete_truth = true_full & (true_last < ends) & windowed
    return OTDScores(
        per_sample, per_sample.mean(axis=1), point_otd, incomplete_samples, incomplete_truth
    )


def _window(times: np.ndarray, types: np.ndarray, end: float) -> tuple[np.ndarray, np.ndarray]:
    keep = times <= end
    return times[keep], types[keep]
