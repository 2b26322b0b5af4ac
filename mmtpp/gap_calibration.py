"""How well predictive gap distributions are calibrated over test targets: PIT histogram and
its largest deviation from uniform, coverage and width of central intervals, and CRPS, with
95% bootstrap intervals (``mmtpp.intervals``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mmtpp.intervals import Interval, bootstrap_ci

CENTRAL_COVERAGES = (0.5, 0.9)
PIT_BINS = 10


@dataclass(frozen=True)
class Calibration:
    """How well predictive distributions match the true gaps of ``targets`` targets.

    ``pit_counts``: targets per PIT bin of width 1/bins (flat when calibrated; a U shape
    means too narrow, a hump too wide, a slope a biased location); ``pit_ks``: the largest
    gap between the PIT values' empirical CDF and the uniform one. ``coverage[c]``: share of
    true gaps inside the central c interval (c when calibrated) and ``width[c]`` the mean
    width of those intervals; ``crps``: the mean CRPS. Coverage and CRPS carry 95% bootstrap
    intervals over targets (``mmtpp.intervals``).
    """

    targets: int
    pit_counts: list[int]
    pit_ks: float
    coverage: dict[float, Interval]
    width: dict[float, float]
    crps: Interval

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration(
    pit: ArrayLike,
    true_gaps: ArrayLike,
    intervals: Mapping[float, tuple[ArrayLike, ArrayLike]],
    crps: ArrayLike,
    bins: int = PIT_BINS,
    seed: int = 0,
) -> Calibration:
    """Calibration of N ≥ 2 targets from per-target arrays: PIT values [N], true gaps [N],
    central intervals {coverage: (lower [N], upper [N])} and CRPS values [N]. Targets without
    a valid distribution are counted and left out by the caller: NaN is refused."""
    pit = np.asarray(pit, dtype=np.float64).reshape(-1)
    y = np.asarray(true_gaps, dtype=np.float64).reshape(-1)
    scores = np.asarray(crps, dtype=np.float64).reshape(-1)
    n = pit.size
    if y.size != n or scores.size != n:
        raise ValueError(
            f"calibration: pit [{n}], true_gaps [{y.size}] and crps [{scores.size}] must have "
            "one value per target"
        )
    if not np.all((pit >= 0) & (pit <= 1)):
        raise ValueError("calibration: PIT values must lie in [0, 1] (remove invalid rows first)")
    counts = np.histogram(pit, bins=bins, range=(0.0, 1.0))[0]
    ordered = np.sort(pit)
    above = np.arange(1, n + 1) / n - ordered  # ECDF just after each value minus uniform
    below = ordered - np.arange(n) / n  # uniform minus ECDF just before it
    ks = float(max(above.max(initial=0.0), below.max(initial=0.0)))
    coverage, width = {}, {}
    for c, (low, high) in intervals.items():
        low = np.asarray(low, dtype=np.float64).reshape(-1)
        high = np.asarray(high, dtype=np.float64).reshape(-1)
        if low.size != n or high.size != n:
            raise ValueError(f"calibration: the {c} interval needs [{n}] lower and upper bounds")
        inside = ((y >= low) & (y <= high)).astype(float)
        coverage[float(c)] = bootstrap_ci(inside, seed=seed)
        width[float(c)] = float(np.mean(high - low))
    return Calibration(
        targets=n,
        pit_counts=counts.tolist(),
        pit_ks=ks,
        coverage=coverage,
        width=width,
        crps=bootstrap_ci(scores, seed=seed),
    )
