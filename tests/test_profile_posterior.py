import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.integrate import quad
from test_profile import PARAMS, sim, with_

from mmtpp import profile, profile_posterior
from mmtpp.profile_posterior import NextEvent

# --------------------------------------------------------------- closed forms vs definitions


@pytest.mark.parametrize(
    ("seen", "spent", "shape"), [(0, 0.0, 1.0), (0, 0.0, 2.0), (3, 0.7, 2.0), (40, 3.1, 0.7)]
)
def test_gap_law_is_the_gamma_mixture_over_the_posterior_rate(seen, spent, shape):
    params = with_(gap_shape=shape)
    ev = NextEvent(params, np.zeros((1, 4)), np.array([seen]), np.array([spent]))
    big_a, big_b = ev.shape[0], ev.scale[0]
    posterior = stats.gamma(big_a, scale=1 / big_b)

    def mixture(law_at):  # ∫ law_at(λ)·Gamma(λ; A, B) dλ, over u = log λ (a smooth bump)
        def integrand(u):
            return law_at(math.exp(u)) * posterior.pdf(math.exp(u)) * math.exp(u)

        return quad(integrand, -60, 15, limit=500, epsabs=0, epsrel=1e-12)[0]

    taus = np.array([1e-3, 0.05, 0.4, 2.0, 15.0])
    density = [mixture(lambda lam, t=t: stats.gamma.pdf(t, shape, scale=1 / lam)) for t in taus]
    cdf = [mixture(lambda lam, t=t: stats.gamma.cdf(t, shape, scale=1 / lam)) for t in taus]
    np.testing.assert_allclose(np.exp(ev.log_density(taus[None, :]))[0], density, rtol=1e-7)
    np.testing.assert_allclose(ev.cdf(taus[None, :])[0], cdf, rtol=1e-7, atol=1e-13)
    mean = mixture(lambda lam: shape / lam)  # E[τ | λ] = s/λ
    assert ev.mean_gap()[0] == pytest.approx(mean, rel=1e-7)
    if shape == 1.0:  # the Lomax law
        assert ev.cdf(np.array([0.3]))[0] == pytest.approx(1 - (big_b / (big_b + 0.3)) ** big_a)
        assert ev.median_gap()[0] == pytest.approx(big_b * (2 ** (1 / big_a) - 1), rel=1e-12)


@pytest.mark.parametrize(
    ("counts", "hints"),
    [((0, 0), None), ((3, 1), None), ((0, 5), (2, 0)), ((1, 1), (0, 3)), ((7, 0), (1, 1))],
)
def test_two_type_predictive_is_the_posterior_mean_of_the_row(counts, hints):
    """K = 2: the row is (x, 1 − x); integrate x against the prior Beta(α + κ[f = 0],
    α + κ[f = 1]), the counts' likelihood and the images' likelihood, summed over f."""
    params = with_(num_types=2, image_noise=0.3)
    alpha, kappa = params.concentration, params.favourite_weight
    c0, c1 = counts

    def weight(f, power):  # ∫ x^power · prior · x^c0 (1−x)^c1 dx, times P(images | f)
        b0, b1 = alpha + kappa * (f == 0), alpha + kappa * (f == 1)
        wvar = (b0 - 1 + c0, b1 - 1 + c1)
        integral = quad(lambda x: x**power, 0, 1, weight="alg", wvar=wvar, epsrel=1e-12)[0]
        prior = 1 / math.gamma(b0) / math.gamma(b1) * math.gamma(b0 + b1)
        images = 1.0
        if hints is not None:
            images = 0.7 ** hints[f] * 0.3 ** hints[1 - f]
        return integral * prior * images

    want = sum(weight(f, 1) for f in (0, 1)) / sum(weight(f, 0) for f in (0, 1))
    ev = NextEvent(
        params,
        np.array([counts], float),
        np.zeros(1),
        np.zeros(1),
        None if hints is None else np.array([hints], float),
    )
    assert ev.type_probs()[0, 0] == pytest.approx(want, rel=1e-9)


