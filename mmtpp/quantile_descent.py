"""Exact quantiles of the model's gap distribution at float32 resolution, by descending the
byte tree one byte at a time (``descend_quantiles``), and the exact probability of an interval
of gaps (``interval_mass``).

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
from mmtpp.timecodec import decode, encode


@dataclass(frozen=True)
class Descent:
    """Quantiles [B, L] at float32 resolution (NaN where a path found no valid byte) and the
    probability excluded at each of the 4 steps along each quantile's path, before
    renormalising (``excluded`` [B, L, 4])."""

    quantiles: np.ndarray
    excluded: np.ndarray


def valid_bytes(depth: int, prefixes: np.ndarray) -> np.ndarray:
    """[n, 256] the bytes that can follow ``prefixes`` [n, depth] in a valid gap: no negative
    first byte (≥ 128), no second byte ≥ 128 after first byte 127 (inf/NaN)."""
    byte = np.arange(256)
    allowed = np.ones((len(prefixes), 256), dtype=bool)
    if depth == 0:
        allowed &= byte < NEGATIVE_FIRST_BYTE
    elif depth == 1:
        allowed &= ~((prefixes[:, :1] == TOP_FIRST_BYTE) & (byte >= 128))
    return allowed


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
    for depth in range(4):
        p = np.asarray(next_byte_probs(prefixes), dtype=np.float64)
        if p.shape != (n, 256) or not np.isfinite(p).all() or (p < 0).any():
            raise ValueError(
                f"next_byte_probs at depth {depth} must return {n}x256 "
                f"probabilities, got shape {p.shape}"
            )
        allowed = valid_bytes(depth, prefixes)
        if depth == 0 and allowed_first is not None:
            allowed_first = np.asarray(allowed_first, dtype=bool)
            if allowed_first.shape != (batch, 256):
                raise ValueError(f"allowed_first must be [{batch}, 256], got {allowed_first.shape}")
            allowed &= np.repeat(allowed_first, per, axis=0)
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


def interval_mass(
    next_byte_probs: Callable[[np.ndarray], np.ndarray], lo: ArrayLike, hi: ArrayLike
) -> np.ndarray:
    """[B] the model's probability that the gap's four bytes form a float32 in [lo, hi)
    (0 ≤ lo ≤ hi, [B] each; the edges rounded to float32), over the whole vocabulary, as the
    teacher-forced time NLL counts it: mass on non-byte tokens or on bytes that make the gap
    invalid (``valid_bytes``) is in no bin.

    Lexicographic byte order is value order, so the two edges' byte paths share a prefix up to
    the first byte where they differ (the split). The mass is the prefix's probability times
    that of the bytes strictly between the two split bytes, plus, below the split, every byte
    above the lower path's (and the lower edge's own value) and every byte under the upper
    path's: sums of positive terms, so a narrow bin keeps its precision. Along the edge paths
    every step is charged; a byte strictly inside the bin counts with its whole probability, so
    mass the model would put on an invalid token after it, deeper down, is counted in the bin
    (a trained model's such mass is small: design §7 reports it).

    ``next_byte_probs(prefixes)`` as for ``descend_quantiles`` with L = 2: rows 2b and 2b + 1
    are the lower and upper edge of interval b; it is called with d = 0, 1, 2, 3 columns.
    """
    lo, hi = np.asarray(lo, np.float64).reshape(-1), np.asarray(hi, np.float64).reshape(-1)
    if lo.shape != hi.shape or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError(f"interval edges must be finite and of one shape, got {lo} and {hi}")
    if ((lo < 0) | (hi < lo)).any():
        raise ValueError(f"intervals need 0 <= lo <= hi, got lo={lo}, hi={hi}")
    edges = encode(np.stack([lo, hi], axis=1))
    paths = edges.astype(np.int64)  # [B, 2, 4]
    low, high = paths[:, 0], paths[:, 1]
    differ = low != high
    split = np.where(differ.any(axis=1), differ.argmax(axis=1), 4)
    rows, values = np.arange(len(paths)), np.arange(256)
    common = np.ones(len(paths))  # the shared prefix's probability (before the split)
    a_lo, a_hi, total = np.zeros(len(paths)), np.zeros(len(paths)), np.zeros(len(paths))
    for depth in range(4):
        prefixes = edges.reshape(-1, 4)[:, :depth]
        raw = np.asarray(next_byte_probs(prefixes), dtype=np.float64)
        if raw.shape != (2 * len(paths), 256) or not np.isfinite(raw).all() or (raw < 0).any():
            raise ValueError(
                f"next_byte_probs at depth {depth} must return {2 * len(paths)}x256 "
                f"probabilities, got shape {raw.shape}"
            )
        probs = np.where(valid_bytes(depth, prefixes), raw, 0.0)
        p_lo, p_hi = probs[0::2], probs[1::2]  # [B, 256], given each edge's prefix
        b_lo, b_hi = low[:, depth], high[:, depth]
        at, after = split == depth, split < depth
        between = (values > b_lo[:, None]) & (values < b_hi[:, None])
        above_lo = np.where(values > b_lo[:, None], p_lo, 0.0).sum(axis=1)
        below_hi = np.where(values < b_hi[:, None], p_hi, 0.0).sum(axis=1)
        total += np.where(at, common * np.where(between, p_lo, 0.0).sum(axis=1), 0.0)
        total += np.where(after, a_lo * above_lo + a_hi * below_hi, 0.0)
        a_lo = np.where(at, common * p_lo[rows, b_lo], a_lo * p_lo[rows, b_lo])
        a_hi = np.where(at, common * p_lo[rows, b_hi], a_hi * p_hi[rows, b_hi])
        common = common * p_lo[rows, b_lo]
    return np.where(split < 4, total + a_lo, 0.0)  # + the lower edge's own value
