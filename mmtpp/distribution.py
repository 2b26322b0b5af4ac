"""Predictive distributions of the next gap: the interface, and the model's own from its byte
tokens.

The model writes a gap τ as four byte tokens of a big-endian float32 (``timecodec``). For
non-negative floats the value order is the lexicographic order of the bytes:

- byte 1 (0..127) holds the sign (0) and the top 7 exponent bits, so each first byte spans a
  factor 4 in magnitude; first bytes ≥ 128 are negative gaps (invalid);
- byte 2 holds the last exponent bit and the top 7 mantissa bits, so a two-byte prefix fixes
  the value to a *cell* [lo, hi) whose width is at most 1/128 of lo (1/(128 + m) for mantissa
  bits m); first byte 127 with second byte ≥ 128 is ±inf/NaN (invalid).

``ByteGapDistribution`` turns the model's two-byte distribution (``Predictor.
byte_distributions``: the top-k first bytes and the full second byte given each) into a
distribution with a piecewise-uniform density inside each two-byte cell, i.e. a
piecewise-linear CDF, whose CDF, quantiles, intervals, mean, PIT and CRPS are all exact for that
distribution. Beside it: ``mmtpp.quantile_descent`` (quantiles at float32 resolution, walking
down the byte tree with the model: lexicographic order = value order),
``mmtpp.reference_distributions`` (the Poisson baseline and the true process on synthetic data,
with the same ``GapDistribution`` interface) and ``mmtpp.gap_calibration`` (PIT, interval
coverage and CRPS over test targets).

CRPS(F, y) = ∫ (F(x) − 1{x ≥ y})² dx: the expected absolute error of the distribution minus
half its spread (E|X − y| − ½ E|X − X'|), in the gap's unit; lower is better, and for a point
forecast it is the absolute error.
"""

from __future__ import annotations

import abc

import numpy as np
from numpy.typing import ArrayLike

NEGATIVE_FIRST_BYTE = 128  # first bytes >= 128 carry the sign bit
TOP_FIRST_BYTE = 127  # first byte of the largest exponents; with second byte >= 128: inf/NaN
CELL_RELATIVE_WIDTH = 1 / 128  # the widest two-byte cell, relative to its lower edge


def prefix_value(prefix: ArrayLike) -> np.ndarray:
    """Value (float64) of the float32 whose first two bytes form ``prefix`` = 256·b1 + b2 and
    whose last two bytes are 0: the lower edge of that two-byte cell; ``prefix + 1`` gives its
    upper edge. Defined for 0 ≤ prefix ≤ 0x7F80 (0x7F80 → 2^128, the edge above the largest
    finite float32, where the float32 itself would be inf)."""
    h = np.asarray(prefix, dtype=np.int64)
    exponent, mantissa = h >> 7, h & 127
    normal = np.ldexp((128 + mantissa).astype(np.float64), (exponent - 134).astype(np.int32))
    subnormal = np.ldexp(mantissa.astype(np.float64), -133)
    return np.where(exponent == 0, subnormal, normal)