def test_four_type_predictive_matches_importance_sampling_over_the_prior():
    rng = np.random.default_rng(5)
    counts = np.array([2.0, 0.0, 1.0, 0.0])
    hints = np.array([0.0, 2.0, 0.0, 1.0])
    n = 400_000
    fav = rng.integers(0, 4, n)
    conc = np.full((n, 4), PARAMS.concentration)
    conc[np.arange(n), fav] += PARAMS.favourite_weight
    rows = rng.gamma(conc)
    rows /= rows.sum(axis=1, keepdims=True)
    images = np.where(np.arange(4)[None] == fav[:, None], 1 - 0.2, 0.2 / 3) ** hints
    weight = np.prod(rows**counts, axis=1) * np.prod(images, axis=1)
    want = (weight[:, None] * rows).sum(axis=0) / weight.sum()
    fav_want = np.bincount(fav, weights=weight, minlength=4) / weight.sum()
    ev = NextEvent(PARAMS, counts[None], np.zeros(1), np.zeros(1), hints[None])
    np.testing.assert_allclose(ev.type_probs()[0], want, atol=0.01)
    np.testing.assert_allclose(ev.favourite_probs()[0], fav_want, atol=0.01)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 50),
    st.floats(0.0, 30.0, allow_subnormal=False),
    st.sampled_from([0.5, 1.0, 3.0]),
    st.lists(st.floats(1e-9, 1 - 1e-9), min_size=1, max_size=5),
)
def test_quantiles_invert_the_cdf(seen, spent, shape, levels):
    ev = NextEvent(with_(gap_shape=shape), np.zeros((1, 4)), np.array([seen]), np.array([spent]))
    q = ev.quantiles(levels)
    assert q.shape == (1, len(levels)) and np.all(q > 0)
    np.testing.assert_allclose(ev.cdf(q)[0], levels, rtol=1e-9, atol=1e-13)
    edge = ev.quantiles([0.0, 1.0])[0]
    assert edge[0] == 0.0 and edge[1] == np.inf


# ---------------------------------------------------------------------------- windows


def brute_force(params, times, types, shown, i, history):
    """The window's evidence about the last type's row and rate, by direct counting."""
    lo = 0 if history is None else max(0, i - history)
    k = types[i - 1]
    counts = np.zeros(params.num_types)
    hints = np.zeros(params.num_types)
    seen, spent = 0, 0.0
    for e in range(lo + 1, i):
        if types[e - 1] == k:
            counts[types[e]] += 1
            seen += 1
            spent += times[e] - times[e - 1]
    for e in range(lo, i):
        if types[e] == k:
            hints[shown[e]] += 1
    return counts, hints, seen, spent


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 60),
    st.integers(0, 10_000),
    st.sampled_from([None, 1, 2, 3, 7, 20]),
)
def test_window_evidence_counts_exactly_the_last_events(n, seed, history):
    rng = np.random.default_rng(seed)
    times, types, drawn = profile.simulate(PARAMS, rng, n)
    shown = profile.shown_hints(PARAMS, drawn, types, rng)
    targets = np.arange(1, n + 1)  # n: the event after the history
    ev = profile_posterior.next_event(PARAMS, times, types, targets, history, shown)
    for row, i in enumerate(targets):
        counts, hints, seen, spent = brute_force(PARAMS, times, types, shown, i, history)
        np.testing.assert_array_equal(ev.counts[row], counts)
        np.testing.assert_array_equal(ev.hints[row], hints)
        assert ev.seen[row] == seen and ev.spent[row] == pytest.approx(spent, abs=1e-9)


