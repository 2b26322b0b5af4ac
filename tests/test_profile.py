import math

import numpy as np
import pytest
from scipy import stats

from mmtpp import profile
from mmtpp.profile import ProfileParams

PARAMS = ProfileParams(
    num_types=4,
    concentration=0.5,
    favourite_weight=4.0,
    rate_shape=1.5,
    rate_time=0.2,
    gap_shape=2.0,
    image_noise=0.2,
)


def sim(params=PARAMS, n=300, seed=0):
    return profile.simulate(params, np.random.default_rng(seed), n)


def with_(params=PARAMS, **changes):
    return ProfileParams(**{**params.to_dict(), **changes})


def test_parameter_checks():
    assert ProfileParams.from_dict(PARAMS.to_dict()) == PARAMS
    with pytest.raises(ValueError, match="unknown"):
        ProfileParams.from_dict({**PARAMS.to_dict(), "beta": 1.0})
    with pytest.raises(ValueError, match="missing"):
        ProfileParams.from_dict({k: v for k, v in PARAMS.to_dict().items() if k != "gap_shape"})
    bad = {
        "num_types": 1,
        "concentration": 0.001,
        "favourite_weight": -1.0,
        "rate_shape": 1.0,  # the mean gap of a fresh type would be infinite
        "rate_time": 0.0,
        "gap_shape": float("nan"),
        "image_noise": 1.5,
    }
    for name, value in bad.items():
        with pytest.raises(ValueError, match=name):
            with_(**{name: value})
    assert with_(favourite_weight=0.0, image_noise=0.0).favourite_weight == 0.0


def test_simulation_is_valid_reproducible_and_follows_the_profile():
    times, types, drawn = sim(n=20_000, seed=1)
    assert times[0] == 0.0 and np.all(np.diff(times) > 0) and set(types) <= {0, 1, 2, 3}
    again = sim(n=20_000, seed=1)
    assert np.array_equal(times, again[0]) and np.array_equal(types, again[1])
    np.testing.assert_allclose(drawn.transitions.sum(axis=1), 1.0)
    gaps = np.diff(times)
    for k in range(4):
        after = types[:-1] == k
        if after.sum() < 200:
            continue
        seen = np.bincount(types[1:][after], minlength=4) / after.sum()
        np.testing.assert_allclose(seen, drawn.transitions[k], atol=4 / math.sqrt(after.sum()))
        law = stats.gamma(PARAMS.gap_shape, scale=1 / drawn.rates[k])
        assert stats.kstest(gaps[after], law.cdf).pvalue > 0.001
    assert sim(n=0)[0].size == 0 and sim(n=1)[0].tolist() == [0.0]


def test_profiles_follow_the_priors():
    rng = np.random.default_rng(2)
    draws = [profile.draw_profile(PARAMS, rng) for _ in range(4000)]
    rates = np.concatenate([d.rates for d in draws])
    law = stats.gamma(PARAMS.rate_shape, scale=1 / PARAMS.rate_time)
    assert stats.kstest(rates, law.cdf).pvalue > 0.001
    fav = np.array([d.transitions[0, d.favourites[0]] for d in draws])
    # a Dirichlet marginal is a beta: the favourite's share ~ Beta(α + κ, (K − 1)α)
    share = stats.beta(0.5 + 4.0, 3 * 0.5)
    assert stats.kstest(fav, share.cdf).pvalue > 0.001
    assert np.bincount([d.favourites[2] for d in draws], minlength=4).min() > 900


def test_images_show_the_favourite_but_for_the_noise():
    _, types, drawn = sim(n=20_000, seed=3)
    shown = profile.shown_hints(PARAMS, drawn, types, np.random.default_rng(4))
    right = shown == drawn.favourites[types]
    assert abs(1 - right.mean() - PARAMS.image_noise) < 0.01
    wrong = (shown[~right] - drawn.favourites[types[~right]]) % 4  # uniform over 1..3
    np.testing.assert_allclose(
        np.bincount(wrong, minlength=4)[1:] / (~right).sum(), 1 / 3, atol=0.02
    )
