"""What every exact Bayes-optimal predictor shares: its predictions, how targets are indexed,
and the ``Oracle`` interface that hides which process is behind it.

Target i is event i of a sequence, predicted from events 0..i−1, or from only the last
``history`` of them. ``mmtpp.hawkes``, ``mmtpp.regime_filter`` and ``mmtpp.profile_posterior``
return ``BayesPredictions`` for their targets; ``mmtpp.oracle`` wraps each process behind
``Oracle`` (the module docstring there says what each method answers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class BayesPredictions:
    """Predictions of event i from events < i, for i = 1..n−1 (arrays of length n−1).

    ``nll`` is the joint −log density of the true (gap, type), ``nll_time`` that of the gap
    alone (−log λ(τ) + Λ(τ)), and ``nll_type`` the cross-entropy −log P(type) of the
    predicted type distribution (before the gap is known).
    """

    mean_gap: np.ndarray
    median_gap: np.ndarray
    type_probs: np.ndarray  # [n−1, K]
    nll: np.ndarray
    nll_time: np.ndarray
    nll_type: np.ndarray

    @property
    def most_probable_type(self) -> np.ndarray:
        return self.type_probs.argmax(axis=1)


def target_indices(targets: ArrayLike | None, n: int, last: int) -> np.ndarray:
    """Target event indices as int64 [m], checked to lie in 1..``last`` (default 1..n−1).

    Target i is predicted from events 0..i−1; ``last`` = n allows the event after the
    history, whose gap and type are not known yet."""
    if targets is None:
        return np.arange(1, n, dtype=np.int64)
    idx = np.asarray(targets)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"targets must be a 1-D array of event indices, got {targets!r}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 1 or idx.max() > last):
        raise ValueError(
            f"targets must lie in 1..{last} for a history of {n} events (target i is "
            f"predicted from events < i), got {idx.min()}..{idx.max()}"
        )
    return idx


def check_history(history: int | None) -> None:
    """``history`` (events a predictor sees) must be None (all) or an integer >= 1."""
    if history is None:
        return
    if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or history < 1:
        raise ValueError(f"history must be None (all events) or an integer >= 1, got {history!r}")


@dataclass(frozen=True)
class ContinuationSamples:
    """S sampled continuations of one history that ends at ``start``: ``times`` [S, W]
    (absolute, NaN after a sample's last event), ``types`` [S, W] (int64, −1 there) and
    ``counts`` [S] events per sample. The padding is ``mmtpp.multistep``'s, so
    ``multistep.Continuations(start=[s.start], times=s.times[None], types=s.types[None])``
    holds the same samples."""

    start: float
    times: np.ndarray
    types: np.ndarray
    counts: np.ndarray

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(times, types) of sample i, without padding."""
        n = int(self.counts[i])
        return self.times[i, :n], self.types[i, :n]


class Oracle(ABC):
    """The Bayes-optimal predictor of one known process (``mmtpp.oracle``: what each method
    answers, and the implementations)."""

    kind: str
    num_types: int

    @abstractmethod
    def predictions(
        self,
        times: ArrayLike,
        types: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> BayesPredictions:
        """Predictions of each target i (default every i in 1..n−1) from events < i, or from
        only the last ``history`` of them."""

    @abstractmethod
    def predict_next(
        self,
        times: ArrayLike,
        types: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean gap [m], median gap [m], type probabilities [m, K]) of each target, which may
        include n — the event after the history, whose truth ``predictions`` would need."""

    def predictions_for_histories(
        self,
        times: ArrayLike,
        types: ArrayLike,
        histories: Sequence[int | None],
        targets: ArrayLike | None = None,
    ) -> list[BayesPredictions]:
        """``predictions`` for each history length in ``histories`` (None: all events), sharing
        the work that does not depend on it: the value-of-history curve of one sequence."""
        return [self.predictions(times, types, targets, h) for h in histories]

    @abstractmethod
    def gap_cdf(
        self,
        times: ArrayLike,
        types: ArrayLike,
        gaps: ArrayLike | None = None,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> np.ndarray:
        """P(gap of target i ≤ τ) at ``gaps`` ([m] or [m, G]; default the true gaps, which
        gives the PIT values [m]). Targets may include n (after the history) when ``gaps`` is
        given."""

    @abstractmethod
    def gap_quantiles(
        self,
        times: ArrayLike,
        types: ArrayLike,
        levels: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> np.ndarray:
        """Gaps [m, Q] at quantile ``levels`` [Q] of each target's gap (targets may include
        n)."""

    @abstractmethod
    def continuations(
        self,
        times: ArrayLike,
        types: ArrayLike,
        rng: np.random.Generator,
        samples: int,
        steps: int | None = None,
        until: float | None = None,
    ) -> ContinuationSamples:
        """``samples`` draws of what follows the history (all of ``times``/``types``), for
        ``steps`` events or until the absolute time ``until`` (whichever comes first)."""

    def _true_gaps(self, times: ArrayLike, targets: ArrayLike | None) -> np.ndarray:
        t = np.asarray(times, dtype=np.float64)
        idx = target_indices(targets, t.size, t.size - 1)
        return t[idx] - t[idx - 1]
