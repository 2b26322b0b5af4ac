"""The exact descent of the byte tree, against models whose gap distribution is known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_distribution import random_arrays

from mmtpp.distribution import ByteGapDistribution
from mmtpp.quantile_descent import descend_quantiles, interval_mass
from mmtpp.timecodec import decode, encode


class ConstructedModel:
    """A model whose gap distribution is known exactly: ``values`` (float32) with
    ``weights``, its byte probabilities produced as softmax logits over a vocabulary of 300
    tokens (the byte tokens at shuffled ids), with ``junk`` of every step's probability on
    invalid continuations: non-byte tokens, a negative first byte, inf/NaN after 127 (with
    ``deep_junk=False``, of the first step's only)."""

    def __init__(self, values, weights, junk=0.1, seed=0, logits=True, deep_junk=True):
        self.logits = logits
        self.deep_junk = deep_junk
        self.words = encode(np.asarray(values, dtype=np.float32))
        self.weights = np.asarray(weights, dtype=np.float64)
        self.junk = junk
        self.byte_ids = np.random.default_rng(seed).permutation(300)[:256]
        self.calls = []

    def __call__(self, prefixes: np.ndarray) -> np.ndarray:
        self.calls.append(prefixes.shape[1])
        depth = prefixes.shape[1]
        probs = np.zeros((len(prefixes), 300))
        for r, prefix in enumerate(prefixes):
            match = (self.words[:, :depth] == prefix).all(axis=1)
            conditional = np.zeros(256)
            np.add.at(conditional, self.words[match, depth], self.weights[match])
            if not match.any():  # a prefix of probability 0 (an interval's edge): any row
                conditional[:] = 1.0
            junk = self.junk if depth == 0 or self.deep_junk else 0.0
            probs[r, self.byte_ids] = (1 - junk) * conditional / conditional.sum()
            if depth == 0:  # half the junk on a negative first byte
                probs[r, self.byte_ids[0xC1]] += self.junk / 2
            if depth == 1 and prefix[0] == 0x7F:  # half on inf/NaN
                probs[r, self.byte_ids[0x80 + 7]] += junk / 2
            non_byte = np.setdiff1d(np.arange(300), self.byte_ids)
            probs[r, non_byte] += max(1.0 - probs[r].sum(), 0.0) / non_byte.size
        if not self.logits:
            return probs[:, self.byte_ids]
        with np.errstate(divide="ignore"):
            logits = np.log(probs) + 3.0  # any shift: softmax undoes it; log 0 = -inf
        soft = np.exp(logits - logits.max(axis=1, keepdims=True))
        soft /= soft.sum(axis=1, keepdims=True)
        return soft[:, self.byte_ids]

    def quantile(self, alpha: float) -> np.float32:
        """The generalised inverse inf{v : F(v) ≥ α} of the known distribution."""
        values = decode(self.words)
        order = np.argsort(values)
        cum = np.cumsum(self.weights[order]) / self.weights.sum()
        k = min(int(np.searchsorted(cum, alpha, side="left")), values.size - 1)
        return values[order][k]


# known distributions: up to six distinct float32 values over 60 orders of magnitude, weights
KNOWN_VALUES = st.lists(
    st.floats(float(np.float32(1e-30)), float(np.float32(1e30)), width=32),
    min_size=1,
    max_size=6,
    unique=True,
)
KNOWN_WEIGHTS = st.lists(st.floats(0.01, 1.0), min_size=6, max_size=6)


def test_descent_finds_the_exact_quantiles_of_constructed_logits():
    values = [1e-3, 0.5, 1.0, 1.5, 3.0, 2.5e3, 3e38]  # 3e38: first byte 0x7F
    weights = [0.15, 0.1, 0.2, 0.05, 0.3, 0.15, 0.05]
    model = ConstructedModel(values, weights)
    levels = [0.0, 0.1, 0.2, 0.4, 0.6, 0.9, 0.99, 1.0]
    got = descend_quantiles(model, levels, batch=2)
    assert model.calls == [0, 1, 2, 3]
    want = [model.quantile(a) if a > 0 else np.float32(1e-3) for a in levels]
    assert got.quantiles.shape == (2, 8)
    assert (got.quantiles == np.array(want, dtype=np.float64)).all()
    assert got.excluded == pytest.approx(np.full((2, 8, 4), 0.1), abs=1e-12)


def test_a_level_on_a_cumulative_probability_gives_the_atom_that_reaches_it():
    """The generalised inverse min{v : F(v) ≥ α}: with dyadic weights the sums are exact."""
    model = ConstructedModel([1.0, 2.0, 4.0], [0.25, 0.25, 0.5], junk=0.0, logits=False)
    got = descend_quantiles(model, [0.25, 0.5, 0.5000001, 1.0], batch=1).quantiles[0]
    assert got.tolist() == [1.0, 2.0, 4.0, 4.0]


@given(
    values=KNOWN_VALUES,
    weights=KNOWN_WEIGHTS,
    alpha=st.floats(0.0, 1.0),
)
def test_descent_is_exact_for_any_known_distribution(values, weights, alpha):
    weights = np.asarray(weights[: len(values)])
    model = ConstructedModel(values, weights, junk=0.05)
    # a level within rounding of a cumulative weight sits on a knife's edge: skip it
    if np.min(np.abs(np.cumsum(weights[np.argsort(values)]) / weights.sum() - alpha)) < 1e-9:
        return
    got = descend_quantiles(model, [alpha], batch=1).quantiles[0, 0]
    want = model.quantile(alpha) if alpha > 0 else np.float32(min(values))
    assert got == float(want)


def test_descent_refines_the_two_byte_quantiles_within_their_cell():
    """With the last two bytes uniform, the float32 grid in a cell is even, so the descent's
    quantile is the two-byte distribution's to within 1/65536 of a cell."""
    rng = np.random.default_rng(3)
    first, p_first, p_second = random_arrays(rng, 2, 3)
    p_first = p_first / p_first.sum(axis=1, keepdims=True)
    p_second = p_second / p_second.sum(axis=2, keepdims=True)
    dist = ByteGapDistribution(first, p_first, p_second, guard=False)

    def probs(prefixes: np.ndarray) -> np.ndarray:
        row = np.arange(len(prefixes)) // levels.size
        out = np.zeros((len(prefixes), 256))
        if prefixes.shape[1] == 0:
            out[np.arange(len(prefixes))[:, None], first[row]] = p_first[row]
        elif prefixes.shape[1] == 1:
            slot = (first[row] == prefixes[:, :1]).argmax(axis=1)
            out = p_second[row, slot]
        else:
            out[:] = 1 / 256
        return out

    levels = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
    exact = descend_quantiles(probs, levels, batch=2).quantiles
    approx = dist.quantiles(levels)
    cell = approx * (1 / 128)
    assert (np.abs(exact - approx) <= cell / 65536 * 1.5 + 1e-12 * approx).all()


def test_descent_respects_the_first_byte_support():
    values = [8.5, 40.0, 1e23]  # first bytes 0x41, 0x42, 0x65
    model = ConstructedModel(values, [0.5, 0.49, 0.01], junk=0.0)
    free = descend_quantiles(model, [0.995], batch=1).quantiles[0, 0]
    allowed = np.zeros((1, 256), dtype=bool)
    allowed[0, [0x41, 0x42]] = True
    guarded = descend_quantiles(model, [0.995], batch=1, allowed_first=allowed)
    assert free == pytest.approx(1e23, rel=1e-7) and guarded.quantiles[0, 0] == 40.0
    assert guarded.excluded[0, 0, 0] == pytest.approx(0.01)


def test_descent_without_any_valid_byte_gives_nan():
    def only_negative(prefixes):
        out = np.zeros((len(prefixes), 256))
        out[:, 0xC0] = 1.0
        return out

    got = descend_quantiles(only_negative, [0.5], batch=2)
    assert np.isnan(got.quantiles).all() and got.excluded[:, :, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="next_byte_probs at depth 0 must return 2x256"):
        descend_quantiles(lambda p: np.ones((1, 256)) / 256, [0.5], batch=2)


def _known_mass(model: ConstructedModel, lo: float, hi: float) -> float:
    """Σ of the known values' probabilities in [float32(lo), float32(hi)): the first step's
    junk (invalid tokens) is in no bin."""
    values = decode(model.words).astype(np.float64)
    inside = (values >= np.float32(lo)) & (values < np.float32(hi))
    return (1 - model.junk) * model.weights[inside].sum() / model.weights.sum()


def test_interval_mass_of_constructed_logits_counts_the_lower_edge_not_the_upper():
    values = [1e-3, 0.5, 1.0, 1.5, 3.0, 2.5e3, 3e38]
    weights = [0.15, 0.1, 0.2, 0.05, 0.3, 0.15, 0.05]
    model = ConstructedModel(values, weights, junk=0.1, deep_junk=False)
    edges = [(0.0, 1.0), (1.0, 1.5), (0.5, 0.5), (0.0, 3.4e38), (1.4, 2.6e3), (2.0, 2.9)]
    got = interval_mass(model, [e[0] for e in edges], [e[1] for e in edges])
    assert model.calls == [0, 1, 2, 3]
    want = [_known_mass(model, lo, hi) for lo, hi in edges]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert got[2] == 0.0 and got[5] == 0.0  # an empty interval; no value inside
    # edges that part at the third and at the last byte: values a few float32 steps apart
    ulp = 2.0**-23
    near = [1.0, 1.0 + 3 * ulp, 1.0 + 5 * ulp, 1.0 + 300 * ulp, 1.0 + 301 * ulp]
    model = ConstructedModel(near, [0.1, 0.2, 0.3, 0.25, 0.15], junk=0.1, deep_junk=False)
    edges = [(1.0 + ulp, 1.0 + 5 * ulp), (1.0 + 3 * ulp, 1.0 + 301 * ulp), (1.0, 1.0 + ulp)]
    got = interval_mass(model, [e[0] for e in edges], [e[1] for e in edges])
    np.testing.assert_allclose(got, 0.9 * np.array([0.2, 0.75, 0.1]), rtol=1e-12)
    # junk at every step: a value on an edge path pays it at all four steps
    model = ConstructedModel(near, [0.1, 0.2, 0.3, 0.25, 0.15], junk=0.1)
    got = interval_mass(model, [1.0, 1.0 + 3 * ulp], [1.0 + ulp, 1.0 + 4 * ulp])
    np.testing.assert_allclose(got, 0.9**4 * np.array([0.1, 0.2]), rtol=1e-12)
    with pytest.raises(ValueError, match="0 <= lo <= hi"):
        interval_mass(model, [2.0], [1.0])


@given(
    values=KNOWN_VALUES,
    weights=KNOWN_WEIGHTS,
    cuts=st.lists(st.floats(0.0, float(np.float32(3e30)), width=32), min_size=2, max_size=2),
    on_value=st.booleans(),
)
def test_interval_mass_is_exact_for_any_known_distribution(values, weights, cuts, on_value):
    """Any interval, split at any byte (or not at all), edges on a value or between values."""
    model = ConstructedModel(values, np.asarray(weights[: len(values)]), junk=0.05, deep_junk=False)
    lo, hi = sorted(cuts)
    if on_value:  # the lower edge exactly on a value: it counts
        lo = min(values)
        hi = max(hi, lo)
    got = interval_mass(model, [lo], [hi])[0]
    assert got == pytest.approx(_known_mass(model, lo, hi), rel=1e-9, abs=1e-15)
