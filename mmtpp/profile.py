"""A process whose every sequence has its own "profile" — a type-transition matrix and per-type
gap rates drawn once per sequence from conjugate priors — and how it is drawn and simulated.
Its exact Bayes-optimal predictor, the posterior predictive, is ``mmtpp.profile_posterior``.

The value of a long history here is learning ~K² + K sequence-specific parameters: after a
dozen events each row and rate has been seen once or twice, after hundreds of events dozens of
times. Conjugate priors make the predictor given any window of events exact and closed-form.

**Generative model** (K types; rates per unit of the dataset's time). Per sequence:

    f_k ~ Uniform{0..K−1}                  the favourite next type after type k
    P_k ~ Dirichlet(α·1 + κ·e_{f_k})       the law of the next type after type k
    λ_k ~ Gamma(a, b)  (shape a, rate b)   the gap rate after type k

then k_0 ~ Uniform{0..K−1} at t_0 = 0 and, for i ≥ 1, independently given k_{i−1}:
k_i ~ P_{k_{i−1}} and τ_i = t_i − t_{i−1} ~ Gamma(s, λ_{k_{i−1}}) (shape s, rate λ; s = 1:
exponential). Event i's image shows the hint h_i = f_{k_i} — which type tends to follow an event
of its own type in this sequence — except for a fraction ε of the images, which show one of the
other K − 1 types uniformly.

Why a favourite inside each row's prior: the images can then show a parameter of the model
(f_k) with a known noise, and a reader of the images stays exact and closed-form (ρ^{N_j} in
``mmtpp.profile_posterior``); with κ = 0 the rows are plain Dirichlet(α·1) and the hints carry
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class ProfileParams:
    """The priors of the profile process (module docstring): K types, the Dirichlet weight α of
    every next type plus κ on each row's favourite, the Gamma(a, b) prior of every gap rate (b,
    in the dataset's time unit, acts as time already watched: the posterior's is b + the sum of
    the gaps seen), the gaps' shape s and the fraction ε of images whose hint is another type
    than the favourite."""

    num_types: int
    concentration: float
    favourite_weight: float
    rate_shape: float
    rate_time: float
    gap_shape: float
    image_noise: float

    def __post_init__(self) -> None:
        k = self.num_types
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(f"profile: num_types must be an integer >= 2, got {k!r}")
        for name in ("rate_time", "gap_shape"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"profile: {name} must be a finite number > 0, got {value}")
        if not (math.isfinite(self.concentration) and self.concentration >= 0.01):
            raise ValueError(
                "profile: concentration must be a finite number >= 0.01 (below it all the gamma "
                f"draws of a row can underflow to 0), got {self.concentration}"
            )
        if not (math.isfinite(self.favourite_weight) and self.favourite_weight >= 0):
            raise ValueError(
                f"profile: favourite_weight must be a finite number >= 0, got "
                f"{self.favourite_weight}"
            )
        if not (math.isfinite(self.rate_shape) and self.rate_shape > 1):
            raise ValueError(
                f"profile: rate_shape must be > 1 so that every predicted mean gap is finite, "
                f"got {self.rate_shape}"
            )
        if not 0 <= self.image_noise <= 1:
            raise ValueError(f"profile: image_noise must be in [0, 1], got {self.image_noise}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileParams:
        keys = set(cls.__dataclass_fields__)
        unknown, missing = set(data) - keys, keys - set(data)
        if unknown or missing:
            raise ValueError(
                f"profile: expected keys {', '.join(sorted(keys))}; missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}"
            )
        return cls(
            num_types=int(data["num_types"]),
            **{name: float(data[name]) for name in keys - {"num_types"}},
        )


@dataclass(frozen=True)
class SequenceProfile:
    """One sequence's draws: ``favourites`` f [K] (int64), ``transitions`` P [K, K] (rows sum to
    1) and ``rates`` λ [K]."""

    favourites: np.ndarray
    transitions: np.ndarray
    rates: np.ndarray


def draw_profile(params: ProfileParams, rng: np.random.Generator) -> SequenceProfile:
    """A sequence's profile from the priors: favourites, then each row, then the rates."""
    k = params.num_types
    favourites = rng.integers(0, k, size=k)
    conc = np.full((k, k), params.concentration)
    conc[np.arange(k), favourites] += params.favourite_weight
    transitions = np.stack([rng.dirichlet(row) for row in conc])
    rates = rng.gamma(params.rate_shape, 1.0 / params.rate_time, size=k)
    return SequenceProfile(favourites, transitions, rates)


def simulate(
    params: ProfileParams,
    rng: np.random.Generator,
    num_events: int,
    profile: SequenceProfile | None = None,
) -> tuple[np.ndarray, np.ndarray, SequenceProfile]:
    """One sequence of ``num_events`` events → (times float64 [n], types int64 [n], profile).

    Exact: the profile (drawn from the priors unless given), then k_0 uniform at t_0 = 0, the
    chain of types (a Python walk with pre-drawn uniforms) and the gaps (vectorised, each after
    its previous event's type)."""
    if num_events < 0:
        raise ValueError(f"simulate: num_events must be >= 0, got {num_events}")
    if profile is None:
        profile = draw_profile(params, rng)
    n, k = int(num_events), params.num_types
    if n == 0:
        return np.empty(0), np.empty(0, np.int64), profile
    first = int(rng.integers(0, k))
    uniforms = rng.random(n - 1).tolist()
    cum = np.cumsum(profile.transitions, axis=1).tolist()
    types = [first]
    for u in uniforms:
        row, nxt = cum[types[-1]], 0
        while nxt < k - 1 and u >= row[nxt]:  # the first j with u < P_0 + … + P_j
            nxt += 1
        types.append(nxt)
    kinds = np.asarray(types, dtype=np.int64)
    gaps = rng.gamma(params.gap_shape, 1.0, size=n - 1) / profile.rates[kinds[:-1]]
    return np.r_[0.0, np.cumsum(gaps)], kinds, profile


def shown_hints(
    params: ProfileParams,
    profile: SequenceProfile,
    types: ArrayLike,
    rng: np.random.Generator,
) -> np.ndarray:
    """The hint each event's image shows (int64 [n]): its type's favourite, or for a fraction
    ``image_noise`` another type drawn uniformly."""
    k = np.asarray(types, dtype=np.int64)
    wrong = rng.random(k.size) < params.image_noise
    shift = rng.integers(1, params.num_types, size=k.size)
    true = profile.favourites[k]
    return np.where(wrong, (true + shift) % params.num_types, true).astype(np.int64)
