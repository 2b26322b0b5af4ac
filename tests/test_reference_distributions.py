"""The reference gap distributions against their closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from mmtpp.reference_distributions import ExponentialGapDistribution, OracleGapDistribution


def exponential_crps_integrand(t: float, mean_gap: float, y: float) -> float:
    return (-np.expm1(-t / mean_gap) - (t >= y)) ** 2


class ExponentialOracle:
    def __init__(self, mean_gap):
        self.m = np.asarray(mean_gap, dtype=float)

    def gap_cdf(self, gaps):
        m = self.m if gaps.ndim == 1 else self.m[:, None]
        return -np.expm1(-gaps / m)

    def gap_quantiles(self, levels):
        return -self.m[:, None] * np.log1p(-levels)[None, :]


def test_exponential_baseline_closed_forms():
    m = np.array([0.5, 2.0])
    dist = ExponentialGapDistribution(m)
    q = dist.quantiles([0.1, 0.5, 0.9])
    assert dist.cdf(q[:, 1]) == pytest.approx([0.5, 0.5])
    assert dist.median() == pytest.approx(m * np.log(2))
    assert q[:, 2] == pytest.approx(m * np.log(10))
    for y in (0.0, 0.3, 4.0):
        want = [
            integrate.quad(
                exponential_crps_integrand, 0, 60 * s, args=(s, y), points=[y] if y > 0 else None
            )[0]
            for s in m
        ]
        assert dist.crps(np.full(2, y)) == pytest.approx(want, rel=1e-7)
    with pytest.raises(ValueError, match="mean gaps must be > 0"):
        ExponentialGapDistribution([1.0, 0.0])


def test_oracle_wrapper_matches_closed_forms():
    m = np.array([0.3, 1.0, 7.0])
    oracle = OracleGapDistribution(ExponentialOracle(m))
    closed = ExponentialGapDistribution(m)
    y = np.array([0.01, 1.3, 30.0])
    assert oracle.cdf(y) == pytest.approx(closed.cdf(y), rel=1e-12)
    assert oracle.quantiles([0.05, 0.95]) == pytest.approx(closed.quantiles([0.05, 0.95]))
    assert oracle.mean() == pytest.approx(m, rel=1e-5)
    assert oracle.crps(y) == pytest.approx(closed.crps(y), rel=5e-5)
    assert oracle.interval(0.9)[1] == pytest.approx(closed.interval(0.9)[1])
