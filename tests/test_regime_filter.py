import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.linalg import expm
from scipy.stats import kstest
from test_regime import ALPHA, PARAMS, sim

from mmtpp import hawkes, regime, regime_filter
from mmtpp.hawkes import HawkesParams
from mmtpp.regime import RegimeParams
from mmtpp.regime_filter import NextEvent


def survival_and_density(params, probs, excitation):
    """Direct formulas with scipy's expm: S(τ) and f(τ, k) (the definitions, not the modes)."""
    mu, _, q, _, beta = params.arrays()
    a, base = q - np.diag(mu), params.base_rates()
    c = excitation.sum() / beta

    def g(tau):
        return math.exp(-c * (1 - math.exp(-beta * tau)))

    def survival(tau):
        return float((probs @ expm(a * tau)).sum()) * g(tau)

    def density(tau, k):
        lam = base[:, k] + excitation[k] * math.exp(-beta * tau)
        return float(probs @ expm(a * tau) @ lam) * g(tau)

    return survival, density


@pytest.mark.parametrize("row", [0, 1, 2])
def test_closed_forms_match_the_definitions(row):
    probs = np.array([[0.8, 0.15, 0.05], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])[row]
    excitation = np.array([[0.0, 0.0, 0.0], [2.5, 0.4, 0.0], [0.0, 30.0, 6.0]])[row]
    ev = NextEvent(PARAMS, probs[None], excitation[None])
    survival, density = survival_and_density(PARAMS, probs, excitation)
    assert ev.mean_gap()[0] == pytest.approx(quad(survival, 0, np.inf, limit=400)[0], rel=1e-7)
    for k in range(3):
        pk = quad(density, 0, np.inf, args=(k,), limit=400)[0]
        assert ev.type_probs()[0, k] == pytest.approx(pk, rel=1e-7, abs=1e-12)
    for tau in (1e-4, 0.05, 0.8, 6.0, 50.0):
        x = np.array([tau])
        assert np.exp(ev.log_survival(x))[0] == pytest.approx(survival(tau), rel=1e-9)
        for k in range(3):
            joint = np.exp(ev.log_density(x, [k]))[0]
            assert joint == pytest.approx(density(tau, k), rel=1e-9)
        total = sum(density(tau, k) for k in range(3))
        assert np.exp(ev.log_density(x))[0] == pytest.approx(total, rel=1e-9)
        assert ev.hazard(x)[0] == pytest.approx(total / survival(tau), rel=1e-9)
    median = ev.quantiles([0.5])[0, 0]
    assert survival(median) == pytest.approx(0.5, abs=1e-10)


def test_one_regime_is_exactly_the_hawkes_predictor():
    hp = HawkesParams(mu=[0.3, 0.1, 0.05], alpha=ALPHA, beta=4.0)
    as_regime = RegimeParams.from_hawkes(hp)
    times, types = hawkes.simulate(hp, np.random.default_rng(5), num_events=600)
    for history in (None, 1, 2, 14, 100):
        a = hawkes.bayes_predictions(hp, times, types, history)
        b = regime_filter.bayes_predictions(as_regime, times, types, history)
        for name in ("mean_gap", "median_gap", "type_probs", "nll", "nll_time", "nll_type"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-11, atol=1e-13)
    for t_end in (None, times[-1] + 2.0):
        assert regime_filter.log_likelihood(as_regime, times, types, t_end) == pytest.approx(
            hawkes.log_likelihood(hp, times, types, t_end), rel=1e-11
        )


def naive_forward(params, times, types):
    """log f(event i | events < i) for every i, with expm and explicit sums (O(n²))."""
    mu, _, q, alpha, beta = params.arrays()
    a, base, nu = q - np.diag(mu), params.base_rates(), params.stationary()
    p, prev, out = nu, 0.0, []
    for i, (t, k) in enumerate(zip(times, types, strict=True)):
        past = np.asarray(times[:i])
        jumps = alpha[:, np.asarray(types[:i], dtype=int)] * beta  # [K, i]
        excitation_k = (jumps[k] * np.exp(-beta * (t - past))).sum()
        fade = np.exp(-beta * (prev - past)) - np.exp(-beta * (t - past))
        compensator = (alpha[:, np.asarray(types[:i], dtype=int)].sum(axis=0) * fade).sum()
        moved = p @ expm(a * (t - prev))
        w = moved * (base[:, k] + excitation_k)
        out.append(math.log(w.sum()) - compensator)
        p, prev = w / w.sum(), t
    return np.array(out)


