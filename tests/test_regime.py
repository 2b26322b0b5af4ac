import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import expm

from mmtpp import regime
from mmtpp.regime import RegimeParams, uniform_switching

ALPHA = [[0.4, 0.1, 0.0], [0.1, 0.3, 0.1], [0.0, 0.2, 0.3]]
# three regimes that differ in rate and type mix; a few switches per thousand events
PARAMS = RegimeParams(
    mu=[0.2, 0.6, 1.5],
    mix=[[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7]],
    switch=uniform_switching([0.004, 0.01, 0.03]),
    alpha=ALPHA,
    beta=4.0,
)


def sim(params=PARAMS, n=400, seed=0):
    return regime.simulate(params, np.random.default_rng(seed), num_events=n)


def test_parameter_checks():
    good = PARAMS.to_dict()
    assert RegimeParams.from_dict(good) == PARAMS
    with pytest.raises(ValueError, match="unknown"):
        RegimeParams.from_dict({**good, "gamma": 1})
    with pytest.raises(ValueError, match="mu"):
        RegimeParams(**{**good, "mu": [0.2, 0.0, 1.0]})
    with pytest.raises(ValueError, match="3xK"):
        RegimeParams(**{**good, "mix": good["mix"][:2]})
    with pytest.raises(ValueError, match="sum to 1"):
        RegimeParams(**{**good, "mix": [[0.5, 0.2, 0.1], *good["mix"][1:]]})
    with pytest.raises(ValueError, match="spectral radius"):
        RegimeParams(**{**good, "alpha": (3 * np.asarray(ALPHA)).tolist()})
    with pytest.raises(ValueError, match="generator"):
        RegimeParams(**{**good, "switch": [[-1, 1, 0], [1, -1, 0], [1, 1, -1.5]]})
    with pytest.raises(ValueError, match="irreducible"):
        RegimeParams(**{**good, "switch": [[-1, 1, 0], [1, -1, 0], [1, 0, -1]]})
    with pytest.raises(ValueError, match="reversible"):  # a cycle 0 → 1 → 2 → 0
        RegimeParams(**{**good, "switch": [[-1, 1, 0], [0, -1, 1], [1, 0, -1]]})


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(1e-4, 10.0), min_size=1, max_size=6))
def test_uniform_switching_is_reversible_with_stationary_inverse_to_the_leave_rates(leave):
    r = len(leave)
    p = RegimeParams(
        mu=[1.0] * r, mix=[[1.0]] * r, switch=uniform_switching(leave), alpha=[[0.5]], beta=1.0
    )
    nu = p.stationary()
    np.testing.assert_allclose(nu, (1 / np.asarray(leave)) / (1 / np.asarray(leave)).sum())
    assert np.all(p.modes.gamma > 0) and np.all(np.diff(p.modes.gamma) >= 0)


def test_modes_reproduce_the_matrix_exponential():
    mu, _, q, _, _ = PARAMS.arrays()
    a = q - np.diag(mu)
    gaps = np.array([0.0, 0.01, 0.7, 5.0, 40.0])
    trans, log_scale = PARAMS.modes.transitions(gaps)
    for tau, t, s in zip(gaps, trans, log_scale, strict=True):
        want = expm(a * tau)
        np.testing.assert_allclose(t * np.exp(s), want, rtol=1e-9, atol=1e-12 * want.max())


def test_simulation_is_valid_reproducible_and_continues_a_history():
    times, types, regimes = sim(n=500)
    assert times.shape == types.shape == regimes.shape == (500,)
    assert np.all(np.diff(times) > 0) and times[0] > 0
    assert set(types.tolist()) <= {0, 1, 2} and set(regimes.tolist()) <= {0, 1, 2}
    again = sim(n=500)
    assert all(np.array_equal(x, y) for x, y in zip((times, types, regimes), again, strict=True))
    t, _, z = regime.simulate(PARAMS, np.random.default_rng(1), t_end=30.0)
    assert t[-1] <= 30.0
    t, _, z = regime.simulate(
        PARAMS, np.random.default_rng(1), num_events=20, start=100.0, regime=2, excitation=[5, 0, 0]
    )
    assert t[0] > 100.0 and z[0] == 2
    with pytest.raises(ValueError, match="regime"):
        regime.simulate(PARAMS, np.random.default_rng(1), num_events=5, regime=3)


def test_simulation_spends_time_in_regimes_as_the_chain_says_and_fires_at_their_rates():
    times, types, regimes = regime.simulate(PARAMS, np.random.default_rng(3), t_end=60_000.0)
    rates = PARAMS.event_rates().sum(axis=1)  # events per minute within each regime
    share = PARAMS.stationary() * rates / (PARAMS.stationary() * rates).sum()
    # ~40 regime visits in all: the event share per regime is only roughly pinned down
    np.testing.assert_allclose(np.bincount(regimes, minlength=3) / regimes.size, share, atol=0.08)
    rate = PARAMS.stationary() @ rates  # events per minute overall
    assert times.size / times[-1] == pytest.approx(rate, rel=0.15)
    # within a regime, types follow the stationary type mix of that regime
    for z in range(3):
        seen = np.bincount(types[regimes == z], minlength=3) / np.sum(regimes == z)
        expected = PARAMS.event_rates()[z] / rates[z]
        np.testing.assert_allclose(seen, expected, atol=0.03)


def test_vectorised_continuations_match_the_scalar_simulator():
    probs, excitation, start = np.array([0.5, 0.3, 0.2]), np.array([3.0, 0.0, 1.0]), 10.0
    rng = np.random.default_rng(11)
    times, types, counts = regime.sample_continuations(
        PARAMS, rng, 6000, start, probs, excitation, until=start + 4.0
    )
    assert times.shape == types.shape and np.all(counts == (types >= 0).sum(axis=1))
    assert np.all(np.isnan(times) == (types < 0)) and np.nanmin(times) > start
    steps = np.diff(times, axis=1)
    assert np.nanmax(times) <= start + 4.0 and np.all(steps[~np.isnan(steps)] >= 0)
    scalar = []
    for _ in range(3000):
        z = rng.choice(3, p=probs)
        t, _, _ = regime.simulate(
            PARAMS, rng, t_end=start + 4.0, start=start, regime=z, excitation=excitation
        )
        scalar.append(t.size)
    scalar = np.array(scalar)
    se = math.sqrt(counts.var() / counts.size + scalar.var() / scalar.size)
    assert abs(counts.mean() - scalar.mean()) < 4 * se
    times, types, counts = regime.sample_continuations(
        PARAMS, np.random.default_rng(12), 50, start, probs, excitation, steps=7
    )
    assert times.shape == (50, 7) and np.all(counts == 7)
    again = regime.sample_continuations(
        PARAMS, np.random.default_rng(12), 50, start, probs, excitation, steps=7
    )
    np.testing.assert_array_equal(again[0], times)
    with pytest.raises(ValueError, match="steps, until"):
        regime.sample_continuations(PARAMS, rng, 5, start, probs, excitation)
    with pytest.raises(ValueError, match="max_events"):
        regime.sample_continuations(
            PARAMS, rng, 2, start, probs, excitation, until=1e6, max_events=50
        )
