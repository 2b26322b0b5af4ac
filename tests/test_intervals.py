import numpy as np
import pytest

from mmtpp.intervals import (
    Interval,
    bootstrap_ci,
    mean_over_seeds,
    over_seeds,
    paired_difference,
    paired_over_seeds,
    ratio_of_means,
    sqrt_of_mean,
)

SIMULATIONS = 500


def tolerance(level: float, simulations: int = SIMULATIONS) -> float:
    """3 Monte-Carlo standard errors of a coverage estimate (±0.029 at 95% from 500 sets)."""
    return 3 * np.sqrt(level * (1 - level) / simulations)


def test_bootstrap_covers_the_true_mean_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(SIMULATIONS, 60))
    for level in (0.95, 0.8):
        cis = [bootstrap_ci(x, level=level, resamples=1000, seed=i) for i, x in enumerate(data)]
        coverage = np.mean([ci.contains(3.0) for ci in cis])
        assert abs(coverage - level) < tolerance(level)


def test_rmse_interval_covers_the_true_rmse_and_contains_the_plug_in_estimate():
    rng = np.random.default_rng(1)
    errors = rng.normal(0.0, 1.5, size=(SIMULATIONS, 200))  # true RMSE 1.5
    hits = []
    for i, e in enumerate(errors):
        ci = bootstrap_ci(e**2, stat=sqrt_of_mean, resamples=1000, seed=i)
        assert ci.estimate == pytest.approx(np.sqrt(np.mean(e**2)))
        assert ci.low <= ci.estimate <= ci.high
        hits.append(ci.contains(1.5))
    assert abs(np.mean(hits) - 0.95) < tolerance(0.95)


def test_a_known_case_by_enumeration():
    # two targets: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    whole = bootstrap_ci([0.0, 1.0], resamples=20_000)
    assert (whole.low, whole.high) == (0.0, 1.0)
    middle = bootstrap_ci([0.0, 1.0], level=0.4, resamples=20_000)
    assert (middle.low, middle.high, middle.estimate) == (0.5, 0.5, 0.5)


def test_ratio_statistic_is_a_ratio_of_totals():
    # per target: summed NLL and its number of events; the figure is NLL per event
    values = np.array([[3.0, 1.0], [10.0, 4.0], [2.0, 2.0], [6.0, 3.0]])
    ci = bootstrap_ci(values, stat=ratio_of_means, resamples=500)
    assert ci.estimate == pytest.approx(21 / 10) and ci.low <= 2.1 <= ci.high
    with pytest.raises(ValueError, match="one number"):
        bootstrap_ci(values)  # two columns need a statistic that reduces them


@pytest.mark.parametrize("stat", [None, sqrt_of_mean])
def test_paired_difference_of_identical_variants_is_exactly_zero(stat):
    a = np.random.default_rng(2).gamma(2.0, size=300)
    d = paired_difference(a, a.copy(), stat=stat, resamples=500)
    assert (d.estimate, d.low, d.high) == (0.0, 0.0, 0.0)
    seeds = [a, a * 2, a + 1]
    d = paired_over_seeds(seeds, [s.copy() for s in seeds], stat=stat)
    assert (d.estimate, d.low, d.high, d.method) == (0.0, 0.0, 0.0, "t")


def test_paired_difference_cancels_shared_noise_and_covers_the_true_difference():
    rng = np.random.default_rng(3)
    hits, paired_width, unpaired_width = [], [], []
    for i in range(200):
        hard = rng.exponential(5.0, size=150)  # per-target difficulty both variants share
        a = hard + rng.normal(0.0, 0.5, size=150)
        b = hard + 0.2 + rng.normal(0.0, 0.5, size=150)
        d = paired_difference(a, b, resamples=1000, seed=i)
        hits.append(d.contains(-0.2))
        paired_width.append(d.high - d.low)
        unpaired_width.append(bootstrap_ci(a, seed=i).high - bootstrap_ci(a, seed=i).low)
    assert abs(np.mean(hits) - 0.95) < tolerance(0.95, 200)
    assert np.mean(paired_width) < 0.2 * np.mean(unpaired_width)


def test_seeded_and_deterministic():
    x = np.random.default_rng(4).normal(size=80)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci(x, seed=7) != bootstrap_ci(x, seed=8)
    y = x + np.random.default_rng(5).normal(size=80)
    assert paired_difference(x, y, seed=1) == paired_difference(x, y, seed=1)


def test_t_interval_over_a_few_seeds_has_nominal_coverage():
    # 3 seeds: a normal-quantile interval would cover only ~83%; Student's t covers 95%
    figures = np.random.default_rng(6).normal(0.6, 0.05, size=(2000, 3))
    hits = [mean_over_seeds(f).contains(0.6) for f in figures]
    assert abs(np.mean(hits) - 0.95) < tolerance(0.95, 2000)
    ci = mean_over_seeds([0.5, 0.6, 0.7])
    assert ci.estimate == pytest.approx(0.6)
    assert ci.half_width == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)


def test_over_seeds_uses_the_bootstrap_for_one_seed_and_t_for_several():
    rng = np.random.default_rng(7)
    runs = [rng.normal(loc, 1.0, size=100) for loc in (1.0, 1.2, 0.9)]
    assert over_seeds(runs[:1], seed=3) == bootstrap_ci(runs[0], seed=3)
    assert over_seeds(runs) == mean_over_seeds([r.mean() for r in runs])
    rmse = over_seeds([r**2 for r in runs], stat=sqrt_of_mean)
    assert rmse == mean_over_seeds([np.sqrt(np.mean(r**2)) for r in runs])
    diff = paired_over_seeds(runs, [r + 0.5 for r in runs])
    assert diff.estimate == pytest.approx(-0.5) and diff.half_width == pytest.approx(0, abs=1e-12)
    assert paired_over_seeds(runs[:1], runs[1:2], seed=2) == paired_difference(
        runs[0], runs[1], seed=2
    )


def test_bad_input_is_named():
    good = np.arange(10.0)
    cases = [
        (lambda: bootstrap_ci([]), "0 target"),
        (lambda: bootstrap_ci([1.0]), "at least 2"),
        (lambda: bootstrap_ci([1.0, np.nan, 2.0]), "non-finite values in 1 of 3 targets"),
        (lambda: bootstrap_ci(good, level=95), "level"),
        (lambda: bootstrap_ci(good, resamples=0), "resamples"),
        (lambda: paired_difference(good, good[:9]), "same targets"),
        (lambda: mean_over_seeds([0.5]), "S >= 2"),
        (lambda: mean_over_seeds([0.5, np.inf]), "non-finite"),
        (lambda: paired_over_seeds([good], [good, good]), "pair the same seeds"),
        (lambda: over_seeds([]), "at least one seed"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


def test_interval_formats_and_serialises():
    ci = Interval(0.5, 0.4, 0.6, 0.95, 100, "t")
    assert str(ci) == "0.5 [0.4, 0.6]" and ci.to_dict()["method"] == "t"
    assert ci.half_width == pytest.approx(0.1)