def test_filter_matches_a_naive_forward_algorithm_and_the_log_likelihood():
    times, types, _ = sim(n=120, seed=7)
    run = regime_filter.filter_pass(PARAMS, times, types)
    np.testing.assert_allclose(run.log_density, naive_forward(PARAMS, times, types), rtol=1e-9)
    b = regime_filter.bayes_predictions(PARAMS, times, types)
    np.testing.assert_allclose(b.nll, -run.log_density[1:], rtol=1e-9)
    t_end = times[-1] + 3.0
    tail = NextEvent(PARAMS, run.probs[-1:], run.excitation[-1:]).log_survival(np.array([3.0]))
    assert regime_filter.log_likelihood(PARAMS, times, types, t_end) == pytest.approx(
        run.log_density.sum() + tail[0], rel=1e-12
    )
    np.testing.assert_allclose(run.probs.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(b.nll >= b.nll_time)  # the joint also pays −log P(type | gap) ≥ 0


def test_windowed_filter_starts_from_the_stationary_regimes_at_the_first_event_it_sees():
    times, types, _ = sim(n=200, seed=8)
    full = regime_filter.bayes_predictions(PARAMS, times, types)
    long = regime_filter.bayes_predictions(PARAMS, times, types, history=10_000)
    np.testing.assert_array_equal(long.nll, full.nll)  # a window that holds everything
    target, length = 150, 6
    probs, state = regime_filter.filtered_states(PARAMS, times, types, [target], length)
    # by hand: ν weighted by the first seen event's stationary type rates, then the filter
    # over the next L − 1 events with only the window's excitation
    first = target - length
    p = PARAMS.stationary() * PARAMS.event_rates()[:, types[first]]
    p /= p.sum()
    window = (times[first:target], types[first:target])
    mu, _, q, _, beta = PARAMS.arrays()
    s = hawkes.excitation_after_events(HawkesParams(mu=[1.0] * 3, alpha=ALPHA, beta=beta), *window)
    for j in range(1, length):
        tau = window[0][j] - window[0][j - 1]
        lam = PARAMS.base_rates()[:, window[1][j]] + s[j - 1][window[1][j]] * np.exp(-beta * tau)
        p = p @ expm((q - np.diag(mu)) * tau) * lam
        p /= p.sum()
    np.testing.assert_allclose(probs[0], p, rtol=1e-9)
    np.testing.assert_allclose(state[0], s[-1], rtol=1e-12)
    with pytest.raises(ValueError, match="history"):
        regime_filter.bayes_predictions(PARAMS, times, types, history=0)
    with pytest.raises(ValueError, match="targets"):
        regime_filter.bayes_predictions(PARAMS, times, types, targets=[0])


def test_the_predictor_is_calibrated_on_data_from_the_simulator():
    """End to end: if the filter's regime posterior were wrong, the gaps' PIT would not be
    uniform and the type probabilities would not match the type frequencies."""
    parts = [sim(n=800, seed=20 + i) for i in range(12)]
    pit, probs, seen = [], [], []
    for times, types, _ in parts:
        ev = regime_filter.next_event(PARAMS, times, types)
        pit.append(ev.cdf(np.diff(times)))
        probs.append(ev.type_probs())
        seen.append(types[1:])
    pit, probs, seen = np.concatenate(pit), np.concatenate(probs), np.concatenate(seen)
    assert kstest(pit, "uniform").pvalue > 0.01
    for k in range(3):
        for lo, hi in ((0.0, 0.2), (0.2, 0.5), (0.5, 1.0)):
            bin_ = (probs[:, k] >= lo) & (probs[:, k] < hi)
            if bin_.sum() > 300:
                hit = np.mean(seen[bin_] == k)
                sd = math.sqrt(hit * (1 - hit) / bin_.sum())
                assert abs(hit - probs[bin_, k].mean()) < 4 * sd + 0.005


def test_predictor_agrees_with_monte_carlo_continuations_of_one_history():
    times, types, _ = sim(n=300, seed=9)
    idx = int(np.argmax(regime_filter.filter_pass(PARAMS, times, types).excitation.sum(axis=1)))
    hist_t, hist_k = times[: idx + 1], types[: idx + 1]  # ends mid-burst
    ev = regime_filter.next_event(PARAMS, hist_t, hist_k, [idx + 1])
    rng = np.random.default_rng(10)
    n = 8000
    firsts = []
    for _ in range(n):  # the scalar simulator, started from the filtered state
        z = rng.choice(3, p=ev.probs[0])
        t, k, _ = regime.simulate(
            PARAMS, rng, num_events=1, start=hist_t[-1], regime=z, excitation=ev.excitation[0]
        )
        firsts.append((t[0] - hist_t[-1], k[0]))
    gaps = np.array([g for g, _ in firsts])
    kinds = np.array([k for _, k in firsts])
    assert abs(gaps.mean() - ev.mean_gap()[0]) < 4 * gaps.std() / math.sqrt(n)
    for level, tau in zip((0.1, 0.5, 0.9), ev.quantiles([0.1, 0.5, 0.9])[0], strict=True):
        assert abs(np.mean(gaps <= tau) - level) < 4 * math.sqrt(level * (1 - level) / n)
    for k in range(3):
        pk = ev.type_probs()[0, k]
        assert abs(np.mean(kinds == k) - pk) < 4 * math.sqrt(pk * (1 - pk) / n) + 1e-3


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0, allow_subnormal=False), min_size=3, max_size=3),
    st.lists(st.floats(0.0, 50.0, allow_subnormal=False), min_size=3, max_size=3),
    st.lists(st.floats(1e-6, 1 - 1e-6), min_size=1, max_size=5),
)
def test_quantiles_invert_the_cdf(weights, excitation, levels):
    probs = np.asarray(weights) + 1e-3
    ev = NextEvent(PARAMS, (probs / probs.sum())[None], np.asarray(excitation)[None])
    q = ev.quantiles(levels)
    np.testing.assert_allclose(ev.cdf(q), np.asarray(levels)[None], rtol=1e-9, atol=1e-12)
    order = np.argsort(levels)
    assert np.all(np.diff(q[0, order]) >= 0)


