import math

import numpy as np
import pytest
from scipy.integrate import quad

from mmtpp.hawkes import (
    HawkesParams,
    bayes_predictions,
    excitation_after_events,
    excitation_before,
    gap_cdf,
    gap_quantiles,
    initial_excitation,
    log_likelihood,
    median_gap,
    predict_next,
    simulate,
    stopping_rule,
)

PARAMS = HawkesParams(mu=[0.3, 0.2], alpha=[[0.3, 0.4], [0.2, 0.1]], beta=2.0)  # ρ = 0.5


def test_parameter_checks():
    with pytest.raises(ValueError, match="spectral radius"):
        HawkesParams(mu=[0.1], alpha=[[1.2]], beta=1.0)
    with pytest.raises(ValueError, match="spectral radius"):
        HawkesParams(mu=[0.1, 0.1], alpha=[[0.0, 2.0], [0.6, 0.0]], beta=1.0)  # ρ = √1.2
    with pytest.raises(ValueError, match="mu"):
        HawkesParams(mu=[0.0], alpha=[[0.1]], beta=1.0)
    with pytest.raises(ValueError, match="2x2"):
        HawkesParams(mu=[0.1, 0.1], alpha=[[0.1]], beta=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        HawkesParams(mu=[0.1], alpha=[[-0.1]], beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        HawkesParams(mu=[0.1], alpha=[[0.1]], beta=0.0)
    with pytest.raises(ValueError, match="unknown"):
        HawkesParams.from_dict({**PARAMS.to_dict(), "gamma": 1.0})
    assert HawkesParams.from_dict(PARAMS.to_dict()) == PARAMS
    assert PARAMS.spectral_radius == pytest.approx(0.5)


def test_simulation_is_sorted_in_range_and_stops_where_asked():
    times, types = simulate(PARAMS, np.random.default_rng(0), num_events=500)
    assert times.shape == types.shape == (500,) and types.dtype == np.int64
    assert np.all(np.diff(times) > 0) and times[0] > 0 and set(types.tolist()) <= {0, 1}
    times, _ = simulate(PARAMS, np.random.default_rng(0), t_end=50.0)
    assert times.size > 0 and times[-1] <= 50.0
    times, _ = simulate(PARAMS, np.random.default_rng(0), num_events=10**6, t_end=20.0)
    assert times[-1] <= 20.0
    with pytest.raises(ValueError, match="num_events"):
        simulate(PARAMS, np.random.default_rng(0))
    a = simulate(PARAMS, np.random.default_rng(7), num_events=100)
    b = simulate(PARAMS, np.random.default_rng(7), num_events=100)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_simulation_limits_and_starting_excitation_are_checked():
    assert stopping_rule(5, None) == (5, math.inf) and stopping_rule(None, 2.5) == (math.inf, 2.5)
    with pytest.raises(ValueError, match="num_events must be >= 0"):
        stopping_rule(-1, None)
    assert initial_excitation(None, 3) == [0.0, 0.0, 0.0]
    assert initial_excitation(np.array([1, 2]), 2) == [1.0, 2.0]
    for bad in ([1.0], [1.0, -1.0], [np.nan, 0.0]):
        with pytest.raises(ValueError, match="excitation must hold 2 finite values"):
            simulate(PARAMS, np.random.default_rng(0), num_events=3, excitation=bad)


def test_simulation_rate_matches_the_stationary_rate():
    t_end = 40_000.0
    times, types = simulate(PARAMS, np.random.default_rng(0), t_end=t_end)
    expected = PARAMS.stationary_rates()  # (I − α)⁻¹ μ
    # counts of a Hawkes process have variance ≈ N / (1 − ρ)²: allow 5 standard errors
    rel = 5 / ((1 - PARAMS.spectral_radius) * math.sqrt(expected.sum() * t_end))
    assert times.size / t_end == pytest.approx(expected.sum(), rel=rel)
    per_type = np.bincount(types, minlength=2) / t_end
    np.testing.assert_allclose(per_type, expected, rtol=2 * rel)


def naive_log_likelihood(p, times, types, t_end):
    mu, alpha, beta = p.arrays()
    ll = 0.0
    for i, (t, k) in enumerate(zip(times, types, strict=True)):
        lam = mu[k] + sum(
            alpha[k, types[j]] * beta * np.exp(-beta * (t - times[j])) for j in range(i)
        )
        ll += np.log(lam)
    comp = mu.sum() * t_end
    for j in range(len(times)):
        comp += alpha[:, types[j]].sum() * (1 - np.exp(-beta * (t_end - times[j])))
    return ll - comp


def test_log_likelihood_matches_the_naive_sum():
    times, types = simulate(PARAMS, np.random.default_rng(1), num_events=60)
    for t_end in (None, times[-1] + 3.0):
        naive = naive_log_likelihood(PARAMS, times, types, times[-1] if t_end is None else t_end)
        assert log_likelihood(PARAMS, times, types, t_end) == pytest.approx(naive, rel=1e-9)


def test_closed_forms_match_numerical_integration():
    mu, _, beta = PARAMS.arrays()
    state = np.array([[1.5, 0.4], [0.0, 0.0], [6.0, 2.0], [300.0, 20.0]])
    mean, median, probs = predict_next(PARAMS, state)
    for row, s in enumerate(state):

        def survival(t, s=s):
            return np.exp(-mu.sum() * t - s.sum() / beta * (1 - np.exp(-beta * t)))

        assert mean[row] == pytest.approx(quad(survival, 0, np.inf, limit=200)[0], rel=1e-6)
        assert survival(median[row]) == pytest.approx(0.5, abs=1e-9)
        for k in range(2):
            pk = quad(
                lambda t, k=k, s=s: (mu[k] + s[k] * np.exp(-beta * t)) * survival(t),
                0,
                np.inf,
                limit=200,
            )[0]
            assert probs[row, k] == pytest.approx(pk, rel=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)


def test_median_solves_the_compensator_equation_over_a_wide_range():
    c = np.array([0.0, 1e-8, 1e-3, 0.5, 3.0, 50.0, 1e4])
    tau = median_gap(0.05, c, 7.0)
    compensator = 0.05 * tau + c * -np.expm1(-7.0 * tau)
    np.testing.assert_allclose(compensator, np.log(2), rtol=1e-9)


def next_event_monte_carlo(p, state, samples, rng):
    """Thinning of the next event after a history with excitation ``state``, vectorised over
    independent samples: every sample proposes until it accepts."""
    mu, _, beta = p.arrays()
    t = np.zeros(samples)
    s = np.tile(state, (samples, 1))
    gaps = np.full(samples, np.nan)
    types = np.zeros(samples, dtype=int)
    todo = np.arange(samples)
    while todo.size:
        bound = mu.sum() + s[todo].sum(axis=1)
        w = rng.exponential(1 / bound)
        t[todo] += w
        s[todo] *= np.exp(-beta * w)[:, None]
        cum = np.cumsum(mu + s[todo], axis=1)
        u = rng.random(todo.size) * bound
        accept = u < cum[:, -1]
        done = todo[accept]
        gaps[done] = t[done]
        types[done] = (u[accept, None] >= cum[accept]).sum(axis=1)
        todo = todo[~accept]
    return gaps, types


def test_bayes_predictor_agrees_with_monte_carlo():
    times, types = simulate(PARAMS, np.random.default_rng(2), num_events=200)
    after = excitation_after_events(PARAMS, times, types)
    last = int(after.sum(axis=1).argmax())  # a history that ends mid-burst
    b = bayes_predictions(PARAMS, times[: last + 2], types[: last + 2])
    mean, median, probs = b.mean_gap[-1], b.median_gap[-1], b.type_probs[-1]
    n = 20_000
    gaps, next_types = next_event_monte_carlo(PARAMS, after[last], n, np.random.default_rng(3))
    assert abs(gaps.mean() - mean) < 4 * gaps.std() / math.sqrt(n)
    assert abs(np.mean(gaps <= median) - 0.5) < 4 * 0.5 / math.sqrt(n)
    for k in range(2):
        pk = np.mean(next_types == k)
        assert abs(pk - probs[k]) < 4 * math.sqrt(pk * (1 - pk) / n)


def test_bayes_predictions_for_every_prefix():
    times, types = simulate(PARAMS, np.random.default_rng(4), num_events=300)
    b = bayes_predictions(PARAMS, times, types)
    assert b.mean_gap.shape == b.nll_type.shape == (299,) and b.type_probs.shape == (299, 2)
    np.testing.assert_allclose(b.type_probs.sum(axis=1), 1.0, rtol=1e-12)
    # one prefix at a time gives the same answer as all prefixes at once
    for i in (1, 17, 299):
        one = bayes_predictions(PARAMS, times[: i + 1], types[: i + 1])
        assert one.mean_gap[-1] == pytest.approx(b.mean_gap[i - 1], rel=1e-12)
        assert one.nll[-1] == pytest.approx(b.nll[i - 1], rel=1e-12)
    # the per-event NLLs sum to the negative log-likelihood (first event aside)
    first = -log_likelihood(PARAMS, times[:1], types[:1])
    assert b.nll.sum() + first == pytest.approx(-log_likelihood(PARAMS, times, types), rel=1e-8)
    assert np.all(b.nll >= b.nll_time)  # the joint also pays −log P(type | gap) ≥ 0
    np.testing.assert_allclose(b.nll_type, -np.log(b.type_probs[np.arange(299), types[1:]]))


def test_bayes_predictor_beats_constant_predictors():
    times, types = simulate(PARAMS, np.random.default_rng(4), num_events=20_000)
    b = bayes_predictions(PARAMS, times, types)
    gaps = np.diff(times)
    assert np.sqrt(np.mean((b.mean_gap - gaps) ** 2)) < np.sqrt(np.mean((gaps.mean() - gaps) ** 2))
    assert np.mean(np.abs(b.median_gap - gaps)) < np.mean(np.abs(np.median(gaps) - gaps))
    rate = 1 / gaps.mean()  # the best homogeneous Poisson process
    assert b.nll_time.mean() < np.mean(rate * gaps - np.log(rate))


def test_short_sequences_give_empty_predictions():
    b = bayes_predictions(PARAMS, [1.0], [0])
    assert b.mean_gap.shape == (0,) and b.type_probs.shape == (0, 2)


def test_excitation_from_the_last_events_only_matches_a_naive_sum():
    times, types = simulate(PARAMS, np.random.default_rng(6), num_events=80)
    _, alpha, beta = PARAMS.arrays()
    targets = np.array([1, 2, 10, 40, 80])  # 80: the event after the history
    for history in (1, 3, 25, None):
        got = excitation_before(PARAMS, times, types, targets, history)
        for row, i in enumerate(targets):
            first = 0 if history is None else max(0, i - history)
            seen = range(first, i)
            fade = np.exp(-beta * (times[i - 1] - times[list(seen)]))
            want = (alpha[:, types[list(seen)]] * beta * fade).sum(axis=1)
            np.testing.assert_allclose(got[row], want, rtol=1e-9, atol=1e-12)
    full = bayes_predictions(PARAMS, times, types)
    np.testing.assert_array_equal(
        bayes_predictions(PARAMS, times, types, history=10**6).nll, full.nll
    )
    short = bayes_predictions(PARAMS, times, types, history=2, targets=[5, 70])
    assert short.nll.shape == (2,) and not np.allclose(short.nll, full.nll[[4, 69]])
    with pytest.raises(ValueError, match="targets"):
        bayes_predictions(PARAMS, times, types, targets=[80])
    with pytest.raises(ValueError, match="history"):
        bayes_predictions(PARAMS, times, types, history=0)


def test_gap_quantiles_invert_the_cdf():
    state = np.array([[0.0, 0.0], [1.5, 0.4], [300.0, 20.0]])
    levels = np.array([1e-9, 0.01, 0.3, 0.5, 0.9, 0.999999])
    q = gap_quantiles(PARAMS, state, levels)
    assert q.shape == (3, 6) and np.all(np.diff(q, axis=1) > 0)
    np.testing.assert_allclose(gap_cdf(PARAMS, state, q), np.tile(levels, (3, 1)), rtol=1e-10)
    np.testing.assert_allclose(q[:, 3], predict_next(PARAMS, state)[1], rtol=1e-12)
    np.testing.assert_array_equal(gap_quantiles(PARAMS, state, [0.0, 1.0]), [[0, np.inf]] * 3)
    with pytest.raises(ValueError, match="levels"):
        gap_quantiles(PARAMS, state, [-0.1])


def test_simulation_continues_a_history_from_its_excitation():
    """Continuing after a history with excitation S gives the next-gap law of predict_next."""
    state = np.array([6.0, 2.0])
    rng = np.random.default_rng(9)
    draws = [simulate(PARAMS, rng, num_events=1, start=50.0, excitation=state) for _ in range(6000)]
    firsts = np.array([t[0] for t, _ in draws]) - 50.0
    mean, median, _ = predict_next(PARAMS, state)
    assert abs(firsts.mean() - mean[0]) < 4 * firsts.std() / math.sqrt(firsts.size)
    assert abs(np.mean(firsts <= median[0]) - 0.5) < 4 * 0.5 / math.sqrt(firsts.size)
    with pytest.raises(ValueError, match="excitation"):
        simulate(PARAMS, rng, num_events=1, excitation=[1.0])
