"""The exact Bayes-optimal predictor of the profile process (``mmtpp.profile``): the posterior
predictive of each sequence's own transition matrix and gap rates, in closed form, and
continuations drawn from the posterior.

**Posterior predictive** after a window W of events whose last event has type k, from the
transitions k → j inside W (counts c_j, n = Σc), the m gaps inside W that followed a type-k
event (sum S) and, for a reader of the images, the N_j images of type-k events in W showing j:

    w_j = P(f_k = j | W) ∝ Γ(α + κ + c_j) / Γ(α + c_j) · ρ^{N_j},   ρ = (1 − ε)(K − 1)/ε
    P(next type = j | W) = (α + c_j + κ·w_j) / (Kα + κ + n)
    λ_k | W ~ Gamma(A, B),   A = a + s·m,   B = b + S
    next gap:  f(τ) = τ^{s−1}·B^A / (B(s, A)·(B + τ)^{A+s})   (a beta prime scaled by B;
               s = 1: the Lomax law A·B^A/(B + τ)^{A+1})
               F(τ) = I_{τ/(B+τ)}(s, A),  quantile B·x/(1 − x) with x = I⁻¹_q(s, A),
               mean s·B/(A − 1)  (finite: a > 1)

(w: the Dirichlet-multinomial likelihood of the counts under each favourite, times the images'
likelihood; the predictive averages (α + κ·[j = f] + c_j)/(Kα + κ + n) over w.) The posterior
over (P, λ) factorises over rows and types, and the gap and the next type are independent given
the last type, so the joint predictive is a product: NLL = NLL_time + NLL_type.

**Windows.** Given the whole history (the window starts at event 0, whose type is uniform and
independent of the profile) this is the exact posterior predictive. Given only the last L
events it is the same formula on the window's counts: it ignores the little that the type of
the window's first event says about P (its law there depends on P through the chain), so it is
a level a predictor seeing L events can reach, a hair below the exact optimum given L events.

**Continuations** draw the sequence's (P, λ) from the posterior given the history (each row's
favourite from w, then the row and the rates from their conjugate posteriors) and run the chain
on: exactly the process's law of what follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import betainc, betaincinv, betaln, gammaln, xlogy

from mmtpp.bayes import BayesPredictions, check_history, target_indices
from mmtpp.profile import ProfileParams

# ---------------------------------------------------------------------------- evidence


def _check_events(params: ProfileParams, times: ArrayLike, types: ArrayLike):
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    k = np.asarray(types).reshape(-1)
    if t.size != k.size:
        raise ValueError(f"profile: {t.size} times but {k.size} types")
    if t.size:
        if not np.all(np.isfinite(t)) or t[0] < 0 or np.any(np.diff(t) < 0):
            raise ValueError("profile: times must be finite, >= 0 and sorted")
        if not np.issubdtype(k.dtype, np.integer) or k.min() < 0 or k.max() >= params.num_types:
            raise ValueError(f"profile: types must be integers in 0..{params.num_types - 1}")
    return t, k.astype(np.int64)


def _check_hints(params: ProfileParams, shown: ArrayLike, n: int) -> np.ndarray:
    h = np.asarray(shown).reshape(-1)
    if h.size != n or (
        n and (not np.issubdtype(h.dtype, np.integer) or h.min() < 0 or h.max() >= params.num_types)
    ):
        raise ValueError(
            f"profile: shown hints must be {n} integers in 0..{params.num_types - 1} (one per "
            f"event), got {h.size} values"
        )
    return h.astype(np.int64)


@dataclass(frozen=True)
class Tally:
    """Running totals over one sequence (n events), for windows of any length: after event e,
    ``transitions`` [n, K, K] counts the transitions k_{e'−1} → k_{e'} for e' ≤ e, ``seen``
    [n, K] and ``spent`` [n, K] count and sum the gaps τ_{e'} (e' ≤ e) by the type of the
    event before them, and ``hints`` [n, K, K] (None without images) counts the events e' ≤ e
    of type k whose image shows j."""

    times: np.ndarray
    types: np.ndarray
    transitions: np.ndarray
    seen: np.ndarray
    spent: np.ndarray
    hints: np.ndarray | None


def tally(
    params: ProfileParams, times: ArrayLike, types: ArrayLike, shown: ArrayLike | None = None
) -> Tally:
    """The running totals of one sequence (``shown``: the hint of every event's image)."""
    t, k = _check_events(params, times, types)
    n, kk = t.size, params.num_types
    steps = np.zeros((n, kk, kk), dtype=np.int64)
    seen = np.zeros((n, kk), dtype=np.int64)
    spent = np.zeros((n, kk))
    if n > 1:
        steps[np.arange(1, n), k[:-1], k[1:]] = 1
        seen[np.arange(1, n), k[:-1]] = 1
        spent[np.arange(1, n), k[:-1]] = np.diff(t)
    hints = None
    if shown is not None:
        h = _check_hints(params, shown, n)
        hints = np.zeros((n, kk, kk), dtype=np.int64)
        hints[np.arange(n), k, h] = 1
        hints = np.cumsum(hints, axis=0)
    return Tally(
        t, k, np.cumsum(steps, axis=0), np.cumsum(seen, axis=0), np.cumsum(spent, axis=0), hints
    )


def _since(running: np.ndarray, end: np.ndarray, start: np.ndarray) -> np.ndarray:
    """running[end] − running[start] per row, with running[−1] = 0."""
    out = running[end]
    inside = start >= 0
    if np.any(inside):
        out = out.copy()
        out[inside] = out[inside] - running[start[inside]]
    return out


def next_event(
    params: ProfileParams,
    times: ArrayLike,
    types: ArrayLike,
    targets: ArrayLike | None = None,
    history: int | None = None,
    shown: ArrayLike | None = None,
    run: Tally | None = None,
) -> NextEvent:
    """The predictive law of event i given events < i — or the last ``history`` of them — for
    each target i (default 1..n−1; n, the event after the history, is allowed). With ``shown``
    (or a ``run`` tallied with it) the images' hints of those events count too. ``run``: a
    ``tally`` of the same events, to reuse."""
    check_history(history)
    if run is None:
        run = tally(params, times, types, shown)
    n = run.times.size
    idx = target_indices(targets, n, n)
    last = run.types[idx - 1]
    lo = np.zeros_like(idx) if history is None else np.maximum(idx - int(history), 0)
    rows = np.arange(idx.size)
    # transitions and gaps inside the window end at events lo+1..i−1; hints at events lo..i−1
    counts = _since(run.transitions, idx - 1, lo)[rows, last]
    seen = _since(run.seen, idx - 1, lo)[rows, last]
    spent = _since(run.spent, idx - 1, lo)[rows, last]
    hints = None if run.hints is None else _since(run.hints, idx - 1, lo - 1)[rows, last]
    return NextEvent(params, counts, seen, np.maximum(spent, 0.0), hints)


@dataclass(frozen=True)
class NextEvent:
    """The posterior predictive of the next event after each of m windows: ``counts`` [m, K]
    (transitions from the last event's type k to each type), ``seen`` [m] and ``spent`` [m]
    (number and sum of the gaps after type-k events) and ``hints`` [m, K] (images of type-k
    events showing each type; None: the images are not read)."""

    params: ProfileParams
    counts: np.ndarray
    seen: np.ndarray
    spent: np.ndarray
    hints: np.ndarray | None = None

    def favourite_probs(self) -> np.ndarray:
        """w [m, K]: P(f_k = j | window), the posterior of the last type's favourite."""
        p = self.params
        c = np.asarray(self.counts, dtype=float)
        logw = gammaln(p.concentration + p.favourite_weight + c) - gammaln(p.concentration + c)
        if self.hints is not None:
            h = np.asarray(self.hints, dtype=float)
            miss = p.image_noise / (p.num_types - 1)
            # N_j·log(1 − ε) + (N − N_j)·log(ε/(K − 1)); xlogy: 0·log 0 = 0 when ε is 0 or 1
            logw = logw + xlogy(h, 1.0 - p.image_noise) + xlogy(h.sum(1, keepdims=True) - h, miss)
        logw = logw - logw.max(axis=1, keepdims=True)
        w = np.exp(logw)
        return w / w.sum(axis=1, keepdims=True)

    def type_probs(self) -> np.ndarray:
        """P(next type = j) [m, K] = (α + c_j + κ·w_j)/(Kα + κ + n)."""
        p = self.params
        c = np.asarray(self.counts, dtype=float)
        top = p.concentration + c + p.favourite_weight * self.favourite_probs()
        return top / top.sum(axis=1, keepdims=True)

    @property
    def shape(self) -> np.ndarray:
        """A [m]: the posterior shape of the gap rate, a + s·m."""
        return self.params.rate_shape + self.params.gap_shape * np.asarray(self.seen, float)

    @property
    def scale(self) -> np.ndarray:
        """B [m]: the posterior rate of the gap rate (a time), b + S."""
        return self.params.rate_time + np.asarray(self.spent, float)

    def _cols(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.shape, self.scale
        return (a, b) if tau.ndim == 1 else (a[:, None], b[:, None])

    def log_density(self, gaps: ArrayLike) -> np.ndarray:
        """log f(τ) of the next gap at ``gaps`` [m] or [m, G]."""
        tau = np.asarray(gaps, dtype=float)
        a, b = self._cols(tau)
        s = self.params.gap_shape
        # A·log B − (A + s)·log(B + τ) = −A·log1p(τ/B) − s·log(B + τ): no cancellation at large A
        return xlogy(s - 1.0, tau) - a * np.log1p(tau / b) - s * np.log(b + tau) - betaln(s, a)

    def cdf(self, gaps: ArrayLike) -> np.ndarray:
        """P(next gap ≤ τ) = I_{τ/(B+τ)}(s, A) at ``gaps`` [m] or [m, G]."""
        tau = np.asarray(gaps, dtype=float)
        a, b = self._cols(tau)
        return betainc(self.params.gap_shape, a, tau / (b + tau))

    def quantiles(self, levels: ArrayLike) -> np.ndarray:
        """Gaps [m, Q] with P(next gap ≤ τ) = level, for ``levels`` [Q] in [0, 1]: B·x/(1 − x)
        with x = I⁻¹_q(s, A), the smaller of x and 1 − x inverted directly (so a level near 1
        keeps its precision). Level 0 gives 0, level 1 inf."""
        q = np.atleast_1d(np.asarray(levels, dtype=float))
        if q.ndim != 1 or np.any(~((q >= 0) & (q <= 1))):
            raise ValueError(f"quantile levels must lie in [0, 1], got {levels}")
        s = self.params.gap_shape
        a, b = self.shape[:, None], self.scale[:, None]
        low = np.broadcast_to(q[None, :] <= 0.5, (a.shape[0], q.size))
        x = betaincinv(s, a, np.broadcast_to(q, low.shape))
        y = betaincinv(a, s, np.broadcast_to(1.0 - q, low.shape))  # 1 − x, from the upper tail
        x, y = np.where(low, x, 1.0 - y), np.where(low, 1.0 - x, y)
        with np.errstate(divide="ignore"):
            tau = b * x / y
        return np.where(q[None, :] >= 1, np.inf, np.where(q[None, :] <= 0, 0.0, tau))

    def mean_gap(self) -> np.ndarray:
        """E[next gap] [m] = s·B/(A − 1) (minimises RMSE)."""
        return self.params.gap_shape * self.scale / (self.shape - 1.0)

    def median_gap(self) -> np.ndarray:
        """The median of the next gap [m] (minimises MAE)."""
        return self.quantiles([0.5])[:, 0]


def _predictions(ev: NextEvent, gaps: np.ndarray, target: np.ndarray) -> BayesPredictions:
    probs = ev.type_probs()
    nll_time = -ev.log_density(gaps)
    nll_type = -np.log(probs[np.arange(gaps.size), target])
    return BayesPredictions(
        mean_gap=ev.mean_gap(),
        median_gap=ev.median_gap(),
        type_probs=probs,
        nll=nll_time + nll_type,
        nll_time=nll_time,
        nll_type=nll_type,
    )


def bayes_predictions(
    params: ProfileParams,
    times: ArrayLike,
    types: ArrayLike,
    history: int | None = None,
    targets: ArrayLike | None = None,
    shown: ArrayLike | None = None,
    run: Tally | None = None,
) -> BayesPredictions:
    """The Bayes-optimal prediction of every event i ≥ 1 (or of ``targets`` in 1..n−1) from
    events < i, or from only the last ``history`` of them; with ``shown`` (every event's image
    hint) that of a perfect reader of the images too. The shape of
    ``mmtpp.hawkes.bayes_predictions``; ``run``: a ``tally`` of the same events, to reuse."""
    if run is None:
        run = tally(params, times, types, shown)
    t, k = run.times, run.types
    idx = target_indices(targets, t.size, t.size - 1)
    ev = next_event(params, t, k, idx, history, run=run)
    return _predictions(ev, t[idx] - t[idx - 1], k[idx])


# ---------------------------------------------------------------------------- continuations


def posterior_draws(
    params: ProfileParams,
    rng: np.random.Generator,
    samples: int,
    times: ArrayLike,
    types: ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` draws of a sequence's (P [S, K, K], λ [S, K]) from the posterior given all
    its events: each row's favourite from w, the row from Dirichlet(α·1 + κ·e_f + counts) (as
    normalised gamma draws) and each rate from Gamma(a + s·m_k, b + S_k)."""
    run = tally(params, times, types)
    kk = params.num_types
    if run.times.size:
        counts, seen, spent = run.transitions[-1], run.seen[-1], run.spent[-1]
    else:
        counts, seen, spent = np.zeros((kk, kk)), np.zeros(kk), np.zeros(kk)
    w = NextEvent(params, counts, seen, spent).favourite_probs()  # [K, K]: one row per type
    u = rng.random((samples, kk, 1))
    fav = np.minimum((u >= np.cumsum(w, axis=1)[None]).sum(axis=2), kk - 1)  # [S, K]
    conc = np.broadcast_to(params.concentration + counts, (samples, kk, kk)).copy()
    conc[np.arange(samples)[:, None], np.arange(kk)[None, :], fav] += params.favourite_weight
    g = rng.gamma(conc)
    trans = g / g.sum(axis=2, keepdims=True)
    shape = params.rate_shape + params.gap_shape * seen
    rates = rng.gamma(np.broadcast_to(shape, (samples, kk))) / (params.rate_time + spent)
    return trans, rates


def sample_continuations(
    params: ProfileParams,
    rng: np.random.Generator,
    samples: int,
    times: ArrayLike,
    types: ArrayLike,
    steps: int | None = None,
    until: float | None = None,
    max_events: int = 100_000,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``samples`` independent continuations of one history, vectorised over samples: each
    draws the sequence's profile from the posterior given the history (``posterior_draws``)
    and runs the chain on from the last event. After an empty history the first event is the
    process's event 0: a uniform type at t = 0. Stops after ``steps`` events or at absolute
    time ``until`` (at least one). Returns (start, times [S, W] NaN-padded, types [S, W]
    −1-padded, counts [S])."""
    if steps is None and until is None:
        raise ValueError("continuations: give steps, until or both")
    if steps is not None and steps < 0:
        raise ValueError(f"continuations: steps must be >= 0, got {steps}")
    if samples < 1:
        raise ValueError(f"continuations: samples must be >= 1, got {samples}")
    t, k = _check_events(params, times, types)
    start = float(t[-1]) if t.size else 0.0
    if until is not None and not until >= start:
        raise ValueError(f"continuations: until={until} lies before the last event ({start})")
    trans, rates = posterior_draws(params, rng, samples, t, k)
    cum = np.cumsum(trans, axis=2)
    kk = params.num_types
    cap = max_events if steps is None else int(steps)
    horizon = math.inf if until is None else float(until)
    width = max(1, min(cap, 16))
    out_t = np.full((samples, width), np.nan)
    out_k = np.full((samples, width), -1, dtype=np.int64)
    counts = np.zeros(samples, dtype=np.int64)
    clock = np.full(samples, start)
    last = np.full(samples, int(k[-1]) if t.size else 0)
    if not t.size and cap > 0:  # the process's first event: a uniform type at the origin
        last = rng.integers(0, kk, size=samples)
        out_t[:, 0], out_k[:, 0], counts[:] = start, last, 1
    active = np.arange(samples)[counts < cap]
    while active.size:
        row = last[active]
        gap = rng.gamma(params.gap_shape, size=active.size) / rates[active, row]
        u = rng.random(active.size)
        nxt = np.minimum((u[:, None] >= cum[active, row]).sum(axis=1), kk - 1)
        clock[active] += gap
        inside = clock[active] <= horizon
        active, nxt = active[inside], nxt[inside]
        if active.size and counts[active].max() >= width:  # counts < cap, so width < cap here
            grow = min(2 * width, cap) - width
            out_t = np.pad(out_t, ((0, 0), (0, grow)), constant_values=np.nan)
            out_k = np.pad(out_k, ((0, 0), (0, grow)), constant_values=-1)
            width += grow
        out_t[active, counts[active]] = clock[active]
        out_k[active, counts[active]] = nxt
        counts[active] += 1
        last[active] = nxt
        if steps is None and active.size and counts[active].max() >= max_events:
            raise ValueError(
                f"continuations: a sample reached max_events={max_events} before until={until}"
            )
        active = active[counts[active] < cap]
    used = int(counts.max())
    return start, out_t[:, :used], out_k[:, :used], counts
