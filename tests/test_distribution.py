"""Predictive gap distributions: the byte distribution against hand-computed values and
independent formulas."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate

from mmtpp.distribution import ByteGapDistribution, PiecewiseLinearCDF, first_byte_run, prefix_value
from mmtpp.gap_calibration import calibration
from mmtpp.timecodec import decode

# --- helpers ------------------------------------------------------------------------------


def one_cell_arrays():
    """Two rows: row 0 puts 0.5 on cell (63, 0x80) = [1, 1 + 1/128), 0.3 on (64, 0x00) =
    [2, 2 + 2/128), 0.1 on a negative first byte and 0.1 unseen; row 1 only on inf/NaN."""
    first = np.array([[63, 64, 0xBF], [0x7F, 63, 64]])
    p_first = np.array([[0.5, 0.3, 0.1], [0.6, 0.0, 0.0]])
    p_second = np.zeros((2, 3, 256))
    p_second[0, 0, 0x80] = p_second[0, 1, 0x00] = p_second[0, 2, 0x80] = 1.0
    p_second[1, 0, 0x80] = 1.0
    return first, p_first, p_second


def random_arrays(rng: np.random.Generator, rows: int, top: int, spread: int = 3):
    """Byte distributions shaped like ``Predictor.byte_distributions``: top-k first bytes
    near a random mode (sorted by probability), random second bytes, a little mass on
    non-byte tokens at both steps."""
    first = np.empty((rows, top), dtype=np.int64)
    for r in range(rows):
        mode = rng.integers(40, 90)
        first[r] = rng.choice(np.arange(mode - spread, mode + spread + 1), top, replace=False)
    p_first = np.sort(rng.dirichlet(np.ones(top + 1), rows)[:, :top], axis=1)[:, ::-1]
    p_second = rng.dirichlet(np.full(257, 0.3), (rows, top))[:, :, :256]
    return first, p_first, p_second


def cell_table(dist: ByteGapDistribution, row: int):
    """(lo, hi, weight) of the cells with weight in a row, from the knots."""
    x, F = dist.x[row], dist.F[row]
    lo, hi, w = x[0::2], x[1::2], F[1::2] - F[0::2]
    keep = w > 0
    return lo[keep], hi[keep], w[keep]


def crps_of_uniform_mixture(lo, hi, w, y) -> float:
    """E|X − y| − ½E|X − X'| for disjoint uniforms on [lo_i, hi_i) with weights w_i."""
    mid = (lo + hi) / 2
    inside = (y > lo) & (y < hi)
    to_y = np.where(
        inside,
        ((y - lo) ** 2 + (hi - y) ** 2) / (2 * np.where(inside, hi - lo, 1.0)),
        np.abs(mid - y),
    )
    pair = np.abs(mid[:, None] - mid[None, :])
    np.fill_diagonal(pair, (hi - lo) / 3)
    return float(w @ to_y - 0.5 * w @ pair @ w)


# --- two-byte cells -----------------------------------------------------------------------


def test_prefix_value_is_the_float32_with_two_zero_bytes():
    prefix = np.arange(0x7F80)
    raw = np.zeros((prefix.size, 4), dtype=np.uint8)
    raw[:, 0], raw[:, 1] = prefix >> 8, prefix & 255
    assert np.array_equal(prefix_value(prefix), decode(raw).astype(np.float64))
    assert prefix_value(0x7F80) == 2.0**128  # the edge above the largest finite float32
    width = prefix_value(prefix[256:] + 1) / prefix_value(prefix[256:]) - 1
    assert width.max() == pytest.approx(1 / 128) and width.min() > 1 / 256  # the resolution


def test_masses_quantiles_and_mean_of_a_hand_case():
    dist = ByteGapDistribution(*one_cell_arrays())
    assert dist.valid.tolist() == [True, False]
    assert dist.kept_mass[0] == pytest.approx(0.8) and dist.invalid_mass[0] == pytest.approx(0.1)
    assert dist.unseen_mass[0] == pytest.approx(0.1) and dist.dropped_mass[0] == 0
    assert dist.invalid_mass[1] == pytest.approx(0.6) and dist.unseen_mass[1] == pytest.approx(0.4)
    # 5/8 of the mass uniform on [1, 1.0078125), 3/8 on [2, 2.015625)
    q = dist.quantiles([0.0, 0.5, 0.625, 0.8125, 1.0])
    assert q[0] == pytest.approx([1.0, 1.00625, 1.0078125, 2.0078125, 2.015625], abs=1e-15)
    assert np.isnan(q[1]).all()
    assert dist.mean()[0] == pytest.approx((5 * 1.00390625 + 3 * 2.0078125) / 8, rel=1e-15)
    assert dist.cdf(np.array([1.5, 1.0]))[0] == pytest.approx(0.625)
    assert dist.cdf(np.array([[0.5, 1.00390625, 2.0078125, 9.0], [1, 1, 1, 1]]))[0] == (
        pytest.approx([0.0, 0.3125, 0.8125, 1.0])
    )
    low, high = dist.interval(0.5)
    assert (low[0], high[0]) == pytest.approx((1.003125, 2 + 0.015625 / 3))
    assert dist.median()[0] == pytest.approx(1.00625)


def test_the_mean_is_the_predictors_expected_time():
    """One implementation: the distribution's mean is ``Predictor.expected_times`` on the
    same arrays, its guard against a stray far exponent included."""
    predict = pytest.importorskip("mmtpp.predict")
    rng = np.random.default_rng(0)
    first, p_first, p_second = random_arrays(rng, 20, 8, spread=6)
    # a stray far exponent (0x66: ~1e23) with 1% that the guard must drop
    first[0] = [0x42, 0x41, 0x66, 0x43, 0x3F, 0x45, 0x46, 0x47]
    fake = SimpleNamespace(byte_distributions=lambda prompts: (first, p_first, p_second))
    expected = predict.Predictor.expected_times(fake, [None] * 20)
    means = ByteGapDistribution(first, p_first, p_second).mean()
    assert means == pytest.approx([p.value for p in expected], rel=1e-12)
    assert means[0] < 1e4


