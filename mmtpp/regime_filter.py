"""The exact Bayes-optimal predictor of the regime-modulated Hawkes process
(``mmtpp.regime``), by forward filtering over the hidden regime.

**Filter.** Let p (a row over regimes) be P(z | events up to the last one) right after the
last event, S its excitation (K values) and c = ΣS/β. With A = Q − diag(μ),

    P(no event in the next τ, z(τ) = z') = [p·e^{Aτ}]_{z'} · G(τ),   G(τ) = e^{−c(1 − e^{−βτ})}

(the chain moves while each regime is "killed" at its base rate; the excitation's share of
the hazard is one factor common to all regimes). An event of type k after a gap τ therefore
has density f(τ, k) = [p·e^{Aτ}]·λ_{·,k}(τ)·G(τ), and the filter's update is
p' ∝ [p·e^{Aτ}] ∘ λ_{·,k}(τ). A reversible Q (ν_z·Q_{zz'} = ν_{z'}·Q_{z'z}) makes
D^{1/2}·A·D^{−1/2} symmetric (D = diag ν), so A = V·diag(−γ)·V⁻¹ with real decay rates
γ_1 < … < γ_R, all > 0. With a = p·V, w = a ∘ (V⁻¹·1) (Σw = 1) and C = V⁻¹·diag(μ)·π:

    survival  S(τ)    = Σ_r w_r e^{−γ_r τ} · G(τ)
    density   f(τ, k) = (Σ_r a_r C_{rk} e^{−γ_r τ} + S_k e^{−βτ} Σ_r w_r e^{−γ_r τ}) · G(τ)
    mean      E[τ]    = Σ_r w_r ₁F₁(1; γ_r/β + 1; −c) / γ_r
    P(type = k)       = Σ_r a_r C_{rk} ₁F₁(1; γ_r/β + 1; −c) / γ_r
                        + S_k Σ_r w_r ₁F₁(1; γ_r/β + 2; −c) / (γ_r + β)

— each term is ``mmtpp.hawkes``'s closed form with the total base rate replaced by γ_r: the
next gap is a signed mixture of R single-regime Hawkes gaps. Quantiles (the median among
them) solve −log S(τ) = −log(1 − level) by safeguarded Newton steps (CDF error ~1e-16).
With R = 1 all of this is exactly ``mmtpp.hawkes``'s predictor.

**Value of history.** The same filter on only the last L events before a target: it starts
from ν at the first event it sees, weighted by that event's type under each regime's
stationary event-type rates r_z = (I − α)⁻¹·μ_z·π_z (the first event seen may be a child of
unseen events, so its regime evidence is its type's share of all events in the regime, not
of immigrants), and the excitation counts those L events only. When the history holds at
most L events it is the full filter. It is what a predictor that sees L events can reach —
a reachable level, not the exact optimum given L events (that would average over the unseen
earlier events' excitation; with β of several per minute they hardly matter), so the gap
between it and the full filter, if anything, overstates the value of older events.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import hyp1f1

from mmtpp.bayes import BayesPredictions, check_history, target_indices
from mmtpp.regime import RegimeParams

TINY = 1e-300  # floor for sums that are positive in exact arithmetic


@dataclass(frozen=True)
class FilterPass:
    """The forward filter over one sequence (n events), each event given the ones before.

    ``probs`` [n, R]: P(regime | events ≤ i) right after event i; ``excitation`` [n, K]: S
    right after event i; ``log_density`` [n]: log f(τ_i, k_i | events < i), the first event
    from the origin t = 0 (so Σ log_density is the log-likelihood up to the last event).
    ``times``, ``types`` and ``transitions`` (e^{A·τ_i} up to a scalar, [n, R, R]) are kept
    for windowed filters over the same sequence."""

    probs: np.ndarray
    excitation: np.ndarray
    log_density: np.ndarray
    times: np.ndarray
    types: np.ndarray
    transitions: np.ndarray


def _check_events(params: RegimeParams, times: ArrayLike, types: ArrayLike):
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    k = np.asarray(types).reshape(-1)
    if t.size != k.size:
        raise ValueError(f"regime: {t.size} times but {k.size} types")
    if t.size:
        if not np.all(np.isfinite(t)) or t[0] < 0 or np.any(np.diff(t) < 0):
            raise ValueError("regime: times must be finite, >= 0 (the origin) and sorted")
        if not np.issubdtype(k.dtype, np.integer) or k.min() < 0 or k.max() >= params.num_types:
            raise ValueError(f"regime: types must be integers in 0..{params.num_types - 1}")
    return t, k.astype(np.int64)


def _excitation_after(params: RegimeParams, t: np.ndarray, k: np.ndarray) -> np.ndarray:
    _, _, _, alpha, beta = params.arrays()
    out = np.empty((t.size, params.num_types))
    decay = np.exp(-beta * np.diff(t, prepend=t[0] if t.size else 0.0)).tolist()
    jumps = (alpha * beta).T[k]
    state = np.zeros(params.num_types)
    for i in range(t.size):
        state = state * decay[i] + jumps[i]
        out[i] = state
    return out


def filter_pass(params: RegimeParams, times: ArrayLike, types: ArrayLike) -> FilterPass:
    """Run the forward filter over all events of one sequence (O(n·R²), one walk)."""
    t, k = _check_events(params, times, types)
    beta, modes = params.beta, params.modes
    n, r = t.size, params.num_regimes
    after = _excitation_after(params, t, k)
    gaps = np.diff(t, prepend=0.0)
    before = np.zeros_like(after)
    before[1:] = after[:-1] * np.exp(-beta * gaps[1:])[:, None]
    c_prev = np.r_[0.0, after[:-1].sum(axis=1) / beta] if n else np.empty(0)
    lam = modes.base[:, k].T + before[np.arange(n), k][:, None]  # [n, R]
    trans, log_scale = modes.transitions(gaps)
    # e^{Aτ} of a sub-generator is entrywise ≥ 0: clip rounding so every step stays ≥ 0
    weighted = (np.maximum(trans, 0.0) * lam[:, None, :]).tolist()
    probs = np.empty((n, r))
    totals = np.empty(n)
    p = modes.nu.tolist()
    cols = range(r)
    for i in range(n):  # Python floats: several times faster than numpy on R×R matrices
        w = weighted[i]
        q = [sum(p[a] * w[a][b] for a in cols) for b in cols]
        total = sum(q)
        totals[i] = total
        p = [v / total for v in q] if total > 0 else q
        probs[i] = p
    log_density = np.log(np.maximum(totals, TINY)) + log_scale + c_prev * np.expm1(-beta * gaps)
    return FilterPass(probs, after, log_density, t, k, trans)


def _window_states(
    params: RegimeParams, run: FilterPass, idx: np.ndarray, history: int
) -> tuple[np.ndarray, np.ndarray]:
    """(probs [m, R], excitation [m, K]) right after event i−1 from events i−L..i−1 only, for
    targets i > L: lockstep over the L events, vectorised over targets."""
    modes, beta = params.modes, params.beta
    jumps = (np.asarray(params.alpha, float) * beta).T
    t, k = run.times, run.types
    rows = np.arange(idx.size)
    first = idx - history
    p = modes.nu[None, :] * modes.event_rates[:, k[first]].T
    p /= p.sum(axis=1, keepdims=True)
    state = jumps[k[first]].copy()
    fade = np.exp(-beta * np.diff(t, prepend=0.0))
    trans = np.maximum(run.transitions, 0.0)
    for step in range(1, history):
        e = first + step
        state *= fade[e][:, None]
        lam = modes.base[:, k[e]].T + state[rows, k[e]][:, None]
        p = (p[:, :, None] * trans[e]).sum(axis=1) * lam
        p /= np.maximum(p.sum(axis=1, keepdims=True), TINY)
        state += jumps[k[e]]
    return p, state


def filtered_states(
    params: RegimeParams,
    times: ArrayLike,
    types: ArrayLike,
    targets: ArrayLike | None = None,
    history: int | None = None,
    run: FilterPass | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(probs [m, R], excitation [m, K]) right after event i−1 for each target i (default
    1..n−1; n, the event after the history, is allowed), from all events before it or from the
    last ``history`` ones (see the module docstring). ``run`` reuses a ``filter_pass`` of the
    same events."""
    check_history(history)
    if run is None:
        run = filter_pass(params, times, types)
    idx = target_indices(targets, run.times.size, run.times.size)
    probs, state = run.probs[idx - 1], run.excitation[idx - 1]
    if history is not None:
        cut = idx > history
        if np.any(cut):
            probs, state = probs.copy(), state.copy()
            probs[cut], state[cut] = _window_states(params, run, idx[cut], int(history))
    return probs, state