def first_byte_run(first: np.ndarray, p_first: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """[B, k] mask of the first bytes that form one unbroken run of byte values (one step = a
    factor 4 in magnitude) with the most probable ``usable`` one, among the candidates
    ``first`` [B, k] (probabilities ``p_first``).

    The guard keeps a weak model's stray probability on a far exponent out of every statistic:
    on NYC flights 2e-4 on a first byte worth ~1e23 made the mean ~1e20, and the same mass
    makes the CRPS ~p²·1e23. Ties go to the earlier candidate."""
    first = np.asarray(first, dtype=np.int64)
    rows = first.shape[0]
    has_any = usable.any(axis=1)
    mode = first[np.arange(rows), np.where(usable, p_first, -np.inf).argmax(axis=1)]
    present = np.zeros((rows, 256), dtype=bool)
    present[np.nonzero(usable)[0], first[usable]] = True
    values = np.arange(256)
    absent = ~present
    low = np.where(absent & (values < mode[:, None]), values, -1).max(axis=1) + 1
    high = np.where(absent & (values > mode[:, None]), values, 256).min(axis=1) - 1
    inside = (first >= low[:, None]) & (first <= high[:, None])
    return usable & inside & has_any[:, None]


class GapDistribution(abc.ABC):
    """Predictive distributions of the next gap for B histories (one per row).

    Subclasses give the CDF, quantiles, mean and CRPS; intervals, median and PIT follow.
    A row without a usable distribution gives NaN everywhere (see ``valid``).
    """

    @abc.abstractmethod
    def cdf(self, gaps: ArrayLike) -> np.ndarray:
        """F(y) for gaps ``[B]`` (one per row) or ``[B, M]`` → same shape."""

    @abc.abstractmethod
    def quantiles(self, levels: ArrayLike) -> np.ndarray:
        """Quantiles at ``levels`` [L] (each in [0, 1]) → [B, L]."""

    @abc.abstractmethod
    def mean(self) -> np.ndarray:
        """Mean gap [B] (what minimises the squared error)."""

    @abc.abstractmethod
    def crps(self, gaps: ArrayLike) -> np.ndarray:
        """CRPS of each row's distribution against its true gap ``gaps`` [B] → [B]."""

    @property
    def valid(self) -> np.ndarray:
        """[B] rows that have a distribution."""
        return np.isfinite(self.mean())

    def median(self) -> np.ndarray:
        """Median gap [B] (what minimises the absolute error)."""
        return self.quantiles([0.5])[:, 0]

    def interval(self, coverage: float) -> tuple[np.ndarray, np.ndarray]:
        """The central interval holding ``coverage`` of the mass: quantiles at (1 ∓ c)/2,
        as (lower [B], upper [B])."""
        if not 0 < coverage < 1:
            raise ValueError(f"interval coverage must be in (0, 1), got {coverage}")
        q = self.quantiles([(1 - coverage) / 2, (1 + coverage) / 2])
        return q[:, 0], q[:, 1]

    def pit(self, gaps: ArrayLike) -> np.ndarray:
        """Probability integral transform F(y) of the true gaps [B]: uniform on [0, 1] for a
        calibrated forecaster."""
        return self.cdf(gaps)


def check_levels(levels: ArrayLike) -> np.ndarray:
    """Quantile levels as float64 [L], each checked to lie in [0, 1]."""
    out = np.asarray(levels, dtype=np.float64).reshape(-1)
    if not np.all((out >= 0) & (out <= 1)):
        raise ValueError(f"quantile levels must lie in [0, 1], got {out[(out < 0) | (out > 1)]}")
    return out


def check_gaps(gaps: ArrayLike, rows: int) -> np.ndarray:
    """Gaps as float64 [B] (one per row) or [B, M], checked to have ``rows`` rows."""
    y = np.asarray(gaps, dtype=np.float64)
    if y.ndim not in (1, 2) or y.shape[0] != rows:
        raise ValueError(f"gaps must have shape [{rows}] or [{rows}, M], got {y.shape}")
    return y


class PiecewiseLinearCDF(GapDistribution):
    """Distributions whose CDF is linear between knots: ``x`` [B, N] non-decreasing, ``F``
    [B, N] non-decreasing from 0 to 1 (a uniform density between knots where F rises, none
    where it is flat). Rows whose knots are NaN have no distribution.

    Every statistic is exact for this distribution: quantiles invert the CDF knot by knot
    (F⁻¹(α) = inf{x : F(x) ≥ α}), the mean is Σ ΔF·(x₀ + x₁)/2, and the CRPS integrates
    F² left of y and (1 − F)² right of it segment by segment (a linear F over a segment of
    length h from a to b gives h·(a² + ab + b²)/3).
    """

    def __init__(self, x: np.ndarray, F: np.ndarray):
        self.x = np.asarray(x, dtype=np.float64)
        self.F = np.asarray(F, dtype=np.float64)
        if self.x.ndim != 2 or self.x.shape != self.F.shape or self.x.shape[1] < 2:
            raise ValueError(f"knots x {self.x.shape} and F {self.F.shape}: need equal [B, N≥2]")

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.x).all(axis=1) & np.isfinite(self.F).all(axis=1)

    def cdf(self, gaps: ArrayLike) -> np.ndarray:
        y = check_gaps(gaps, self.rows)
        out = np.full(y.shape, np.nan)
        for r in np.flatnonzero(self.valid):
            # np.interp is exact here: equal knots x carry equal F (the CDF is continuous)
            out[r] = np.interp(y[r], self.x[r], self.F[r], left=0.0, right=1.0)
        return out

    def quantiles(self, levels: ArrayLike) -> np.ndarray:
        alpha = check_levels(levels)
        out = np.full((self.rows, alpha.size), np.nan)
        for r in np.flatnonzero(self.valid):
            x, F = self.x[r], self.F[r]
            # first knot with F ≥ α; α = 0 goes to the last knot where F is still 0 (the
            # start of the support), so F[k - 1] < α ≤ F[k] whenever we interpolate
            k = np.clip(np.searchsorted(F, alpha, side="left"), 1, F.size - 1)
            f0, f1 = F[k - 1], F[k]
            frac = np.clip((alpha - f0) / np.where(f1 > f0, f1 - f0, 1.0), 0.0, 1.0)
            start = x[np.searchsorted(F, 0.0, side="right") - 1]
            out[r] = np.where(alpha <= 0, start, x[k - 1] + frac * (x[k] - x[k - 1]))
        return out

    def mean(self) -> np.ndarray:
        mass = np.diff(self.F, axis=1)
        return (mass * (self.x[:, 1:] + self.x[:, :-1]) / 2).sum(axis=1)

    def crps(self, gaps: ArrayLike) -> np.ndarray:
        y = check_gaps(gaps, self.rows)
        if y.ndim != 1:
            raise ValueError(f"crps takes one true gap per row, got shape {y.shape}")
        x0, x1 = self.x[:, :-1], self.x[:, 1:]
        f0, f1 = self.F[:, :-1], self.F[:, 1:]
        h = x1 - x0
        left = np.clip(y[:, None] - x0, 0.0, h)  # the part of each segment below y
        fy = f0 + (f1 - f0) * np.divide(left, h, out=np.zeros_like(h), where=h > 0)
        g1, gy = 1 - f1, 1 - fy
        below = left * (f0**2 + f0 * fy + fy**2) / 3
        above = (h - left) * (gy**2 + gy * g1 + g1**2) / 3
        tails = np.maximum(self.x[:, 0] - y, 0) + np.maximum(y - self.x[:, -1], 0)
        return (below + above).sum(axis=1) + tails


