"""Integrals of a next-event intensity λ_k(s) after a history (docs/peers.md).

For intensity models (the EasyTPP peers): the compensator Λ(τ) = ∫_0^τ Σ_k λ_k, the type
marginal P(k) = ∫_0^∞ λ_k e^{−Λ} and the conditional mean and median gap, each refined until
two successive estimates agree, so a figure does not depend on a grid that happened to be
too coarse for an oscillating intensity. NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

# Integrals are refined (uniform resolution doubled) until two successive estimates agree:
# Λ(τ) to COMPENSATOR_TOL relative, P(type) to MARGINAL_TOL absolute and the mean gap to
# MEAN_TOL relative (the models' float32 intensities limit how far the last can go).
COMPENSATOR_TOL = 1e-6
MARGINAL_TOL = 1e-5
MEAN_TOL = 1e-4
MAX_PANELS = 2**15  # uniform panels (or grid cells) at most; the last difference is reported


def compensator_nodes(uniform: int = 1, levels: int = 20, order: int = 8):
    """Fractions u of an interval and weights w (Σw = 1) such that ∫_0^τ f ≈ τ·Σ_g w_g f(τ·u_g).

    Gauss–Legendre of ``order`` on the panels cut by the geometric edges 2^−(levels−1), …,
    1/4, 1/2 (fine near 0, where intensities decay fastest) and by ``uniform`` equal panels
    (for intensities that oscillate, as S2P2's complex state-space modes do).
    """
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.union1d(2.0 ** -np.arange(levels), np.linspace(0.0, 1.0, uniform + 1))
    lo, hi = edges[:-1, None], edges[1:, None]
    return (lo + (hi - lo) * (x + 1) / 2).ravel(), ((hi - lo) * w / 2).ravel()


def gap_grid(points: int, horizon: float) -> np.ndarray:
    """Offsets [points]: 0, then geometric from horizon·1e-9 to horizon."""
    return np.concatenate([[0.0], np.geomspace(horizon * 1e-9, horizon, points - 1)])


def marginal_types(
    grid: np.ndarray, intensities: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(type = k) = ∫_0^∞ λ_k e^{−Λ} for m histories from intensities on a grid.

    ``grid`` [M] increasing from 0, ``intensities`` [m, M, K] ≥ 0. Λ is the trapezoid integral
    of λ = Σ_k λ_k; the probability S_j − S_{j+1} of the next event in cell j (S = e^{−Λ})
    goes to the types in proportion to λ_k·S at the cell's ends, the tail mass S_M in
    proportion to λ_k at the last point, so Σ_k P(k) = 1. Returns (probs [m, K], Λ [m, M],
    tail mass S_M [m]).
    """
    lam_k = np.asarray(intensities, np.float64)
    lam = lam_k.sum(axis=-1)
    steps = np.diff(grid)[None, :]
    big_lam = np.concatenate(
        [np.zeros((lam.shape[0], 1)), np.cumsum(0.5 * (lam[:, 1:] + lam[:, :-1]) * steps, 1)], 1
    )
    surv = np.exp(-big_lam)
    weighted = lam_k * surv[..., None]  # λ_k·S, the density of (gap, type)
    ends = weighted[:, 1:] + weighted[:, :-1]
    share = ends / np.maximum(ends.sum(axis=-1, keepdims=True), 1e-300)
    cell = (surv[:, :-1] - surv[:, 1:])[..., None]
    tail = surv[:, -1]
    last = lam_k[:, -1] / np.maximum(lam[:, -1:], 1e-300)
    probs = (cell * share).sum(axis=1) + tail[:, None] * last
    return probs, big_lam, tail


def gap_summary(grid: np.ndarray, big_lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Conditional mean ∫_0^{grid end} e^{−Λ} and median (Λ = ln 2; NaN when Λ stays below
    ln 2 on the grid) from Λ [m, M], with Λ linear between grid points (as the trapezoid
    rule that built it): a cell contributes Δs·S_j·(1 − e^{−ΔΛ})/ΔΛ, exact for that Λ."""
    step = np.diff(big_lam, axis=1)
    ratio = np.where(step > 1e-12, -np.expm1(-step) / np.maximum(step, 1e-12), 1.0 - step / 2)
    mean = (np.diff(grid)[None, :] * np.exp(-big_lam[:, :-1]) * ratio).sum(axis=1)
    median = np.full(big_lam.shape[0], np.nan)
    for r, row in enumerate(big_lam):
        j = int(np.searchsorted(row, math.log(2.0)))  # Λ is non-decreasing
        if 0 < j < row.size:
            frac = (math.log(2.0) - row[j - 1]) / max(row[j] - row[j - 1], 1e-300)
            median[r] = grid[j - 1] + frac * (grid[j] - grid[j - 1])
    return mean, median


def compensator(
    intensity: Callable[[np.ndarray], np.ndarray], start: float, stop: float
) -> tuple[float, np.ndarray, float]:
    """∫_start^stop Σ_k λ_k(s) ds, refined (panels doubled) until two successive estimates
    agree to ``COMPENSATOR_TOL`` relative; returns (the integral, λ_k(stop) [K], the last
    relative change). The geometric panels are fine near ``start``."""
    width, panels, previous = stop - start, 8, None
    while True:
        u, w = compensator_nodes(panels)
        lam = intensity(np.append(start + width * u, stop))
        big_lam = float(width * (lam[:-1].sum(axis=-1) @ w))
        if previous is not None:
            err = abs(big_lam - previous) / (1.0 + abs(big_lam))
            if err <= COMPENSATOR_TOL or panels >= MAX_PANELS:
                return big_lam, lam[-1], err
        previous, panels = big_lam, 2 * panels


def bin_log_probability(log_survival_lo: float, mass_inside: float) -> float:
    """log P(lo ≤ gap < hi) = log S(lo) + log(1 − e^{−∫_lo^hi λ}), stable for narrow bins."""
    return log_survival_lo + math.log(max(-math.expm1(-mass_inside), 1e-300))


def next_event_integrals(
    intensity: Callable[[np.ndarray], np.ndarray], tau: float, grid: np.ndarray
) -> dict[str, Any]:
    """Everything a target needs from the intensity after its history, λ_k(s) for offsets s
    (``intensity``: [G] → [G, K], s in the model's unit), refined until converged.

    Returns Λ(τ) (``compensator``), λ_k(τ) [K] (``at_gap``), P(type) [K] (``probs``), the
    conditional mean and median gap, the mass beyond the grid (``tail_mass``) and the last
    change of the refinement that decides the NLLs (``integration_error``: the larger of Λ's
    relative and P's absolute change).
    """
    big_lam, at_gap, err_lam = compensator(intensity, 0.0, tau)
    cells, previous = 0, None
    while True:
        points = np.union1d(grid, np.linspace(0.0, grid[-1], cells + 1)) if cells else grid
        probs, lam_grid, tail = marginal_types(points, intensity(points)[None])
        mean, median = gap_summary(points, lam_grid)
        if previous is not None:
            err = float(np.abs(probs[0] - previous[0]).max())
            err_mean = abs(mean[0] - previous[1]) / max(mean[0], 1e-300)
            if (err <= MARGINAL_TOL and err_mean <= MEAN_TOL) or cells >= MAX_PANELS:
                break
        if not cells:  # where the density lives: Λ ≤ 40 (beyond, S < 5e-18)
            end = grid[min(int(np.searchsorted(lam_grid[0], 40.0)), grid.size - 1)]
            grid = grid[grid <= end]
        previous, cells = (probs[0], mean[0]), 2 * cells if cells else 256
    return {
        "compensator": big_lam,
        "at_gap": at_gap,
        "probs": probs[0],
        "mean_gap": mean[0],
        "median_gap": median[0],
        "tail_mass": tail[0],
        "integration_error": max(err_lam, err),
    }
