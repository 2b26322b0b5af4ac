"""95% intervals for evaluation figures: bootstrap over test targets, t-intervals over seeds.

Every figure mmtpp reports is a function of per-target means: a plain mean (MAE, accuracy,
NLL per event), or a function of several means (RMSE = sqrt(mean squared error); a ratio
such as NLL per event over targets with different event counts; macro-F1 from per-class
indicator means). So the interval code takes per-target *contributions* ``values`` —
``[n]`` or ``[n, k]`` (k columns per target) — and a statistic ``stat`` of their column means
(``None``: the mean itself), and resamples targets:

- ``bootstrap_ci``: the percentile bootstrap over targets (resample the n targets with
  replacement, recompute the statistic, take the (1 ± level)/2 quantiles);
- ``paired_difference``: stat(a) − stat(b) for two variants scored on the *same* targets, with
  the target indices resampled jointly, so the noise the variants share (hard targets) cancels;
  identical variants give exactly 0 with a zero-width interval;
- ``mean_over_seeds``: mean ± Student-t interval of per-seed figures (exact for normal figures,
  which matters at 3–5 seeds where a normal or bootstrap interval is far too narrow);
- ``over_seeds`` / ``paired_over_seeds`` combine seeds and targets: with one seed, the bootstrap
  over its targets; with several, the t-interval of the per-seed figures (or of the per-seed
  paired differences). A seed draws its own split, targets and initialisation, so each per-seed
  figure already carries its target sample's noise, and their spread measures training and
  target noise together. A two-level bootstrap (resample seeds, then targets) was not chosen:
  with 3 seeds there are only 10 distinct seed resamples, and it understates the seed spread
  by a factor (S − 1)/S.

Missing values are errors, not silently dropped: NaN or ±inf contributions, fewer than two
targets (or seeds), or mismatched shapes raise ``ValueError`` naming the problem (invalid
predictions are counted upstream, design §3). All resampling is seeded and vectorised (resamples
in chunks of about four million drawn indices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as scipy_stats

# stat: column means [..., k] -> statistic [...] (vectorised over the leading axes)
Statistic = Callable[[np.ndarray], np.ndarray]
DEFAULT_RESAMPLES = 2000
CHUNK_ELEMENTS = 4_000_000  # drawn indices per chunk: bounds memory at any n


@dataclass(frozen=True)
class Interval:
    """A figure with its interval: ``estimate`` (the plug-in value on all targets, or the mean
    over seeds), ``[low, high]`` at ``level``, over ``n`` targets or seeds, by ``method``
    (``percentile bootstrap``, ``paired percentile bootstrap`` or ``t``)."""

    estimate: float
    low: float
    high: float
    level: float
    n: int
    method: str

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


def sqrt_of_mean(means: np.ndarray) -> np.ndarray:
    """RMSE from the mean squared error (``values``: squared errors ``[n]``)."""
    return np.sqrt(means)


def ratio_of_means(means: np.ndarray) -> np.ndarray:
    """mean(column 0) / mean(column 1), e.g. NLL summed per target over events per target."""
    return means[..., 0] / means[..., 1]


def _identity(means: np.ndarray) -> np.ndarray:
    return means


def _contributions(values: ArrayLike, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim not in (1, 2):
        raise ValueError(f"{name} must be [n] or [n, k] per-target values, got shape {v.shape}")
    if v.shape[0] < 2:
        raise ValueError(f"{name} has {v.shape[0]} target(s): an interval needs at least 2")
    bad = ~np.isfinite(v)
    if bad.any():
        rows = int(bad.reshape(v.shape[0], -1).any(axis=1).sum())
        raise ValueError(
            f"{name} has non-finite values in {rows} of {v.shape[0]} targets: count invalid "
            "predictions separately instead of scoring them"
        )
    return v


def _level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


def _resampled_means(values: list[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """Column means of ``resamples`` bootstrap samples of the targets, drawn jointly for every
    array in ``values`` (all [n, …] over the same n targets): each ``[resamples, …]``."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    n = values[0].shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_ELEMENTS // n)
    out: list[list[np.ndarray]] = [[] for _ in values]
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        for parts, v in zip(out, values, strict=True):
            parts.append(v[idx].mean(axis=1))
    return [np.concatenate(parts) for parts in out]


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _scalar(x: np.ndarray | float) -> float:
    x = np.asarray(x)
    if x.ndim != 0:
        raise ValueError(f"stat must reduce the column means to one number, got shape {x.shape}")
    return float(x)


