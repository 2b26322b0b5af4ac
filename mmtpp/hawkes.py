"""Multivariate Hawkes process with exponential kernels, and its Bayes-optimal predictor.

Intensity of type k (K types, one decay rate β shared by all pairs):

    λ_k(t) = μ_k + Σ_{t_j < t} α[k, k_j] · β · exp(−β (t − t_j))

so α[k, j] is the expected number of type-k children of a type-j event (the branching
matrix; stationary when its spectral radius is below 1). Between events the excitation
S_k(t) = λ_k(t) − μ_k decays by exp(−β·dt), which makes simulation, the likelihood and the
predictor O(n·K) with a recursion instead of O(n²).

For the next event after a history ending at t_last with excitation S (right after the last
event), with M = Σμ, s = ΣS, c = s/β and a = M/β:

    Λ(τ)      = M·τ + c·(1 − e^{−βτ})                      (compensator)
    E[τ]      = ₁F₁(1; a+1; −c) / M                         (conditional mean, minimises RMSE)
    P(type=k) = μ_k·E[τ] + S_k·₁F₁(1; a+2; −c) / (M + β)    (most probable type: argmax)
    median    = the τ with Λ(τ) = ln 2                       (minimises MAE)
    NLL(τ, k) = −log λ_k(τ) + Λ(τ)

(substitute y = e^{−βτ} in ∫ S(τ)dτ and apply Kummer's transformation). No model can beat
these on data the process generated: they bound what a learned predictor can reach.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import hyp1f1


@dataclass(frozen=True)
class HawkesParams:
    """μ [K] (per-type base rates), α [K, K] (α[k, j]: type-k children per type-j event), β."""

    mu: list[float]
    alpha: list[list[float]]
    beta: float

    def __post_init__(self) -> None:
        mu, alpha = np.asarray(self.mu, float), np.asarray(self.alpha, float)
        k = mu.size
        if k < 1 or mu.ndim != 1 or np.any(mu <= 0):
            raise ValueError(f"hawkes: mu must be a non-empty list of rates > 0, got {self.mu}")
        if alpha.shape != (k, k) or np.any(alpha < 0):
            raise ValueError(f"hawkes: alpha must be a {k}x{k} matrix of values >= 0")
        if self.beta <= 0:
            raise ValueError(f"hawkes: beta must be > 0, got {self.beta}")
        radius = float(np.max(np.abs(np.linalg.eigvals(alpha))))
        if radius >= 1:
            raise ValueError(
                f"hawkes: spectral radius of alpha is {radius:.3f} >= 1 (the process explodes)"
            )

    @property
    def num_types(self) -> int:
        return len(self.mu)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, float]:
        return np.asarray(self.mu, float), np.asarray(self.alpha, float), float(self.beta)

    def stationary_rates(self) -> np.ndarray:
        """Mean events per unit time per type: (I − α)⁻¹ μ."""
        mu, alpha, _ = self.arrays()
        return np.linalg.solve(np.eye(self.num_types) - alpha, mu)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HawkesParams:
        return cls(mu=list(data["mu"]), alpha=[list(r) for r in data["alpha"]], beta=data["beta"])


def simulate(
    params: HawkesParams, num_events: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Ogata thinning: ``num_events`` events from an empty history → (times, types).

    The intensity only decays between events, so its current value bounds it until the next
    event: propose with that bound, accept with probability λ(t')/bound.
    """
    mu, alpha, beta = params.arrays()
    jump = alpha * beta  # column j: added excitation per type-j event
    excitation = np.zeros(params.num_types)
    total_mu = mu.sum()
    times = np.empty(num_events)
    types = np.empty(num_events, dtype=np.int64)
    t, n = 0.0, 0
    while n < num_events:
        bound = total_mu + excitation.sum()
        w = rng.exponential(1.0 / bound)
        t += w
        excitation *= np.exp(-beta * w)
        lam = mu + excitation
        if rng.random() * bound <= lam.sum():
            k = int(np.searchsorted(np.cumsum(lam), rng.random() * lam.sum(), side="right"))
            k = min(k, params.num_types - 1)
            times[n], types[n] = t, k
            excitation += jump[:, k]
            n += 1
    return times, types