def test_predictions_are_consistent_across_windows_and_parts():
    times, types, _ = sim(n=120, seed=6)
    full = profile_posterior.bayes_predictions(PARAMS, times, types)
    np.testing.assert_allclose(full.nll, full.nll_time + full.nll_type)
    np.testing.assert_allclose(full.type_probs.sum(axis=1), 1.0)
    wide = profile_posterior.bayes_predictions(PARAMS, times, types, history=500)
    np.testing.assert_array_equal(wide.nll, full.nll)
    short = profile_posterior.bayes_predictions(PARAMS, times, types, history=5)
    np.testing.assert_array_equal(short.nll[:5], full.nll[:5])  # targets 1..5 see everything
    assert not np.allclose(short.nll[10:], full.nll[10:])
    one = profile_posterior.bayes_predictions(PARAMS, times, types, targets=[7, 100])
    np.testing.assert_allclose(one.nll, full.nll[[6, 99]])
    with pytest.raises(ValueError, match="history"):
        profile_posterior.bayes_predictions(PARAMS, times, types, history=0)
    with pytest.raises(ValueError, match="types"):
        profile_posterior.bayes_predictions(PARAMS, times, np.r_[types[:-1], 4])
    with pytest.raises(ValueError, match="hints"):
        profile_posterior.bayes_predictions(PARAMS, times, types, shown=types[:-1])


# ---------------------------------------------------------------- calibration and value