def test_the_guard_drops_a_far_exponent_and_reports_it():
    first = np.array([[0x42, 0x41, 0x66, 0x43]])  # 32.., 8.., ~1e23, 128..
    p_first = np.array([[0.5, 0.3, 0.01, 0.19]])
    p_second = np.zeros((1, 4, 256))
    p_second[0, :, 0x00] = 1.0
    guarded = ByteGapDistribution(first, p_first, p_second)
    assert guarded.dropped_mass[0] == pytest.approx(0.01)
    assert guarded.kept_first.tolist() == [[True, True, False, True]]
    assert guarded.first_byte_support()[0].nonzero()[0].tolist() == [0x41, 0x42, 0x43]
    raw = ByteGapDistribution(first, p_first, p_second, guard=False)
    assert raw.mean()[0] > 1e20 and guarded.mean()[0] < 200
    y = np.array([30.0])
    assert raw.crps(y)[0] > 1e15 > guarded.crps(y)[0]
    # quantiles barely move: the dropped mass is 1%
    assert guarded.quantiles([0.5]) == pytest.approx(raw.quantiles([0.5]), rel=1e-3)


def test_first_byte_run_keeps_the_run_around_the_most_probable_usable_byte():
    first = np.array([[10, 11, 13, 12, 20], [5, 6, 7, 8, 9]])
    p_first = np.array([[0.1, 0.4, 0.2, 0.2, 0.1], [0.5, 0.2, 0.1, 0.1, 0.1]])
    usable = np.array([[True, True, True, False, True], [False, False, False, False, False]])
    run = first_byte_run(first, p_first, usable)
    assert run.tolist() == [[True, True, False, False, False], [False] * 5]


@given(seed=st.integers(0, 10_000), alpha=st.floats(0.0, 1.0))
def test_cdf_inverts_quantiles(seed, alpha):
    rng = np.random.default_rng(seed)
    dist = ByteGapDistribution(*random_arrays(rng, 3, 4))
    q = dist.quantiles([alpha, min(alpha + 0.01, 1.0)])
    assert (q[:, 1] >= q[:, 0]).all()
    assert dist.cdf(q[:, 0]) == pytest.approx(np.full(3, alpha), abs=1e-9)


@given(seed=st.integers(0, 10_000), where=st.floats(-0.2, 1.2))
def test_crps_is_exact_for_the_piecewise_uniform_distribution(seed, where):
    rng = np.random.default_rng(seed)
    dist = ByteGapDistribution(*random_arrays(rng, 2, 3), guard=False)
    for row in range(2):
        lo, hi, w = cell_table(dist, row)
        y = lo.min() + where * (hi.max() - lo.min())
        got = dist.crps(np.array([y, y]))[row]
        assert got == pytest.approx(crps_of_uniform_mixture(lo, hi, w, y), rel=1e-9, abs=1e-12)


def test_piecewise_crps_matches_numerical_integration():
    x = np.array([[0.0, 1.0, 1.0, 3.0, 4.0]])
    F = np.array([[0.0, 0.25, 0.25, 0.75, 1.0]])
    dist = PiecewiseLinearCDF(x, F)

    def integrand(t: float, y: float) -> float:
        return (np.interp(t, x[0], F[0]) - (t >= y)) ** 2

    for y in (-1.0, 0.5, 2.0, 3.5, 6.0):
        want = integrate.quad(
            integrand, min(y, 0) - 1, max(y, 4) + 1, args=(y,), points=[0, 1, 3, 4, y]
        )[0]
        assert dist.crps(np.array([y]))[0] == pytest.approx(want, rel=1e-9)


def test_pit_of_draws_from_the_distribution_is_uniform():
    rng = np.random.default_rng(1)
    first, p_first, p_second = random_arrays(rng, 1, 2)
    rows = 2000
    dist = ByteGapDistribution(*(np.repeat(a, rows, axis=0) for a in (first, p_first, p_second)))
    lo, hi, w = cell_table(dist, 0)
    cell = rng.choice(w.size, size=rows, p=w / w.sum())
    draws = lo[cell] + rng.random(rows) * (hi[cell] - lo[cell])
    bounds = {c: dist.interval(c) for c in (0.5, 0.9)}
    cal = calibration(dist.pit(draws), draws, bounds, dist.crps(draws))
    assert cal.pit_ks < 0.03
    assert cal.coverage[0.5].estimate == pytest.approx(0.5, abs=0.03)
    assert cal.coverage[0.9].estimate == pytest.approx(0.9, abs=0.02)
    assert cal.coverage[0.9].contains(0.9)
    assert max(cal.pit_counts) - min(cal.pit_counts) < 120


def test_byte_arrays_are_checked():
    first, p_first, p_second = one_cell_arrays()
    with pytest.raises(ValueError, match="p_second must be"):
        ByteGapDistribution(first, p_first, p_second[:, :, :255])
    with pytest.raises(ValueError, match="p_first at"):
        ByteGapDistribution(first, p_first * 3, p_second)
    with pytest.raises(ValueError, match=r"first bytes must be in 0\.\.255"):
        ByteGapDistribution(first + 200, p_first, p_second)
    with pytest.raises(ValueError, match="levels must lie in"):
        ByteGapDistribution(first, p_first, p_second).quantiles([1.5])