def log_likelihood(
    params: RegimeParams, times: ArrayLike, types: ArrayLike, t_end: float | None = None
) -> float:
    """Exact log-likelihood of events on [0, t_end] (t_end defaults to the last time), the
    regime path summed out: Σ_i log f(τ_i, k_i | past) + log S(t_end − t_n | all events)."""
    t, k = _check_events(params, times, types)
    end = (float(t[-1]) if t.size else 0.0) if t_end is None else float(t_end)
    if t.size == 0:
        ev = NextEvent(params, params.modes.nu[None, :], np.zeros((1, params.num_types)))
        return float(ev.log_survival(np.array([end]))[0])
    run = filter_pass(params, t, k)
    ev = NextEvent(params, run.probs[-1:], run.excitation[-1:])
    return float(run.log_density.sum() + ev.log_survival(np.array([end - t[-1]]))[0])


# ---------------------------------------------------------------------------- next event


@dataclass(frozen=True)
class NextEvent:
    """The law of the next event after each of m histories, from the filtered regime
    probabilities ``probs`` [m, R] and the excitation ``excitation`` [m, K] right after the
    last event (closed forms of the module docstring)."""

    params: RegimeParams
    probs: np.ndarray
    excitation: np.ndarray

    @functools.cached_property
    def _terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        modes = self.params.modes
        a = np.asarray(self.probs, float) @ modes.right  # [m, R]
        w = a * modes.ones
        s = np.asarray(self.excitation, float).sum(axis=1)
        return a, w, s, s / self.params.beta

    def _mix(self, coef: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """Σ_r coef[m, r]·e^{−(γ_r − γ_1)τ} for τ [m] or [m, G]."""
        delta = self.params.modes.gamma - self.params.modes.gamma[0]
        if tau.ndim == 1:
            return (coef * np.exp(-np.multiply.outer(tau, delta))).sum(axis=-1)
        return (coef[:, None, :] * np.exp(-np.multiply.outer(tau, delta))).sum(axis=-1)

    def _col(self, v: np.ndarray, tau: np.ndarray) -> np.ndarray:
        return v if tau.ndim == 1 else v[:, None]

    def log_survival(self, gaps: ArrayLike) -> np.ndarray:
        """log P(next gap > τ) at ``gaps`` [m] or [m, G] (same shape)."""
        tau = np.asarray(gaps, dtype=float)
        _, w, _, c = self._terms
        g0 = self.params.modes.gamma[0]
        mixed = np.maximum(self._mix(w, tau), TINY)
        return -g0 * tau + np.log(mixed) + self._col(c, tau) * np.expm1(-self.params.beta * tau)

    def cdf(self, gaps: ArrayLike) -> np.ndarray:
        """P(next gap ≤ τ) at ``gaps`` [m] or [m, G]."""
        return -np.expm1(self.log_survival(gaps))

    def hazard(self, gaps: ArrayLike) -> np.ndarray:
        """Total intensity at gap τ given no event before it: E[μ_z | survived] + ΣS·e^{−βτ}."""
        tau = np.asarray(gaps, dtype=float)
        a, w, s, _ = self._terms
        rate = self._mix(a * self.params.modes.rate_coef, tau) / np.maximum(self._mix(w, tau), TINY)
        return rate + self._col(s, tau) * np.exp(-self.params.beta * tau)

    def log_density(self, gaps: ArrayLike, types: ArrayLike | None = None) -> np.ndarray:
        """log f(τ) of the gap alone, or log f(τ, k) jointly with ``types`` (both [m])."""
        tau = np.asarray(gaps, dtype=float)
        a, w, s, c = self._terms
        modes, beta = self.params.modes, self.params.beta
        if types is None:
            immigrant, excited = a * modes.rate_coef, s
        else:
            k = np.asarray(types, dtype=np.int64)
            immigrant = a * modes.mix_coef[:, k].T
            excited = np.asarray(self.excitation, float)[np.arange(k.size), k]
        inner = self._mix(immigrant, tau) + excited * np.exp(-beta * tau) * self._mix(w, tau)
        return -modes.gamma[0] * tau + np.log(np.maximum(inner, TINY)) + c * np.expm1(-beta * tau)

    def mean_gap(self) -> np.ndarray:
        """E[next gap] [m] (minimises RMSE)."""
        _, w, _, c = self._terms
        return (w * self._integrals(c)[0]).sum(axis=1)

    def type_probs(self) -> np.ndarray:
        """P(next type = k) [m, K] before the gap is known (argmax maximises accuracy)."""
        a, w, _, c = self._terms
        i0, i1 = self._integrals(c)
        probs = (a * i0) @ self.params.modes.mix_coef + np.asarray(self.excitation, float) * (
            (w * i1).sum(axis=1, keepdims=True)
        )
        probs = np.maximum(probs, 0.0)
        return probs / probs.sum(axis=1, keepdims=True)  # sums to 1 already, up to rounding

    def _integrals(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """∫ e^{−γ_r τ} G dτ and ∫ e^{−(γ_r + β)τ} G dτ, [m, R] each (₁F₁ closed forms)."""
        gamma, beta = self.params.modes.gamma, self.params.beta
        cc = -c[:, None]
        return (
            hyp1f1(1.0, gamma / beta + 1.0, cc) / gamma,
            hyp1f1(1.0, gamma / beta + 2.0, cc) / (gamma + beta),
        )

    def quantiles(self, levels: ArrayLike) -> np.ndarray:
        """Gaps [m, Q] with P(next gap ≤ τ) = level, for ``levels`` [Q] in [0, 1].

        Solves −log S(τ) = −log(1 − level) by Newton steps kept inside a shrinking bracket
        [0, −log(1 − level)/min μ] (the hazard is at least the smallest base rate), else
        bisection, each gap until its step is below 1e-13 relative: the CDF at the answer is
        the level to ~1e-16 absolute (float64 log S), so for levels in [0.001, 0.999] the gap
        is exact to ~1e-12 relative. Level 0 gives 0, level 1 inf."""
        q = np.atleast_1d(np.asarray(levels, dtype=float))
        if q.ndim != 1 or np.any(~((q >= 0) & (q <= 1))):
            raise ValueError(f"quantile levels must lie in [0, 1], got {levels}")
        probs = np.asarray(self.probs, float)
        excitation = np.asarray(self.excitation, float)
        m = probs.shape[0]
        inner = (q > 0) & (q < 1)
        goal = np.broadcast_to(-np.log1p(-np.where(inner, q, 0.5)), (m, q.size)).copy()
        lo = np.zeros((m, q.size))
        hi = goal / float(np.min(self.params.mu))
        tau = hi.copy()
        rows, cols = np.nonzero(np.ones((m, q.size), dtype=bool))
        for _ in range(100):
            if rows.size == 0:
                break
            sub = NextEvent(self.params, probs[rows], excitation[rows])
            x = tau[rows, cols]
            f = -sub.log_survival(x) - goal[rows, cols]
            above = f > 0
            hi[rows[above], cols[above]] = x[above]
            lo[rows[~above], cols[~above]] = x[~above]
            step = x - f / np.maximum(sub.hazard(x), TINY)
            a, b = lo[rows, cols], hi[rows, cols]
            new = np.where((step >= a) & (step <= b), step, 0.5 * (a + b))
            tau[rows, cols] = new
            going = (np.abs(new - x) > 1e-13 * new) & (f != 0)
            rows, cols = rows[going], cols[going]
        return np.where(inner[None, :], tau, np.where(q[None, :] >= 1, np.inf, 0.0))


def next_event(
    params: RegimeParams,
    times: ArrayLike,
    types: ArrayLike,
    targets: ArrayLike | None = None,
    history: int | None = None,
    run: FilterPass | None = None,
) -> NextEvent:
    """The law of event i given events < i (or the last ``history`` of them), for each target
    i (default 1..n−1; n — the event after the history — is allowed). ``run``: a
    ``filter_pass`` of the same events, to reuse."""
    return NextEvent(params, *filtered_states(params, times, types, targets, history, run))


def _predictions(
    ev: NextEvent, gaps: np.ndarray, target: np.ndarray, num_types: int
) -> BayesPredictions:
    if gaps.size == 0:
        empty = np.empty(0)
        return BayesPredictions(empty, empty, np.empty((0, num_types)), empty, empty, empty)
    probs = ev.type_probs()
    return BayesPredictions(
        mean_gap=ev.mean_gap(),
        median_gap=ev.quantiles([0.5])[:, 0],
        type_probs=probs,
        nll=-ev.log_density(gaps, target),
        nll_time=-ev.log_density(gaps),
        nll_type=-np.log(probs[np.arange(gaps.size), target]),
    )


def known_regime_predictions(
    params: RegimeParams,
    times: ArrayLike,
    types: ArrayLike,
    regimes: ArrayLike,
    targets: ArrayLike | None = None,
) -> BayesPredictions:
    """Predictions of each target i (default 1..n−1) by a predictor that knows the regime in
    force at event i−1 (``regimes`` [n], e.g. from ``mmtpp.regime.simulate``) besides all
    events before i: what reading every image's regime perfectly could reach (the regime may
    still switch before event i; the propagation accounts for it)."""
    t, k = _check_events(params, times, types)
    z = np.asarray(regimes, dtype=np.int64).reshape(-1)
    if z.size != t.size or (z.size and (z.min() < 0 or z.max() >= params.num_regimes)):
        raise ValueError(f"regime: regimes must be {t.size} values in 0..{params.num_regimes - 1}")
    idx = target_indices(targets, t.size, t.size - 1)
    probs = np.eye(params.num_regimes)[z[idx - 1]]
    ev = NextEvent(params, probs, _excitation_after(params, t, k)[idx - 1])
    return _predictions(ev, t[idx] - t[idx - 1], k[idx], params.num_types)


def bayes_predictions(
    params: RegimeParams,
    times: ArrayLike,
    types: ArrayLike,
    history: int | None = None,
    targets: ArrayLike | None = None,
    run: FilterPass | None = None,
) -> BayesPredictions:
    """The Bayes-optimal prediction of every event i ≥ 1 (or of ``targets`` in 1..n−1) from
    events < i, or from only the last ``history`` of them; the shape of
    ``mmtpp.hawkes.bayes_predictions``. ``run``: a ``filter_pass`` of the same events."""
    if run is None:
        run = filter_pass(params, times, types)
    t, k = run.times, run.types
    idx = target_indices(targets, t.size, t.size - 1)
    ev = next_event(params, t, k, idx, history, run)  # lazy: nothing computed for no targets
    return _predictions(ev, t[idx] - t[idx - 1], k[idx], params.num_types)