class ByteGapDistribution(PiecewiseLinearCDF):
    """The model's distribution of the next gap from its first two byte tokens.

    ``first`` [B, k] are the k most probable first bytes, ``p_first`` [B, k] their
    probabilities and ``p_second`` [B, k, 256] the second byte given each, all over the whole
    vocabulary (``Predictor.byte_distributions``). Each (first, second) pair is a cell
    [lo, hi) of relative width ≤ 1/128 holding weight p_first·p_second, spread uniformly over
    the cell (the last two bytes are not looked at: within a cell the density is flat, so the
    mean of a cell is its midpoint, exactly the value ``expected_times`` gives it).

    Where the probability goes, per row (they sum to 1):

    - ``kept_mass``: valid cells used, renormalised to 1: the distribution is the model's
      conditional on the kept cells;
    - ``invalid_mass``: seen to be invalid — negative first bytes, non-byte second tokens,
      first byte 127 with second byte ≥ 128 (inf/NaN);
    - ``dropped_mass``: valid cells of first bytes outside the run (``first_byte_run``) when
      ``guard`` is on;
    - ``unseen_mass``: 1 − Σ p_first, first bytes outside the top k together with non-byte
      first tokens (the arrays cannot tell them apart).

    Renormalising treats dropped and unseen mass as if spread like the kept mass; evaluation
    reports these masses so that a row where they are large can be flagged, never hidden.
    """

    def __init__(
        self,
        first: ArrayLike,
        p_first: ArrayLike,
        p_second: ArrayLike,
        guard: bool = True,
    ):
        first = np.asarray(first, dtype=np.int64)
        p_first = np.asarray(p_first, dtype=np.float64)
        p_second = np.asarray(p_second, dtype=np.float64)
        _check_byte_arrays(first, p_first, p_second)
        rows, top = first.shape
        second = np.arange(256)
        valid_cell = (first[:, :, None] < NEGATIVE_FIRST_BYTE) & ~(
            (first[:, :, None] == TOP_FIRST_BYTE) & (second >= 128)
        )
        weight = np.where(valid_cell, p_first[:, :, None] * p_second, 0.0)  # [B, k, 256]
        per_first = weight.sum(axis=2)
        usable = per_first > 0
        kept = first_byte_run(first, p_first, usable) if guard else usable
        self.first = first
        self.kept_first = kept
        self.kept_mass = np.where(kept, per_first, 0.0).sum(axis=1)
        self.dropped_mass = np.where(kept, 0.0, per_first).sum(axis=1)
        self.invalid_mass = p_first.sum(axis=1) - per_first.sum(axis=1)
        self.unseen_mass = np.maximum(1.0 - p_first.sum(axis=1), 0.0)
        weight[~kept] = 0.0

        # Cells in value order: kept first bytes ascending, second bytes ascending within.
        # Slots not kept go last, as zero-width, zero-weight cells at the top edge.
        order = np.argsort(np.where(kept, first, 1000), axis=1, kind="stable")
        first_sorted = np.take_along_axis(first, order, axis=1)
        kept_sorted = np.take_along_axis(kept, order, axis=1)
        weight = np.take_along_axis(weight, order[:, :, None], axis=1).reshape(rows, top * 256)
        prefix = np.clip(first_sorted, 0, TOP_FIRST_BYTE)[:, :, None] * 256 + second
        lo = prefix_value(prefix)
        hi = prefix_value(prefix + 1)
        highest = np.where(kept_sorted, hi.max(axis=2), 0.0).max(axis=1)  # top edge per row
        lo = np.where(kept_sorted[:, :, None], lo, highest[:, None, None]).reshape(rows, -1)
        hi = np.where(kept_sorted[:, :, None], hi, highest[:, None, None]).reshape(rows, -1)

        cum = np.concatenate([np.zeros((rows, 1)), np.cumsum(weight, axis=1)], axis=1)
        total = cum[:, -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            F = cum / total  # the last knot is exactly 1
        # knots at both edges of every cell: lo_j (F = cum_j) then hi_j (F = cum_{j+1})
        x = np.stack([lo, hi], axis=2).reshape(rows, -1)
        F = np.stack([F[:, :-1], F[:, 1:]], axis=2).reshape(rows, -1)
        empty = total[:, 0] <= 0
        x[empty] = np.nan
        F[empty] = np.nan
        super().__init__(x, F)

    def first_byte_support(self) -> np.ndarray:
        """[B, 256] mask of the first bytes this distribution keeps: pass it to
        ``mmtpp.quantile_descent.descend_quantiles`` so that the exact quantiles see the same
        support."""
        mask = np.zeros((self.first.shape[0], 256), dtype=bool)
        rows = np.nonzero(self.kept_first)[0]
        mask[rows, self.first[self.kept_first]] = True
        return mask


def _check_byte_arrays(first: np.ndarray, p_first: np.ndarray, p_second: np.ndarray) -> None:
    if first.ndim != 2 or p_first.shape != first.shape:
        raise ValueError(
            f"byte distribution: first {first.shape} and p_first {p_first.shape} "
            "must both be [B, k]"
        )
    if p_second.shape != (*first.shape, 256):
        raise ValueError(
            f"byte distribution: p_second must be [B, k, 256] = "
            f"{(*first.shape, 256)}, got {p_second.shape}"
        )
    if first.size and (first.min() < 0 or first.max() > 255):
        raise ValueError(
            f"byte distribution: first bytes must be in 0..255, got {first.min()}..{first.max()}"
        )
    for name, p, sums in (
        ("p_first", p_first, p_first.sum(axis=1)),
        ("p_second", p_second, p_second.sum(axis=2)),
    ):
        bad = ~np.isfinite(p).all(axis=-1) | (p < 0).any(axis=-1) | (sums > 1 + 1e-3)
        if bad.any():
            row = np.argwhere(bad)[0].tolist()
            raise ValueError(
                f"byte distribution: {name} at {row} is not a probability "
                "vector (finite, >= 0, summing to <= 1)"
            )
