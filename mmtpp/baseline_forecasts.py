"""Baseline forecasters: what a multi-step forecast of the model must beat.

Long-horizon studies find that simple forecasters often win on OTD and on later steps, so
``forecast_eval`` reports the model beside them. Each returns ``multistep.Continuations``, the
same structure a sampler does, so they are scored by the same code:

- ``poisson_forecast``: a homogeneous Poisson process at the training rate, types drawn at
  their training frequencies (seeded);
- ``repeat_last_forecast``: the history's last gap and type, repeated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from mmtpp.events import EventSequence
from mmtpp.multistep import NO_TYPE, Continuations


def _last_events(histories: Sequence[EventSequence]) -> tuple[np.ndarray, np.ndarray]:
    for seq in histories:
        if len(seq) == 0:
            raise ValueError(f"forecast: history of sequence {seq.seq_id} is empty")
    start = np.array([seq.time[-1] for seq in histories], dtype=np.float64)
    last_type = np.array([seq.type[-1] for seq in histories], dtype=np.int64)
    return start, last_type


def _cut(start: np.ndarray, times: np.ndarray, types: np.ndarray, until: ArrayLike | None):
    """Continuations from full [H, S, K] draws, dropping events after ``until`` [H]."""
    if until is not None:
        ends = np.broadcast_to(np.asarray(until, dtype=np.float64), start.shape)
        late = times > ends[:, None, None]
        times = np.where(late, np.nan, times)
        types = np.where(late, NO_TYPE, types)
    return Continuations(start, times, types)


def poisson_forecast(
    histories: Sequence[EventSequence],
    steps: int,
    samples: int,
    mean_gap: float,
    type_freq: ArrayLike,
    seed: int,
    until: ArrayLike | None = None,
) -> Continuations:
    """A homogeneous Poisson process at the training rate 1/``mean_gap`` from each history's
    last event, with types drawn independently at the training frequencies ``type_freq``
    [num_types]: ``samples`` continuations of ``steps`` events each (events after
    ``until[h]`` dropped). The same seed gives the same draws."""
    freq = np.asarray(type_freq, dtype=np.float64)
    if not (mean_gap > 0 and np.isfinite(mean_gap)):
        raise ValueError(f"poisson_forecast: mean_gap must be > 0, got {mean_gap}")
    if freq.ndim != 1 or (freq < 0).any() or not freq.sum() > 0:
        raise ValueError("poisson_forecast: type_freq must be non-negative with a positive sum")
    _check_counts(steps, samples)
    start, _ = _last_events(histories)
    rng = np.random.default_rng(seed)
    shape = (start.size, samples, steps)
    gaps = rng.exponential(mean_gap, size=shape)
    types = rng.choice(freq.size, size=shape, p=freq / freq.sum())
    return _cut(start, start[:, None, None] + np.cumsum(gaps, axis=2), types, until)


def repeat_last_forecast(
    histories: Sequence[EventSequence],
    steps: int,
    samples: int,
    fallback_gap: float,
    until: ArrayLike | None = None,
) -> Continuations:
    """Each history's last gap and type repeated ``steps`` times (every sample the same):
    t_k = t_last + k·τ_last. A history of one event has no gap: ``fallback_gap`` (the
    training mean gap) stands in."""
    _check_counts(steps, samples)
    start, last_type = _last_events(histories)
    gap = np.array(
        [seq.time[-1] - seq.time[-2] if len(seq) > 1 else fallback_gap for seq in histories]
    )
    times = start[:, None] + gap[:, None] * np.arange(1, steps + 1)  # [H, K]
    times = np.broadcast_to(times[:, None, :], (start.size, samples, steps))
    types = np.broadcast_to(last_type[:, None, None], times.shape)
    return _cut(start, times.copy(), types.copy(), until)


def _check_counts(steps: int, samples: int) -> None:
    if steps < 1 or samples < 1:
        raise ValueError(f"forecast: steps and samples must be >= 1, got {steps}, {samples}")
