"""The optimal-transport distance (OTD, Mei, Qin & Eisner 2019) between two marked event
sequences: the cheapest way to turn one into the other by moving an event in time (cost
|t − t'|, only to an event of the same type) or deleting/inserting it (cost C each).

C sets the tolerance: two events more than 2C apart are never paired, one missing or extra
event costs C. ``mmtpp.multistep`` scores sampled continuations with it on a window after each
history.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _otd_one_type(a: list[float], b: list[float], cost: float) -> float:
    """OTD between two sorted time lists of one type, by the edit-distance recursion
    D[i][j] = min(D[i−1][j] + C, D[i][j−1] + C, D[i−1][j−1] + |a_i − b_j|).

    Plain Python: forecasts hold a few events per type, where numpy's per-call cost would
    dominate (O(n·m) either way)."""
    previous = [j * cost for j in range(len(b) + 1)]
    for i, x in enumerate(a, start=1):
        row = [i * cost]
        for j, y in enumerate(b, start=1):
            row.append(min(previous[j - 1] + abs(x - y), previous[j] + cost, row[j - 1] + cost))
        previous = row
    return previous[-1]


def _by_type(times: np.ndarray, types: np.ndarray) -> dict[int, list[float]]:
    """Sorted times per type."""
    out: dict[int, list[float]] = {}
    for t, k in sorted(zip(times.tolist(), types.tolist(), strict=True)):
        out.setdefault(k, []).append(t)
    return out


def otd(
    times_a: ArrayLike,
    types_a: ArrayLike,
    times_b: ArrayLike,
    types_b: ArrayLike,
    cost: float,
) -> float:
    """Optimal-transport distance between two marked event sequences.

    The cheapest edit of one into the other: pair an event with one of the same type at cost
    |t − t'|, or delete/insert it at ``cost`` C. Types never interact, so it is the sum over
    types of a one-dimensional problem, and on a line pairs never need to cross (swapping two
    crossing pairs never costs more), so a dynamic programme over the sorted times is exact.
    A metric (symmetric, triangle inequality); 0 ≤ OTD ≤ C·(n_a + n_b); one event shifted by
    d costs min(d, 2C).
    """
    if not (np.isfinite(cost) and cost > 0):
        raise ValueError(f"otd: the deletion/insertion cost must be > 0, got {cost}")
    ta, tb = np.asarray(times_a, np.float64), np.asarray(times_b, np.float64)
    ka, kb = np.asarray(types_a, np.int64), np.asarray(types_b, np.int64)
    if ta.shape != ka.shape or tb.shape != kb.shape:
        raise ValueError("otd: each sequence needs as many types as times")
    by_a, by_b = _by_type(ta, ka), _by_type(tb, kb)
    return float(sum(_otd_one_type(by_a.get(k, []), by_b.get(k, []), cost) for k in {*by_a, *by_b}))