def bootstrap_ci(
    values: ArrayLike,
    stat: Statistic | None = None,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of ``stat(column means of values)`` over targets.

    ``values`` ``[n]`` or ``[n, k]``: each target's contributions (errors, squared errors,
    correct-or-not, NLL); ``stat`` maps means ``[..., k]`` (or ``[...]`` for 1-D values) to the
    figure, vectorised over leading axes (``None``: the mean; ``sqrt_of_mean``: RMSE from
    squared errors; ``ratio_of_means``). The estimate is the plug-in figure on all targets.
    """
    level = _level(level)
    v = _contributions(values, "values")
    f = stat or _identity
    estimate = _scalar(f(v.mean(axis=0)))
    (means,) = _resampled_means([v], resamples, seed)
    low, high = _percentiles(f(means), level)
    return Interval(estimate, low, high, level, int(v.shape[0]), "percentile bootstrap")


def paired_difference(
    a: ArrayLike,
    b: ArrayLike,
    stat: Statistic | None = None,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """stat(a) − stat(b) for two variants scored on the same targets (row i of ``a`` and of
    ``b`` is the same target), with a percentile interval from resampling target indices
    jointly. Exactly 0, zero width, when ``a`` equals ``b``."""
    level = _level(level)
    va, vb = _contributions(a, "a"), _contributions(b, "b")
    if va.shape != vb.shape:
        raise ValueError(
            f"a has shape {va.shape} and b {vb.shape}: a paired difference needs both variants "
            "scored on the same targets"
        )
    f = stat or _identity
    estimate = _scalar(f(va.mean(axis=0))) - _scalar(f(vb.mean(axis=0)))
    ma, mb = _resampled_means([va, vb], resamples, seed)
    low, high = _percentiles(f(ma) - f(mb), level)
    return Interval(estimate, low, high, level, int(va.shape[0]), "paired percentile bootstrap")


def mean_over_seeds(values: ArrayLike, level: float = 0.95) -> Interval:
    """Mean ± t-interval of per-seed figures ``[S]``: mean ± t_{(1+level)/2, S−1} · s / √S."""
    level = _level(level)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"need per-seed figures [S] with S >= 2, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"per-seed figures contain non-finite values: {v.tolist()}")
    mean = float(v.mean())
    half = float(scipy_stats.t.ppf((1 + level) / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return Interval(mean, mean - half, mean + half, level, int(v.size), "t")


def over_seeds(
    per_seed: Sequence[ArrayLike],
    stat: Statistic | None = None,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """One figure over seeds and targets: ``per_seed[s]`` holds seed s's per-target
    contributions. One seed: ``bootstrap_ci`` over its targets; several: ``mean_over_seeds`` of
    the per-seed plug-in figures (see the module docstring for why)."""
    if len(per_seed) == 1:
        return bootstrap_ci(per_seed[0], stat, level, resamples, seed)
    if len(per_seed) == 0:
        raise ValueError("over_seeds needs at least one seed's values")
    f = stat or _identity
    figures = [
        _scalar(f(_contributions(v, f"seed {s}").mean(axis=0))) for s, v in enumerate(per_seed)
    ]
    return mean_over_seeds(figures, level)


def paired_over_seeds(
    a_per_seed: Sequence[ArrayLike],
    b_per_seed: Sequence[ArrayLike],
    stat: Statistic | None = None,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """stat(a) − stat(b) over seeds and targets; seed s of both variants shares its targets.
    One seed: ``paired_difference``; several: the t-interval of the per-seed differences."""
    if len(a_per_seed) != len(b_per_seed) or not a_per_seed:
        raise ValueError(
            f"a has {len(a_per_seed)} seeds and b {len(b_per_seed)}: pair the same seeds (>= 1)"
        )
    if len(a_per_seed) == 1:
        return paired_difference(a_per_seed[0], b_per_seed[0], stat, level, resamples, seed)
    f = stat or _identity
    diffs = []
    for s, (a, b) in enumerate(zip(a_per_seed, b_per_seed, strict=True)):
        va, vb = _contributions(a, f"a, seed {s}"), _contributions(b, f"b, seed {s}")
        if va.shape != vb.shape:
            raise ValueError(f"seed {s}: a has shape {va.shape} and b {vb.shape}")
        diffs.append(_scalar(f(va.mean(axis=0))) - _scalar(f(vb.mean(axis=0))))
    return mean_over_seeds(diffs, level)