def prior_sample(params, sequences, n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(sequences):
        times, types, drawn = profile.simulate(params, rng, n)
        out.append((times, types, profile.shown_hints(params, drawn, types, rng)))
    return out


def reliability_gap(probs, outcomes, bins=10):
    """Largest |observed frequency − mean predicted probability| over probability bins with
    enough pairs, in units of the bin's binomial standard error (plus 0.01 slack)."""
    edges = np.linspace(0, 1, bins + 1)
    where = np.clip(np.digitize(probs, edges) - 1, 0, bins - 1)
    worst = 0.0
    for b in range(bins):
        inside = where == b
        if inside.sum() < 200:
            continue
        p, y = probs[inside].mean(), outcomes[inside].mean()
        se = math.sqrt(p * (1 - p) / inside.sum())
        worst = max(worst, abs(y - p) / (se + 0.01 / 3))
    return worst


@pytest.mark.parametrize("images", [False, True])
def test_the_predictive_is_calibrated_on_data_from_the_prior(images):
    data = prior_sample(PARAMS, 300, 80, seed=7)
    pit, probs, hits = [], [], []
    for times, types, shown in data:
        ev = profile_posterior.next_event(PARAMS, times, types, shown=shown if images else None)
        pit.append(ev.cdf(np.diff(times)))
        p = ev.type_probs()
        probs.append(p.ravel())
        hits.append((np.arange(4)[None] == types[1:, None]).ravel())
    pit = np.concatenate(pit)
    assert pit.size == 300 * 79 and stats.kstest(pit, "uniform").pvalue > 0.01
    assert reliability_gap(np.concatenate(probs), np.concatenate(hits)) < 3.5


def test_all_history_beats_the_last_events():
    data = prior_sample(PARAMS, 120, 250, seed=8)
    scores = {h: [] for h in (None, 14, 2)}
    for times, types, _ in data:
        for h in scores:
            b = profile_posterior.bayes_predictions(PARAMS, times, types, history=h)
            scores[h].append(
                np.c_[b.nll_time, b.nll_type, b.most_probable_type == types[1:]].mean(axis=0)
            )
    mean = {h: np.mean(v, axis=0) for h, v in scores.items()}
    full, last14, last2 = mean[None], mean[14], mean[2]
    assert full[0] < last14[0] - 0.05 < last2[0] - 0.1  # time NLL
    assert full[1] < last14[1] - 0.1 < last2[1] - 0.2  # type NLL
    assert full[2] > last14[2] + 0.03 > last2[2] + 0.06  # accuracy


# ------------------------------------------------------------------------ continuations


def test_posterior_draws_average_to_the_predictive():
    times, types, _ = sim(n=60, seed=9)
    trans, rates = profile_posterior.posterior_draws(
        PARAMS, np.random.default_rng(10), 40_000, times, types
    )
    assert trans.shape == (40_000, 4, 4) and rates.shape == (40_000, 4)
    ev = profile_posterior.next_event(PARAMS, times, types, [60])
    last = types[-1]
    np.testing.assert_allclose(trans[:, last].mean(axis=0), ev.type_probs()[0], atol=0.006)
    assert rates[:, last].mean() == pytest.approx(ev.shape[0] / ev.scale[0], rel=0.01)


def test_continuations_start_a_new_sequence_after_an_empty_history():
    rng = np.random.default_rng(11)
    start, times, types, counts = profile_posterior.sample_continuations(
        PARAMS, rng, 4000, [], [], 2
    )
    assert start == 0.0 and np.all(counts == 2) and np.all(times[:, 0] == 0.0)
    np.testing.assert_allclose(np.bincount(types[:, 0], minlength=4) / 4000, 0.25, atol=0.03)
    # the first gap follows the prior predictive (favourites and rates from the priors)
    prior = NextEvent(PARAMS, np.zeros((1, 4)), np.zeros(1), np.zeros(1))
    pit = prior.cdf(times[None, :, 1])[0]
    assert stats.kstest(pit, "uniform").pvalue > 0.001


def continuation_statistics(history_t, history_k, future_t, future_k):
    """Statistics of (history, future) that depend on what the history taught: the share of
    future transitions already seen in the history, and the mean log ratio of a future gap to
    the mean history gap after the same type (where the history has one)."""
    k = np.r_[history_k[-1], future_k]
    seen = set(itertools.pairwise(history_k.tolist()))
    repeat = np.mean([pair in seen for pair in itertools.pairwise(k.tolist())])
    gaps_h = np.diff(history_t)
    gaps_f = np.diff(np.r_[history_t[-1], future_t])
    ratios = []
    for a, g in zip(k[:-1], gaps_f, strict=True):
        before = gaps_h[history_k[:-1] == a]
        if before.size:
            ratios.append(math.log(g / before.mean()))
    return repeat, (np.mean(ratios) if ratios else np.nan)


def test_continuations_have_the_joint_law_of_history_and_future():
    """Simulated sequences of 12 + 8 events against the same 12-event histories continued by
    the sampler: both are draws of (history, future) from the process, so every statistic of
    the pair has the same mean. A sampler that forgot the history (drawing the profile from
    the prior) or trusted it too much (its raw frequencies) would shift these means."""
    rng = np.random.default_rng(12)
    truth, sampled = [], []
    for _ in range(2500):
        times, types, _ = profile.simulate(PARAMS, rng, 20)
        truth.append(continuation_statistics(times[:12], types[:12], times[12:], types[12:]))
        _, t, k, _ = profile_posterior.sample_continuations(
            PARAMS, rng, 1, times[:12], types[:12], 8
        )
        sampled.append(continuation_statistics(times[:12], types[:12], t[0], k[0]))
    truth, sampled = np.array(truth), np.array(sampled)
    for col in range(2):
        a, b = truth[:, col], sampled[:, col]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        se = math.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(a.mean() - b.mean()) < 4 * se


def test_continuations_stop_at_until_and_grow_their_width():
    times, types, _ = sim(n=50, seed=13)
    start, t, k, counts = profile_posterior.sample_continuations(
        PARAMS, np.random.default_rng(14), 20, times, types, until=times[-1] + 60.0
    )
    assert start == times[-1] and t.shape[1] == counts.max() > 16
    assert np.all(np.isnan(t) == (k == -1)) and np.nanmax(t) <= times[-1] + 60.0
    with pytest.raises(ValueError, match="until"):
        profile_posterior.sample_continuations(
            PARAMS, np.random.default_rng(0), 2, times, types, until=0.0
        )
    with pytest.raises(ValueError, match="max_events"):
        profile_posterior.sample_continuations(
            PARAMS, np.random.default_rng(0), 2, times, types, until=1e9, max_events=30
        )