def excitation_after_events(
    params: HawkesParams, times: np.ndarray, types: np.ndarray
) -> np.ndarray:
    """``S[i]`` [n, K]: excitation right after event i (its own jump included)."""
    _, alpha, beta = params.arrays()
    jump = alpha * beta
    n = len(times)
    out = np.empty((n, params.num_types))
    state = np.zeros(params.num_types)
    prev = times[0] if n else 0.0
    for i in range(n):
        state = state * np.exp(-beta * (times[i] - prev)) + jump[:, types[i]]
        out[i] = state
        prev = times[i]
    return out


def log_likelihood(
    params: HawkesParams, times: np.ndarray, types: np.ndarray, t_end: float | None = None
) -> float:
    """Exact log-likelihood of events on [0, t_end] (t_end defaults to the last time)."""
    mu, alpha, beta = params.arrays()
    times = np.asarray(times, float)
    types = np.asarray(types, int)
    t_end = float(times[-1]) if t_end is None else t_end
    after = excitation_after_events(params, times, types)
    before = np.zeros_like(after)
    if len(times) > 1:
        before[1:] = after[:-1] * np.exp(-beta * np.diff(times))[:, None]
    lam = mu[types] + before[np.arange(len(times)), types]
    compensator = mu.sum() * t_end + alpha[:, types].sum(axis=0) @ (
        1 - np.exp(-beta * (t_end - times))
    )
    return float(np.log(lam).sum() - compensator)


@dataclass(frozen=True)
class BayesPredictions:
    """Predictions of event i from events < i, for i = 1..n−1 (arrays of length n−1)."""

    mean_gap: np.ndarray
    median_gap: np.ndarray
    type_probs: np.ndarray  # [n−1, K]
    nll: np.ndarray  # −log density of the true (gap, type)
    nll_time: np.ndarray  # −log density of the true gap alone

    @property
    def most_probable_type(self) -> np.ndarray:
        return self.type_probs.argmax(axis=1)


def predict_next(
    params: HawkesParams, excitation: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean gap, median gap and type probabilities given the excitation right after the last
    event (``[m, K]`` for m histories at once)."""
    mu, _, beta = params.arrays()
    excitation = np.atleast_2d(excitation)
    big_m = mu.sum()
    c = excitation.sum(axis=1) / beta
    a = big_m / beta
    mean = hyp1f1(1.0, a + 1.0, -c) / big_m
    second = hyp1f1(1.0, a + 2.0, -c) / (big_m + beta)
    probs = mu[None, :] * mean[:, None] + excitation * second[:, None]
    probs /= probs.sum(axis=1, keepdims=True)  # exact up to rounding
    lo, hi = np.zeros_like(c), np.full_like(c, np.log(2) / big_m)
    for _ in range(64):  # Λ is increasing: bisection, vectorised over histories
        mid = 0.5 * (lo + hi)
        above = big_m * mid + c * (1 - np.exp(-beta * mid)) > np.log(2)
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return mean, 0.5 * (lo + hi), probs


def bayes_predictions(
    params: HawkesParams, times: np.ndarray, types: np.ndarray
) -> BayesPredictions:
    """The Bayes-optimal prediction of every event from its full history."""
    mu, _, beta = params.arrays()
    times = np.asarray(times, float)
    types = np.asarray(types, int)
    after = excitation_after_events(params, times, types)[:-1]
    mean, median, probs = predict_next(params, after)
    gaps = np.diff(times)
    decayed = after * np.exp(-beta * gaps)[:, None]
    lam_k = mu[types[1:]] + decayed[np.arange(len(gaps)), types[1:]]
    lam = mu.sum() + decayed.sum(axis=1)
    compensator = mu.sum() * gaps + after.sum(axis=1) / beta * (1 - np.exp(-beta * gaps))
    return BayesPredictions(
        mean_gap=mean,
        median_gap=median,
        type_probs=probs,
        nll=-np.log(lam_k) + compensator,
        nll_time=-np.log(lam) + compensator,
    )
