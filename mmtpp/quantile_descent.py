"""Exact quantiles of the model's gap distribution at float32 resolution, by descending the
byte tree one byte at a time (``descend_quantiles``).

A gap is four byte tokens of a big-endian float32 (``mmtpp.timecodec``), and for non-negative
floats the lexicographic order of the bytes is the value order (``mmtpp.distribution``), so a
quantile can be found byte by byte with the model itself. ``ByteGapDistribution`` looks at the
first two bytes only; the descent refines its quantiles within their two-byte cell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from mmtpp.distribution import NEGATIVE_FIRST_BYTE, TOP_FIRST_BYTE, check_levels
from mmtpp.timecodec import decode


@dataclass(frozen=True)
class Descent:
    """Quantiles [B, L] at float32 resolution (NaN where a path found no valid byte) and the
    probability excluded at each of the 4 steps along each quantile's path, before
    renormalising (``excluded`` [B, L, 4])."""

    quantiles: np.ndarray
    excluded: np.ndarray


def descend_quantiles(
    next_byte_probs: Callable[[np.ndarray], np.ndarray],
    levels: ArrayLike,
    batch: int,
    allowed_first: np.ndarray | None = None,
) -> Descent:
    """Exact quantiles of the model's gap distribution, one byte at a time.

    Because lexicographic byte order is value order, the α-quantile lies under the first
    byte b whose cumulative probability reaches α; the level left inside b,
    (α − P(< b)) / P(b), is then the quantile level within b's subtree, and so on for the
    next three bytes. Four steps give the smallest float32 v with F(v) ≥ α.

    ``next_byte_probs(prefixes)`` takes ``prefixes`` [B·L, d] (uint8 byte values; row
    b·L + l is history b at level l) and returns [B·L, 256]: the probability of each byte
    token next, over the whole vocabulary. It is called four times, with d = 0, 1, 2, 3, and
    each call's prefixes extend the previous call's by one column, so a model keeps one
    KV-cache row per (history, level) and feeds the last column.

    Invalid branches are excluded and the rest renormalised at each step: non-byte tokens
    (the mass missing from a row), negative first bytes (≥ 128), first bytes outside
    ``allowed_first`` [B, 256] (e.g. ``ByteGapDistribution.first_byte_support()``), and
    second bytes ≥ 128 after first byte 127 (inf/NaN). The quantiles are therefore those of
    the distribution a sampler draws when it masks invalid tokens at every step; they equal
    the model's distribution conditioned on a valid value whenever the excluded share at a
    step does not depend on the branch (it differs only through non-byte tokens after
    a byte, and first byte 127).
    """
    alpha = check_levels(levels)
    per = alpha.size
    n = batch * per
    u = np.tile(alpha, batch)
    prefixes = np.zeros((n, 0), dtype=np.uint8)
    excluded = np.zeros((n, 4))
    dead = np.zeros(n, dtype=bool)
    byte = np.arange(256)
    for depth in range(4):
        p = np.asarray(next_byte_probs(prefixes), dtype=np.float64)
        if p.shape != (n, 256) or not np.isfinite(p).all() or (p < 0).any():
            raise ValueError(
                f"next_byte_probs at depth {depth} must return {n}x256 "
                f"probabilities, got shape {p.shape}"
            )
        allowed = np.ones((n, 256), dtype=bool)
        if depth == 0:
            allowed &= byte < NEGATIVE_FIRST_BYTE
            if allowed_first is not None:
                allowed_first = np.asarray(allowed_first, dtype=bool)
                if allowed_first.shape != (batch, 256):
                    raise ValueError(
                        f"allowed_first must be [{batch}, 256], got {allowed_first.shape}"
                    )
                allowed &= np.repeat(allowed_first, per, axis=0)
        elif depth == 1:
            allowed &= ~((prefixes[:, :1] == TOP_FIRST_BYTE) & (byte >= 128))
        q = np.where(allowed, p, 0.0)
        total = q.sum(axis=1)
        excluded[:, depth] = np.clip(1.0 - total, 0.0, 1.0)
        dead |= total <= 0
        q = q / np.where(total > 0, total, 1.0)[:, None]
        cum = np.cumsum(q, axis=1)
        positive = q > 0
        first_pos = positive.argmax(axis=1)
        last_pos = 255 - positive[:, ::-1].argmax(axis=1)
        # the first byte whose cumulative probability reaches u, kept among bytes with mass
        # (u = 0 picks the lowest; rounding may leave cum[-1] a hair under u = 1)
        pick = (cum < u[:, None]).sum(axis=1)
        pick = np.clip(pick, first_pos, last_pos)
        rows = np.arange(n)
        before = cum[rows, pick] - q[rows, pick]
        mass = np.where(q[rows, pick] > 0, q[rows, pick], 1.0)
        u = np.clip((u - before) / mass, 0.0, 1.0)
        prefixes = np.concatenate([prefixes, pick[:, None].astype(np.uint8)], axis=1)
    prefixes[dead] = 0  # whatever bytes a dead path picked, it has no value
    values = decode(prefixes).astype(np.float64)
    values[dead] = np.nan
    return Descent(values.reshape(batch, per), excluded.reshape(batch, per, 4))