def test_quantile_edges_and_errors():
    ev = NextEvent(PARAMS, PARAMS.stationary()[None], np.zeros((1, 3)))
    np.testing.assert_array_equal(ev.quantiles([0.0, 1.0])[0], [0.0, np.inf])
    with pytest.raises(ValueError, match="levels"):
        ev.quantiles([1.5])


def test_known_regime_beats_the_filter_and_one_regime_needs_no_knowledge():
    parts = [sim(n=600, seed=30 + i) for i in range(10)]
    known = [regime_filter.known_regime_predictions(PARAMS, t, k, z) for t, k, z in parts]
    filtered = [regime_filter.bayes_predictions(PARAMS, t, k) for t, k, _ in parts]
    gain = np.mean(np.concatenate([f.nll - g.nll for f, g in zip(filtered, known, strict=True)]))
    assert gain > 0.005  # knowing the regime is worth something, the filter being close
    hp = HawkesParams(mu=[0.3, 0.1, 0.05], alpha=ALPHA, beta=4.0)
    t, k = hawkes.simulate(hp, np.random.default_rng(1), num_events=50)
    one = RegimeParams.from_hawkes(hp)
    a = regime_filter.known_regime_predictions(one, t, k, np.zeros(50, dtype=int))
    np.testing.assert_allclose(a.nll, regime_filter.bayes_predictions(one, t, k).nll, rtol=1e-12)
