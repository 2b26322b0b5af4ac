import numpy as np
import pytest
from scipy.integrate import quad

from mmtpp.hawkes import (
    HawkesParams,
    bayes_predictions,
    excitation_after_events,
    log_likelihood,
    predict_next,
    simulate,
)
from mmtpp.sources.synthetic import default_hawkes

PARAMS = HawkesParams(mu=[0.3, 0.2], alpha=[[0.3, 0.4], [0.2, 0.1]], beta=2.0)


def test_parameter_checks():
    with pytest.raises(ValueError, match="spectral radius"):
        HawkesParams(mu=[0.1], alpha=[[1.2]], beta=1.0)
    with pytest.raises(ValueError, match="mu"):
        HawkesParams(mu=[0.0], alpha=[[0.1]], beta=1.0)
    with pytest.raises(ValueError, match="2x2"):
        HawkesParams(mu=[0.1, 0.1], alpha=[[0.1]], beta=1.0)
    assert HawkesParams.from_dict(PARAMS.to_dict()) == PARAMS


def test_simulation_rate_matches_the_stationary_rate():
    times, types = simulate(PARAMS, 20000, np.random.default_rng(0))
    assert np.all(np.diff(times) >= 0) and set(types) <= {0, 1}
    rate = len(times) / times[-1]
    assert rate == pytest.approx(PARAMS.stationary_rates().sum(), rel=0.06)


def naive_log_likelihood(p, times, types):
    mu, alpha, beta = p.arrays()
    ll = 0.0
    for i, (t, k) in enumerate(zip(times, types, strict=True)):
        lam = mu[k] + sum(
            alpha[k, types[j]] * beta * np.exp(-beta * (t - times[j])) for j in range(i)
        )
        ll += np.log(lam)
    comp = mu.sum() * times[-1]
    for j in range(len(times)):
        comp += alpha[:, types[j]].sum() * (1 - np.exp(-beta * (times[-1] - times[j])))
    return ll - comp


def test_log_likelihood_matches_the_naive_sum():
    times, types = simulate(PARAMS, 60, np.random.default_rng(1))
    assert log_likelihood(PARAMS, times, types) == pytest.approx(
        naive_log_likelihood(PARAMS, times, types), rel=1e-9
    )


def test_closed_forms_match_numerical_integration():
    mu, _, beta = PARAMS.arrays()
    state = np.array([[1.5, 0.4], [0.0, 0.0], [6.0, 2.0]])
    mean, median, probs = predict_next(PARAMS, state)
    for row, s in enumerate(state):

        def survival(t, s=s):
            return np.exp(-mu.sum() * t - s.sum() / beta * (1 - np.exp(-beta * t)))

        assert mean[row] == pytest.approx(quad(survival, 0, np.inf)[0], rel=1e-6)
        assert survival(median[row]) == pytest.approx(0.5, abs=1e-9)
        for k in range(2):
            pk = quad(lambda t, k=k, s=s: (mu[k] + s[k] * np.exp(-beta * t)) * survival(t),
                      0, np.inf)[0]  # fmt: skip
            assert probs[row, k] == pytest.approx(pk, rel=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def next_event_monte_carlo(p, state, samples, rng):
    """Simulate the next event from a given excitation by thinning, many times."""
    mu, _, beta = p.arrays()
    gaps = np.empty(samples)
    types = np.empty(samples, dtype=int)
    for n in range(samples):
        t, s = 0.0, state.copy()
        while True:
            bound = mu.sum() + s.sum()
            w = rng.exponential(1 / bound)
            t += w
            s = s * np.exp(-beta * w)
            lam = mu + s
            if rng.random() * bound <= lam.sum():
                gaps[n], types[n] = t, rng.choice(len(mu), p=lam / lam.sum())
                break
    return gaps, types


def test_bayes_predictor_agrees_with_monte_carlo():
    times, types = simulate(PARAMS, 40, np.random.default_rng(2))
    state = excitation_after_events(PARAMS, times, types)[-1]
    mean, median, probs = predict_next(PARAMS, state)
    gaps, next_types = next_event_monte_carlo(PARAMS, state, 20000, np.random.default_rng(3))
    se = gaps.std() / np.sqrt(gaps.size)
    assert abs(gaps.mean() - mean[0]) < 4 * se
    assert abs(np.mean(gaps <= median[0]) - 0.5) < 4 * 0.5 / np.sqrt(gaps.size)
    for k in range(2):
        pk = np.mean(next_types == k)
        assert abs(pk - probs[0, k]) < 4 * np.sqrt(pk * (1 - pk) / gaps.size)


def test_bayes_predictions_for_every_prefix():
    times, types = simulate(PARAMS, 300, np.random.default_rng(4))
    b = bayes_predictions(PARAMS, times, types)
    assert b.mean_gap.shape == (299,) and b.type_probs.shape == (299, 2)
    # the per-event NLLs sum to the negative log-likelihood (first event aside)
    first = -log_likelihood(PARAMS, times[:1], types[:1])
    assert b.nll.sum() + first == pytest.approx(-log_likelihood(PARAMS, times, types), rel=1e-8)
    gaps = np.diff(times)
    assert np.sqrt(np.mean((b.mean_gap - gaps) ** 2)) < np.sqrt(np.mean((gaps.mean() - gaps) ** 2))


def test_default_process_is_bursty_and_predictable():
    p = default_hawkes()
    times, types = simulate(p, 5000, np.random.default_rng(5))
    b = bayes_predictions(p, times, types)
    accuracy = np.mean(b.most_probable_type == types[1:])
    majority = np.bincount(types).max() / types.size
    assert accuracy > majority + 0.15
    gaps = np.diff(times)
    assert np.mean(np.abs(np.diff(gaps)) < 0.2) > 0.6  # most neighbouring gaps nearly equal
