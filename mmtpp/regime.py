"""A marked Hawkes process modulated by a hidden Markov regime: its parameters and simulation.
Its exact Bayes-optimal predictor, the forward filter, is ``mmtpp.regime_filter``.

A hidden regime z(t) ∈ {0..R−1} follows a continuous-time Markov chain with generator Q
(``switch``); the process starts at t = 0 with an empty history and z(0) drawn from the
chain's stationary distribution ν. The intensity of type k in regime z is

    λ_{z,k}(t) = μ_z·π_{z,k} + e_k(t),     e_k(t) = Σ_{t_j < t} α[k, k_j]·β·e^{−β(t − t_j)}

so regimes differ in their base (immigrant) rate μ_z and type mix π_z, while the excitation
e(t) — ``mmtpp.hawkes``'s exponential kernel, one β, branching matrix α — is the same in every
regime. A short window says little about which regime holds; a long history says more.

Why a reversible Q: the filter's closed forms need real eigenvalues, and the natural choice —
leave regime z at rate q_z and jump to one of the others uniformly — is reversible for any q
(ν_z ∝ 1/q_z), so it costs nothing in modelling freedom that matters here. ``Modes`` holds the
decomposition of Q − diag(μ) that the filter uses, computed once per parameter set.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mmtpp.hawkes import HawkesParams, initial_excitation, stopping_rule


@dataclass(frozen=True)
class RegimeParams:
    """μ [R] (base rate per regime), mix π [R, K] (immigrant type mix per regime, rows sum to
    1), switch Q [R, R] (generator of the regime chain: off-diagonal rates ≥ 0, rows sum to 0,
    irreducible and reversible), α [K, K] and β (the regime-independent excitation, as in
    ``HawkesParams``)."""

    mu: list[float]
    mix: list[list[float]]
    switch: list[list[float]]
    alpha: list[list[float]]
    beta: float

    def __post_init__(self) -> None:
        mu = np.asarray(self.mu, dtype=float)
        mix = np.asarray(self.mix, dtype=float)
        q = np.asarray(self.switch, dtype=float)
        r = mu.size
        if mu.ndim != 1 or r < 1 or not np.all(np.isfinite(mu)) or np.any(mu <= 0):
            raise ValueError(f"regime: mu must be a non-empty list of rates > 0, got {self.mu}")
        if mix.ndim != 2 or mix.shape[0] != r or mix.shape[1] < 1:
            raise ValueError(
                f"regime: mix must be an {r}xK matrix (one row per regime in mu), got shape "
                f"{mix.shape}"
            )
        if not np.all(np.isfinite(mix)) or np.any(mix < 0):
            raise ValueError(f"regime: mix must hold finite values >= 0, got {self.mix}")
        if np.any(np.abs(mix.sum(axis=1) - 1) > 1e-6):
            raise ValueError(f"regime: every row of mix must sum to 1, got {mix.sum(axis=1)}")
        k = mix.shape[1]
        try:  # the excitation is a Hawkes process's: the same checks
            HawkesParams(mu=[1.0] * k, alpha=self.alpha, beta=self.beta)
        except ValueError as err:
            raise ValueError(str(err).replace("hawkes:", "regime:", 1)) from None
        if q.shape != (r, r) or not np.all(np.isfinite(q)):
            raise ValueError(f"regime: switch must be a finite {r}x{r} matrix, got {q.shape}")
        off = q - np.diag(np.diag(q))
        scale = max(float(np.abs(q).max()), 1e-300)
        if np.any(off < 0) or np.any(np.abs(q.sum(axis=1)) > 1e-6 * scale):
            raise ValueError(
                "regime: switch must be a generator (off-diagonal rates >= 0, rows summing to "
                f"0), got {self.switch}"
            )
        if r > 1:
            reach = (off > 0) | np.eye(r, dtype=bool)
            for _ in range(r):
                reach = reach | ((reach.astype(int) @ reach.astype(int)) > 0)
            if not reach.all():
                raise ValueError(
                    f"regime: switch must be irreducible (every regime reachable), got {q}"
                )
            nu = _stationary(q)
            flow = nu[:, None] * q
            # to 1e-6 relative, so that rates rounded in a YAML file still pass (the filter
            # symmetrises what is left)
            if np.abs(flow - flow.T).max() > 1e-6 * max(float(np.abs(flow).max()), 1e-300):
                raise ValueError(
                    "regime: switch must be reversible (ν_z·Q[z, z'] = ν_z'·Q[z', z]) so that "
                    "the filter's closed forms have real decay rates; e.g. leave each regime at "
                    "its own rate and jump to the others uniformly (uniform_switching)"
                )

    @property
    def num_regimes(self) -> int:
        return len(self.mu)

    @property
    def num_types(self) -> int:
        return len(self.mix[0])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """(μ [R], π [R, K], Q [R, R], α [K, K], β) as numpy values."""
        return (
            np.asarray(self.mu, float),
            np.asarray(self.mix, float),
            np.asarray(self.switch, float),
            np.asarray(self.alpha, float),
            float(self.beta),
        )

    def base_rates(self) -> np.ndarray:
        """m [R, K]: the immigrant rate of type k in regime z, μ_z·π_{z,k}."""
        mu, mix, _, _, _ = self.arrays()
        return mu[:, None] * mix

    def stationary(self) -> np.ndarray:
        """ν [R]: the regime chain's stationary distribution (ν·Q = 0)."""
        return _stationary(np.asarray(self.switch, float))

    def event_rates(self) -> np.ndarray:
        """r [R, K]: events of type k per unit time in regime z if it lasted forever,
        (I − α)⁻¹·μ_z·π_z (immigrants and all their descendants)."""
        _, _, _, alpha, _ = self.arrays()
        return np.linalg.solve(np.eye(self.num_types) - alpha, self.base_rates().T).T

    def mean_dwell_events(self) -> np.ndarray:
        """Mean events per visit of each regime [R]: its event rate over its leave rate (inf
        with one regime)."""
        leave = -np.diag(np.asarray(self.switch, float))
        with np.errstate(divide="ignore"):
            return np.where(leave > 0, self.event_rates().sum(axis=1) / leave, np.inf)

    @property
    def spectral_radius(self) -> float:
        return float(np.max(np.abs(np.linalg.eigvals(np.asarray(self.alpha, float)))))

    @functools.cached_property
    def modes(self) -> Modes:
        return _modes(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegimeParams:
        keys = {"mu", "mix", "switch", "alpha", "beta"}
        unknown, missing = set(data) - keys, keys - set(data)
        if unknown or missing:
            raise ValueError(
                f"regime: expected keys mu, mix, switch, alpha, beta; missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}"
            )
        return cls(
            mu=[float(m) for m in data["mu"]],
            mix=[[float(x) for x in row] for row in data["mix"]],
            switch=[[float(x) for x in row] for row in data["switch"]],
            alpha=[[float(a) for a in row] for row in data["alpha"]],
            beta=float(data["beta"]),
        )

    @classmethod
    def from_hawkes(cls, params: HawkesParams) -> RegimeParams:
        """The one-regime process equal to a plain Hawkes process: μ_0 = Σμ, π_0 = μ/Σμ."""
        mu, alpha, beta = params.arrays()
        total = float(mu.sum())
        mix = [(mu / total).tolist()]
        return cls(mu=[total], mix=mix, switch=[[0.0]], alpha=alpha.tolist(), beta=beta)


def uniform_switching(leave: ArrayLike) -> list[list[float]]:
    """Q [R, R] that leaves regime z at rate ``leave[z]`` and jumps to each other regime with
    equal probability: reversible for any rates, with ν_z ∝ 1/leave[z]."""
    q = np.asarray(leave, dtype=float)
    r = q.size
    if r == 1:
        return [[0.0]]
    out = np.repeat(q[:, None] / (r - 1), r, axis=1)
    np.fill_diagonal(out, -q)
    return out.tolist()


def _stationary(q: np.ndarray) -> np.ndarray:
    r = q.shape[0]
    system = np.vstack([q.T, np.ones(r)])
    rhs = np.r_[np.zeros(r), 1.0]
    nu = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return np.clip(nu, 0.0, None) / np.clip(nu, 0.0, None).sum()


@dataclass(frozen=True)
class Modes:
    """What the filter needs, computed once per parameter set: A = Q − diag(μ) =
    right·diag(−γ)·left with γ ascending (all > 0); ``ones`` = left·1, ``mix_coef`` =
    left·diag(μ)·π [R, K], ``rate_coef`` = left·μ [R]; ν [R], the base rates m [R, K] and the
    stationary event rates r [R, K]."""

    gamma: np.ndarray
    right: np.ndarray
    left: np.ndarray
    ones: np.ndarray
    mix_coef: np.ndarray
    rate_coef: np.ndarray
    nu: np.ndarray
    base: np.ndarray
    event_rates: np.ndarray

    def transitions(self, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """e^{A·τ} for each gap [n] as e^{−γ_1 τ} · T [n, R, R]: (T, −γ_1 τ). The slowest decay
        is factored out so that long gaps do not underflow (the filter normalises anyway)."""
        d = np.exp(-(self.gamma - self.gamma[0]) * gaps[:, None])
        return np.einsum("ir,nr,rj->nij", self.right, d, self.left), -self.gamma[0] * gaps


def _modes(params: RegimeParams) -> Modes:
    mu, _, q, _, _ = params.arrays()
    nu = params.stationary()
    root = np.sqrt(nu)
    a = q - np.diag(mu)
    sym = root[:, None] * a / root[None, :]
    sym = 0.5 * (sym + sym.T)  # symmetric in exact arithmetic (reversibility)
    eig, u = np.linalg.eigh(sym)
    order = np.argsort(-eig)  # slowest decay first
    gamma, u = -eig[order], u[:, order]
    right = u / root[:, None]
    left = u.T * root[None, :]
    base = params.base_rates()
    rates = params.event_rates()
    return Modes(gamma, right, left, left.sum(axis=1), left @ base, left @ mu, nu, base, rates)


def _initial_regime(params: RegimeParams, rng: np.random.Generator, regime: int | None) -> int:
    """The regime a simulation starts in: ``regime``, checked, or a draw from ν."""
    r_regimes = params.num_regimes
    if regime is None:
        z = int(np.searchsorted(np.cumsum(params.stationary()), rng.random(), side="right"))
        return min(z, r_regimes - 1)
    if not 0 <= int(regime) < r_regimes:
        raise ValueError(f"simulate: regime must be in 0..{r_regimes - 1}, got {regime}")
    return int(regime)


def simulate(
    params: RegimeParams,
    rng: np.random.Generator,
    num_events: int | None = None,
    t_end: float | None = None,
    *,
    start: float = 0.0,
    regime: int | None = None,
    excitation: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact thinning with the regime path → (times float64 [n], types int64 [n], regime of
    each event int64 [n]).

    From an empty history at ``start`` with the regime drawn from ν (or ``regime``; and
    ``excitation`` S [K] to continue a history). Stops after ``num_events`` events or at
    ``t_end``. A regime switch is one more competing point process (rate q_z = −Q[z, z],
    constant between points), so one bound μ_z + ΣS + q_z covers events and switches: a
    proposal is an event of type k, a switch, or rejected, in proportion to λ_{z,k}, q_z and
    the rest. Python floats, as ``mmtpp.hawkes.simulate`` (~1 µs per proposal).
    """
    limit, horizon = stopping_rule(num_events, t_end)
    _, _, q, alpha, beta = params.arrays()
    k_types, r_regimes = params.num_types, params.num_regimes
    base = params.base_rates().tolist()
    mu_l = np.asarray(params.mu, float).tolist()
    leave = (-np.diag(q)).tolist()
    off = (q - np.diag(np.diag(q))).tolist()
    jumps = (alpha * beta).T.tolist()
    z = _initial_regime(params, rng, regime)
    state = initial_excitation(excitation, k_types)
    times: list[float] = []
    types: list[int] = []
    regimes: list[int] = []
    t = float(start)
    batch = 8192
    pos = batch
    while len(times) < limit:
        if pos == batch:
            exps = rng.standard_exponential(batch)
            unif = rng.random(batch)
            pos = 0
        bound = mu_l[z] + sum(state) + leave[z]
        w = exps[pos] / bound
        u = unif[pos] * bound
        pos += 1
        t += w
        if t > horizon:
            break
        decay = math.exp(-beta * w)
        state = [s * decay for s in state]
        # u is uniform on [0, bound): where it falls among the cumulative rates of the K
        # types, then of the switches to each other regime, picks what happens.
        acc = 0.0
        row = base[z]
        for k in range(k_types):
            acc += row[k] + state[k]
            if u < acc:
                times.append(t)
                types.append(k)
                regimes.append(z)
                state = [s + j for s, j in zip(state, jumps[k], strict=True)]
                break
        else:
            for target in range(r_regimes):
                acc += off[z][target]
                if u < acc:
                    z = target
                    break
    return (
        np.asarray(times, dtype=np.float64),
        np.asarray(types, dtype=np.int64),
        np.asarray(regimes, dtype=np.int64),
    )


def sample_continuations(
    params: RegimeParams,
    rng: np.random.Generator,
    samples: int,
    start: float,
    probs: ArrayLike,
    excitation: ArrayLike,
    steps: int | None = None,
    until: float | None = None,
    max_events: int = 100_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``samples`` independent continuations of one history, vectorised over samples.

    The history ends at ``start`` with filtered regime probabilities ``probs`` [R] and
    excitation ``excitation`` [K] (right after its last event); each sample draws its regime
    from ``probs`` and runs the same thinning as ``simulate``. Stops after ``steps`` events
    or at absolute time ``until`` (at least one; a sample past ``max_events`` is an error).
    Returns (times [S, W] NaN-padded, types [S, W] −1-padded, counts [S]).
    """
    if steps is None and until is None:
        raise ValueError("continuations: give steps, until or both")
    if steps is not None and steps < 0:
        raise ValueError(f"continuations: steps must be >= 0, got {steps}")
    if until is not None and not until >= start:
        raise ValueError(f"continuations: until={until} lies before the last event ({start})")
    if samples < 1:
        raise ValueError(f"continuations: samples must be >= 1, got {samples}")
    mu, _, q, alpha, beta = params.arrays()
    base = params.base_rates()
    leave = -np.diag(q)
    off_cum = np.cumsum(q - np.diag(np.diag(q)), axis=1)
    jumps = (alpha * beta).T
    p = np.clip(np.asarray(probs, dtype=float), 0.0, None)
    z = rng.choice(params.num_regimes, size=samples, p=p / p.sum())
    state = np.tile(np.asarray(excitation, dtype=float), (samples, 1))
    t = np.full(samples, float(start))
    cap = max_events if steps is None else int(steps)
    width = max(1, min(cap, 16))
    times = np.full((samples, width), np.nan)
    types = np.full((samples, width), -1, dtype=np.int64)
    counts = np.zeros(samples, dtype=np.int64)
    active = np.arange(samples) if cap > 0 else np.arange(0)
    horizon = math.inf if until is None else float(until)
    while active.size:
        za = z[active]
        bound = mu[za] + state[active].sum(axis=1) + leave[za]
        w = rng.standard_exponential(active.size) / bound
        u = rng.random(active.size) * bound
        t[active] += w
        inside = t[active] <= horizon
        active, za, w, u = active[inside], za[inside], w[inside], u[inside]
        state[active] *= np.exp(-beta * w)[:, None]
        cum = np.cumsum(base[za] + state[active], axis=1)
        total = cum[:, -1]
        event = u < total
        hit = active[event]
        kind = (u[event, None] >= cum[event]).sum(axis=1)
        if hit.size and counts[hit].max() >= width:  # counts < cap, so width < cap here
            grow = min(2 * width, cap) - width
            times = np.pad(times, ((0, 0), (0, grow)), constant_values=np.nan)
            types = np.pad(types, ((0, 0), (0, grow)), constant_values=-1)
            width += grow
        times[hit, counts[hit]] = t[hit]
        types[hit, counts[hit]] = kind
        counts[hit] += 1
        state[hit] += jumps[kind]
        move = ~event & (u < total + leave[za])
        if move.any():
            v = (u - total)[move]
            z[active[move]] = (v[:, None] >= off_cum[za[move]]).sum(axis=1)
        if steps is None and hit.size and counts[hit].max() >= max_events:
            raise ValueError(
                f"continuations: a sample reached max_events={max_events} before until={until}"
            )
        active = active[counts[active] < cap]
    used = int(counts.max()) if samples else 0
    return times[:, :used], types[:, :used], counts
