"""The exact Bayes-optimal predictor of a synthetic dataset's true process, behind one interface.

A synthetic dataset records its true process in ``dataset.json`` (``info.source``): ``"hawkes"``
(``mmtpp.hawkes``), ``"regime"`` (``mmtpp.regime``, filtered by ``mmtpp.regime_filter``) or
``"profile"`` (``mmtpp.profile``, whose posterior is ``mmtpp.profile_posterior``).
``oracle_from_source`` turns any of them into an ``Oracle`` (the interface, in ``mmtpp.bayes``;
``oracle_for`` does the same from the parameters), which answers for one sequence (times,
types) and target indices — target i is event i predicted from events < i, or from only the
last ``history`` of them:

- ``predictions``: the ``BayesPredictions`` (mean and median gap, type probabilities, time,
  type and joint NLL of the true next event); ``predict_next`` the first three for any target,
  the event after the history included;
- ``gap_cdf``: P(gap ≤ τ) (at the true gaps: the probability integral transform, PIT);
- ``gap_quantiles``: the gaps at given levels (intervals, coverage, CRPS): the CDF at them is
  the level to ~1e-15 (safeguarded Newton on the closed-form survival function);
- ``continuations``: samples of the true process continued after a history, with the
  generator's parameters — the reference a perfect model's multi-step forecasts would match.
  For the profile process the parameters that matter are the sequence's own, which the oracle
  does not know: each sample draws them from their posterior given the history.

A plain Hawkes process is the one-regime case of the regime process; its oracle uses
``mmtpp.hawkes``'s own closed forms (CDF 1 − e^{−Λ(τ)}), and tests check the two agree.
The profile oracle knows the priors, not a sequence's draws: it is the posterior predictive,
the limit for a model that learns each sequence from its events (and ``image_predictions``,
the limit for one that also reads every image's hint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mmtpp import hawkes, profile_posterior, regime, regime_filter
from mmtpp.bayes import BayesPredictions, ContinuationSamples, Oracle
from mmtpp.hawkes import HawkesParams
from mmtpp.profile import ProfileParams
from mmtpp.regime import RegimeParams


class HawkesOracle(Oracle):
    """The oracle of a plain multivariate Hawkes process (``mmtpp.hawkes``)."""

    kind = "hawkes"

    def __init__(self, params: HawkesParams) -> None:
        self.params = params
        self.num_types = params.num_types

    def predictions(
        self,
        times: ArrayLike,
        types: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> BayesPredictions:
        return hawkes.bayes_predictions(self.params, times, types, history, targets)

    def predict_next(
        self,
        times: ArrayLike,
        types: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        state = hawkes.excitation_before(self.params, times, types, targets, history)
        return hawkes.predict_next(self.params, state)

    def gap_cdf(
        self,
        times: ArrayLike,
        types: ArrayLike,
        gaps: ArrayLike | None = None,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> np.ndarray:
        if gaps is None:
            gaps = self._true_gaps(times, targets)
        state = hawkes.excitation_before(self.params, times, types, targets, history)
        return hawkes.gap_cdf(self.params, state, gaps)

    def gap_quantiles(
        self,
        times: ArrayLike,
        types: ArrayLike,
        levels: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> np.ndarray:
        state = hawkes.excitation_before(self.params, times, types, targets, history)
        return hawkes.gap_quantiles(self.params, state, levels)

    def continuations(
        self,
        times: ArrayLike,
        types: ArrayLike,
        rng: np.random.Generator,
        samples: int,
        steps: int | None = None,
        until: float | None = None,
    ) -> ContinuationSamples:
        t = np.asarray(times, dtype=np.float64)
        state = (
            hawkes.excitation_before(self.params, t, types, [t.size])[0]
            if t.size
            else np.zeros(self.num_types)
        )
        # the one-regime process is this Hawkes process: one vectorised sampler for both
        as_regime = RegimeParams.from_hawkes(self.params)
        start = float(t[-1]) if t.size else 0.0
        drawn = regime.sample_continuations(
            as_regime, rng, samples, start, [1.0], state, steps, until
        )
        return ContinuationSamples(start, *drawn)


class PosteriorOracle(Oracle):
    """An oracle whose next-event law for each target is an object with ``cdf(gaps)`` and
    ``quantiles(levels)`` (``regime_filter.NextEvent``, ``profile_posterior.NextEvent``)."""

    def _next_event(self, times: ArrayLike, types: ArrayLike, targets, history):
        raise NotImplementedError

    def gap_cdf(
        self,
        times: ArrayLike,
        types: ArrayLike,
        gaps: ArrayLike | None = None,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> np.ndarray:
        if gaps is None:
            gaps = self._true_gaps(times, targets)
        return self._next_event(times, types, targets, history).cdf(gaps)

    def gap_quantiles(
        self,
        times: ArrayLike,
        types: ArrayLike,
        levels: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> np.ndarray:
        return self._next_event(times, types, targets, history).quantiles(levels)


class RegimeOracle(PosteriorOracle):
    """The oracle of the regime-modulated Hawkes process (``mmtpp.regime``): forward filter."""

    kind = "regime"

    def _next_event(self, times, types, targets, history):
        return regime_filter.next_event(self.params, times, types, targets, history)

    def __init__(self, params: RegimeParams) -> None:
        self.params = params
        self.num_types = params.num_types

    def predictions(
        self,
        times: ArrayLike,
        types: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> BayesPredictions:
        return regime_filter.bayes_predictions(self.params, times, types, history, targets)

    def predict_next(
        self,
        times: ArrayLike,
        types: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ev = regime_filter.next_event(self.params, times, types, targets, history)
        return ev.mean_gap(), ev.quantiles([0.5])[:, 0], ev.type_probs()

    def predictions_for_histories(
        self,
        times: ArrayLike,
        types: ArrayLike,
        histories: Sequence[int | None],
        targets: ArrayLike | None = None,
    ) -> list[BayesPredictions]:
        run = regime_filter.filter_pass(self.params, times, types)
        return [
            regime_filter.bayes_predictions(self.params, times, types, h, targets, run)
            for h in histories
        ]

    def continuations(
        self,
        times: ArrayLike,
        types: ArrayLike,
        rng: np.random.Generator,
        samples: int,
        steps: int | None = None,
        until: float | None = None,
    ) -> ContinuationSamples:
        t = np.asarray(times, dtype=np.float64)
        if t.size:
            probs, state = regime_filter.filtered_states(self.params, t, types, [t.size])
            probs, state, start = probs[0], state[0], float(t[-1])
        else:
            probs, state, start = self.params.stationary(), np.zeros(self.num_types), 0.0
        drawn = regime.sample_continuations(
            self.params, rng, samples, start, probs, state, steps, until
        )
        return ContinuationSamples(start, *drawn)


class ProfileOracle(PosteriorOracle):
    """The oracle of the profile process (``mmtpp.profile``): the posterior predictive of each
    sequence's own transition matrix and gap rates, in closed form."""

    kind = "profile"

    def _next_event(self, times, types, targets, history):
        return profile_posterior.next_event(self.params, times, types, targets, history)

    def __init__(self, params: ProfileParams) -> None:
        self.params = params
        self.num_types = params.num_types

    def predictions(
        self,
        times: ArrayLike,
        types: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> BayesPredictions:
        return profile_posterior.bayes_predictions(self.params, times, types, history, targets)

    def image_predictions(
        self,
        times: ArrayLike,
        types: ArrayLike,
        shown: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> BayesPredictions:
        """``predictions`` of a perfect reader of the images: it also knows the hint
        ``shown`` [n] of every event's image (``mmtpp.sources.synthetic.sequence_profile``)."""
        return profile_posterior.bayes_predictions(
            self.params, times, types, history, targets, shown
        )

    def image_predictions_for_histories(
        self,
        times: ArrayLike,
        types: ArrayLike,
        shown: ArrayLike,
        histories: Sequence[int | None],
        targets: ArrayLike | None = None,
    ) -> list[BayesPredictions]:
        """``image_predictions`` for each history length (one tally of the sequence)."""
        run = profile_posterior.tally(self.params, times, types, shown)
        return [
            profile_posterior.bayes_predictions(self.params, times, types, h, targets, run=run)
            for h in histories
        ]

    def predict_next(
        self,
        times: ArrayLike,
        types: ArrayLike,
        targets: ArrayLike | None = None,
        history: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ev = profile_posterior.next_event(self.params, times, types, targets, history)
        return ev.mean_gap(), ev.median_gap(), ev.type_probs()

    def predictions_for_histories(
        self,
        times: ArrayLike,
        types: ArrayLike,
        histories: Sequence[int | None],
        targets: ArrayLike | None = None,
    ) -> list[BayesPredictions]:
        run = profile_posterior.tally(self.params, times, types)
        return [
            profile_posterior.bayes_predictions(self.params, times, types, h, targets, run=run)
            for h in histories
        ]

    def continuations(
        self,
        times: ArrayLike,
        types: ArrayLike,
        rng: np.random.Generator,
        samples: int,
        steps: int | None = None,
        until: float | None = None,
    ) -> ContinuationSamples:
        return ContinuationSamples(
            *profile_posterior.sample_continuations(
                self.params, rng, samples, times, types, steps, until
            )
        )


def oracle_from_source(source: Mapping[str, Any]) -> Oracle | None:
    """The oracle of a dataset's ``info.source``: its ``"profile"``, ``"regime"`` or
    ``"hawkes"`` parameters (a synthetic dataset has one of them), or None when none is there
    (real data)."""
    if source.get("profile"):
        return ProfileOracle(ProfileParams.from_dict(source["profile"]))
    if source.get("regime"):
        return RegimeOracle(RegimeParams.from_dict(source["regime"]))
    if source.get("hawkes"):
        return HawkesOracle(HawkesParams.from_dict(source["hawkes"]))
    return None


def oracle_for(params: HawkesParams | RegimeParams | ProfileParams | Oracle) -> Oracle:
    """The oracle of a process given by its parameters (an oracle is returned as it is)."""
    if isinstance(params, Oracle):
        return params
    if isinstance(params, ProfileParams):
        return ProfileOracle(params)
    return RegimeOracle(params) if isinstance(params, RegimeParams) else HawkesOracle(params)
