import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kstest

from mmtpp import hawkes, profile, profile_posterior, regime, regime_filter
from mmtpp.hawkes import HawkesParams
from mmtpp.oracle import HawkesOracle, ProfileOracle, RegimeOracle, oracle_for, oracle_from_source
from mmtpp.profile import ProfileParams
from mmtpp.regime import RegimeParams, uniform_switching

HAWKES = HawkesParams(
    mu=[0.3, 0.1, 0.05], alpha=[[0.5, 0.1, 0], [0.1, 0.4, 0.1], [0, 0.2, 0.3]], beta=5.0
)
REGIME = RegimeParams(
    mu=[0.1, 0.5, 1.2],
    mix=[[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7]],
    switch=uniform_switching([0.002, 0.008, 0.02]),
    alpha=HAWKES.alpha,
    beta=5.0,
)
PROFILE = ProfileParams(
    num_types=3,
    concentration=0.5,
    favourite_weight=3.0,
    rate_shape=1.5,
    rate_time=0.3,
    gap_shape=2.0,
    image_noise=0.2,
)
ORACLES = {
    "hawkes": HawkesOracle(HAWKES),
    "regime": RegimeOracle(REGIME),
    "profile": ProfileOracle(PROFILE),
}
KINDS = list(ORACLES)


def history(kind, n=300, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "hawkes":
        return hawkes.simulate(HAWKES, rng, num_events=n)
    if kind == "profile":
        return profile.simulate(PROFILE, rng, n)[:2]
    return regime.simulate(REGIME, rng, num_events=n)[:2]


def test_oracle_from_source_reads_every_process():
    assert isinstance(oracle_from_source({"hawkes": HAWKES.to_dict()}), HawkesOracle)
    made = oracle_from_source({"profile": PROFILE.to_dict(), "hint_backgrounds": []})
    assert isinstance(made, ProfileOracle) and made.params == PROFILE and made.num_types == 3
    made = oracle_from_source({"regime": REGIME.to_dict(), "bayes_optimal": {}})
    assert isinstance(made, RegimeOracle) and made.params == REGIME and made.num_types == 3
    assert oracle_from_source({"generator": {}}) is None
    with pytest.raises(ValueError, match="unknown"):
        oracle_from_source({"regime": {**REGIME.to_dict(), "extra": 1}})


def test_oracle_for_picks_the_process_of_its_parameters():
    for params, kind in ((HAWKES, HawkesOracle), (REGIME, RegimeOracle), (PROFILE, ProfileOracle)):
        made = oracle_for(params)
        assert type(made) is kind and made.params == params
    assert oracle_for(ORACLES["regime"]) is ORACLES["regime"]


def test_one_regime_oracle_equals_the_hawkes_oracle():
    plain = ORACLES["hawkes"]
    one = RegimeOracle(RegimeParams.from_hawkes(HAWKES))
    times, types = history("hawkes", 400, 1)
    targets = np.array([1, 5, 50, 399])
    for h in (None, 1, 3, 14):
        a, b = (
            plain.predictions(times, types, targets, h),
            one.predictions(times, types, targets, h),
        )
        for name in ("mean_gap", "median_gap", "type_probs", "nll", "nll_time", "nll_type"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(
            one.gap_cdf(times, types, None, targets, h),
            plain.gap_cdf(times, types, None, targets, h),
            rtol=1e-11,
            atol=1e-15,
        )
        levels = [0.05, 0.25, 0.5, 0.75, 0.95]
        np.testing.assert_allclose(
            one.gap_quantiles(times, types, levels, [400], h),
            plain.gap_quantiles(times, types, levels, [400], h),
            rtol=1e-11,
        )


@pytest.mark.parametrize("kind", KINDS)
def test_gap_cdf_at_the_true_gaps_is_a_uniform_pit(kind):
    oracle = ORACLES[kind]
    pit = np.concatenate([oracle.gap_cdf(*history(kind, 1500, seed)) for seed in range(6)])
    assert pit.shape == (6 * 1499,) and np.all((pit > 0) & (pit < 1))
    assert kstest(pit, "uniform").pvalue > 0.01


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from(KINDS),
    st.integers(1, 299),
    st.sampled_from([None, 1, 5, 40]),
    st.lists(st.floats(1e-6, 1 - 1e-6), min_size=1, max_size=4),
)
def test_quantiles_invert_the_cdf(kind, target, h, levels):
    oracle = ORACLES[kind]
    times, types = history(kind)
    q = oracle.gap_quantiles(times, types, levels, [target], h)
    assert q.shape == (1, len(levels))
    back = oracle.gap_cdf(times, types, q, [target], h)
    np.testing.assert_allclose(back, np.asarray(levels)[None], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_quantiles_after_the_history_and_for_all_targets(kind):
    oracle = ORACLES[kind]
    times, types = history(kind, 50)
    q = oracle.gap_quantiles(times, types, [0.1, 0.5, 0.9])
    assert q.shape == (49, 3) and np.all(np.diff(q, axis=1) > 0)
    np.testing.assert_allclose(q[:, 1], oracle.predictions(times, types).median_gap, rtol=1e-9)
    mean, median, probs = oracle.predict_next(times, types)
    b = oracle.predictions(times, types)
    np.testing.assert_allclose(mean, b.mean_gap, rtol=1e-12)
    np.testing.assert_allclose(median, b.median_gap, rtol=1e-12)
    np.testing.assert_allclose(probs, b.type_probs, rtol=1e-12)
    mean, _, probs = oracle.predict_next(times, types, [50])  # the event after the history
    assert mean.shape == (1,) and probs.shape == (1, 3) and probs.sum() == pytest.approx(1)
    after = oracle.gap_quantiles(times, types, [0.5], [50])
    assert after.shape == (1, 1) and after[0, 0] > 0
    with pytest.raises(ValueError, match="targets"):
        oracle.gap_quantiles(times, types, [0.5], [51])


@pytest.mark.parametrize("kind", KINDS)
def test_predictions_for_histories_equal_one_history_at_a_time(kind):
    oracle = ORACLES[kind]
    times, types = history(kind, 200, 3)
    together = oracle.predictions_for_histories(times, types, [None, 2, 14])
    for h, b in zip([None, 2, 14], together, strict=True):
        np.testing.assert_allclose(b.nll, oracle.predictions(times, types, history=h).nll)


@pytest.mark.parametrize("kind", KINDS)
def test_continuations_are_valid_and_reproducible(kind):
    oracle = ORACLES[kind]
    times, types = history(kind, 100)
    a = oracle.continuations(times, types, np.random.default_rng(4), 30, steps=8)
    b = oracle.continuations(times, types, np.random.default_rng(4), 30, steps=8)
    np.testing.assert_array_equal(a.times, b.times)
    assert a.times.shape == a.types.shape == (30, 8) and np.all(a.counts == 8)
    assert a.start == times[-1] and np.all(a.times > times[-1])
    assert np.all(np.diff(a.times, axis=1) > 0) and set(np.unique(a.types)) <= {0, 1, 2}
    c = oracle.continuations(times, types, np.random.default_rng(5), 30, until=times[-1] + 5.0)
    assert np.all(c.counts == (c.types >= 0).sum(axis=1))
    assert np.all(np.isnan(c.times) == (c.types == -1)) and np.nanmax(c.times) <= times[-1] + 5
    t0, k0 = c.sample(0)
    assert t0.size == c.counts[0] and np.all(k0 >= 0)
    d = oracle.continuations(times, types, np.random.default_rng(5), 30, steps=2, until=1e9)
    assert np.all(d.counts == 2)
    empty = oracle.continuations([], [], np.random.default_rng(6), 5, steps=3)
    assert empty.start == 0.0 and np.all(np.diff(empty.times, axis=1) > 0)
    # a profile sequence opens with its event 0 at the origin; the Hawkes ones after a gap
    first = empty.times[:, 0]
    assert np.all(first == 0) if kind == "profile" else np.all(first > 0)


@pytest.mark.parametrize("kind", KINDS)
def test_continuations_follow_the_true_law_after_the_history(kind):
    """First gap and type against the oracle's closed forms; the count in a window against
    the scalar simulator started from the same state (Hawkes processes; the profile sampler's
    multi-step law is checked in test_profile against simulated histories and futures)."""
    oracle = ORACLES[kind]
    times, types = history(kind, 200, 7)
    n = 6000
    cont = oracle.continuations(times, types, np.random.default_rng(8), n, until=times[-1] + 3.0)
    first = np.where(cont.counts > 0, cont.times[:, 0] - times[-1], np.inf)
    for tau in (0.02, 0.3, 2.0):
        p = oracle.gap_cdf(times, types, [tau], [200])[0]
        assert abs(np.mean(first <= tau) - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3
    mean, _, probs = oracle.predict_next(times, types, [200])
    probs = probs[0]
    steps = oracle.continuations(times, types, np.random.default_rng(9), n, steps=1)
    gaps = steps.times[:, 0] - times[-1]
    assert abs(gaps.mean() - mean[0]) < 4 * gaps.std() / math.sqrt(n)
    for k in range(3):
        assert (
            abs(np.mean(steps.types[:, 0] == k) - probs[k])
            < 4 * math.sqrt(probs[k] * (1 - probs[k]) / n) + 1e-3
        )
    if kind == "profile":
        return
    rng = np.random.default_rng(10)
    scalar = []
    for _ in range(2000):
        if kind == "hawkes":
            state = hawkes.excitation_before(HAWKES, times, types, [200])[0]
            t, _ = hawkes.simulate(
                HAWKES, rng, t_end=times[-1] + 3.0, start=times[-1], excitation=state
            )
        else:
            probs_z, state = regime_filter.filtered_states(REGIME, times, types, [200])
            t, _, _ = regime.simulate(
                REGIME,
                rng,
                t_end=times[-1] + 3.0,
                start=times[-1],
                regime=rng.choice(3, p=probs_z[0]),
                excitation=state[0],
            )
        scalar.append(t.size)
    scalar = np.asarray(scalar)
    se = math.sqrt(cont.counts.var() / n + scalar.var() / scalar.size)
    assert abs(cont.counts.mean() - scalar.mean()) < 4 * se


def test_profile_image_predictions_read_the_hints():
    oracle = ORACLES["profile"]
    rng = np.random.default_rng(11)
    times, types, drawn = profile.simulate(PROFILE, rng, 200)
    shown = profile.shown_hints(PROFILE, drawn, types, rng)
    both = oracle.image_predictions_for_histories(times, types, shown, [None, 3])
    for h, b in zip([None, 3], both, strict=True):
        one = oracle.image_predictions(times, types, shown, history=h)
        np.testing.assert_allclose(b.nll, one.nll)
        want = profile_posterior.bayes_predictions(PROFILE, times, types, h, shown=shown)
        np.testing.assert_allclose(one.type_probs, want.type_probs)
        blind = oracle.predictions(times, types, history=h)
        np.testing.assert_allclose(one.nll_time, blind.nll_time)  # the hints are about types
        assert not np.allclose(one.type_probs, blind.type_probs)
