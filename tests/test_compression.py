import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmtpp.compression import (
    DIRECTIONS,
    MODES,
    CompressionRule,
    CompressionTarget,
    calibrate,
    compressed_costs,
    events_in_budget,
    gaps_from_times,
    mask,
    similar_mask,
)
from mmtpp.compression_stats import compression_stats
from mmtpp.hawkes import simulate
from mmtpp.sources.synthetic_processes import default_hawkes

# Exact IEEE behaviour, subnormals included (conftest switches off the flush other tests set).
pytestmark = pytest.mark.ieee


gap_arrays = arrays(np.float64, st.integers(0, 60), elements=st.floats(0, 3, width=32))
deltas = st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0])


def loop_mask(gaps, delta, direction, keep_last=False):
    """design §4 written as the scan it describes: the reference is the previous event in
    scan order, compressed or not."""
    n = len(gaps)
    mask = [False] * n
    if delta > 0:
        order = range(2, n) if direction == "forward" else range(n - 2, 0, -1)
        for i in order:
            ref = gaps[i - 1] if direction == "forward" else gaps[i + 1]
            mask[i] = abs(gaps[i] - ref) < delta
    if keep_last and n:
        mask[-1] = False
    return np.array(mask, dtype=bool)


@given(gap_arrays, deltas, st.sampled_from(["forward", "backward"]), st.booleans())
def test_vectorised_mask_matches_the_scan(gaps, delta, direction, keep_last):
    np.testing.assert_array_equal(
        similar_mask(gaps, delta, direction, keep_last),
        loop_mask(gaps, delta, direction, keep_last),
    )


@given(gap_arrays, st.sampled_from(["forward", "backward"]))
def test_delta_zero_disables(gaps, direction):
    assert not similar_mask(gaps, 0.0, direction).any()


@given(gap_arrays, deltas)
def test_first_event_never_and_last_kept_with_keep_last(gaps, delta):
    for direction in ("forward", "backward"):
        mask = similar_mask(gaps, delta, direction, keep_last=True)
        if len(gaps):
            assert not mask[0] and not mask[-1]
    assert len(gaps) < 2 or not similar_mask(gaps, delta, "forward")[1]


@given(gap_arrays)
def test_larger_delta_compresses_at_least_as_much(gaps):
    counts = [similar_mask(gaps, d, "backward").sum() for d in (0.0, 0.05, 0.2, 0.5)]
    assert counts == sorted(counts)


def test_run_keeps_first_forward_and_most_recent_backward():
    gaps = np.array([0.0, 5.0, 1.0, 1.1, 1.05, 7.0])
    assert similar_mask(gaps, 0.2, "forward").tolist() == [0, 0, 0, 1, 1, 0]
    assert similar_mask(gaps, 0.2, "backward").tolist() == [0, 0, 1, 1, 0, 0]


def test_chained_reference_collapses_a_drift():
    # each gap within Δ of its neighbour although the run drifts by far more than Δ
    gaps = np.array([0.0, 1.0, 1.15, 1.3, 1.45, 1.6])
    assert similar_mask(gaps, 0.2, "forward").tolist() == [0, 0, 1, 1, 1, 1]


def test_gaps_and_budget():
    np.testing.assert_array_equal(gaps_from_times([2.0, 3.0, 3.5]), [0.0, 1.0, 0.5])
    assert events_in_budget([5, 5, 5], 10) == 2
    assert events_in_budget([5, 5, 5], 9) == 1
    assert events_in_budget([5, 5, 5], 100) == 3
    np.testing.assert_array_equal(compressed_costs([5, 6, 7], [0, 1, 0]), [5, 1, 7])


# --- scale-free and hybrid rules ---------------------------------------------------------------

# gaps with many exact ties (zeros included) besides arbitrary floats
tied_gaps = st.one_of(st.sampled_from([0.0, 0.25, 1.0, 1.1, 2.0]), st.floats(0, 3, width=32))
rule_modes = st.sampled_from(MODES)


@st.composite
def gaps_and_types(draw):
    gaps = draw(arrays(np.float64, st.integers(0, 60), elements=tied_gaps))
    types = draw(arrays(np.int64, gaps.size, elements=st.integers(0, 2)))
    return gaps, types


def similar_by_definition(mode, a, b, ka, kb, delta):
    """One event against its reference, written from each rule's definition."""
    if mode == "absolute":
        return abs(a - b) < delta
    if a == 0 and b == 0:  # ties: two zero gaps are similar
        close = True
    elif a == 0 or b == 0:  # a zero and a non-zero gap never are
        close = False
    else:
        close = abs(math.log(a) - math.log(b)) < delta
    return close and (mode == "relative" or ka == kb)


def loop_rule_mask(rule, gaps, types, direction, keep_last):
    n = len(gaps)
    out = [False] * n
    if rule.delta > 0:
        order = range(2, n) if direction == "forward" else range(n - 2, 0, -1)
        for i in order:
            r = i - 1 if direction == "forward" else i + 1
            out[i] = similar_by_definition(
                rule.mode, gaps[i], gaps[r], types[i], types[r], rule.delta
            )
    if keep_last and n:
        out[-1] = False
    return np.array(out, dtype=bool)


@given(gaps_and_types(), rule_modes, deltas, st.sampled_from(DIRECTIONS), st.booleans())
def test_every_rule_matches_its_per_event_loop(gt, mode, delta, direction, keep_last):
    gaps, types = gt
    rule = CompressionRule(mode, delta)
    np.testing.assert_array_equal(
        mask(rule, gaps, types, direction, keep_last),
        loop_rule_mask(rule, gaps, types, direction, keep_last),
    )


@given(gaps_and_types(), rule_modes, st.sampled_from(DIRECTIONS), st.booleans())
def test_delta_zero_disables_every_rule(gt, mode, direction, keep_last):
    gaps, types = gt
    assert not mask(CompressionRule(mode, 0.0), gaps, types, direction, keep_last).any()


@given(gaps_and_types(), deltas, st.sampled_from(DIRECTIONS), st.booleans())
def test_typed_is_a_subset_of_relative(gt, delta, direction, keep_last):
    gaps, types = gt
    typed = mask(CompressionRule("typed", delta), gaps, types, direction, keep_last)
    relative = mask(CompressionRule("relative", delta), gaps, types, direction, keep_last)
    assert not (typed & ~relative).any()


@given(gaps_and_types(), deltas, st.sampled_from(DIRECTIONS))
def test_typed_keeps_the_mark_sequence_recoverable(gt, delta, direction):
    # a compressed event has its reference's type, so types follow from the kept events
    gaps, types = gt
    m = mask(CompressionRule("typed", delta), gaps, types, direction, keep_last=True)
    step = -1 if direction == "forward" else 1
    idx = np.flatnonzero(m)
    np.testing.assert_array_equal(types[idx], types[idx + step])


@given(
    gaps_and_types(), st.sampled_from(["relative", "typed"]), deltas, st.sampled_from(DIRECTIONS)
)
def test_relative_rules_are_scale_free(gt, mode, delta, direction):
    gaps, types = gt
    rule = CompressionRule(mode, delta)
    hours = mask(rule, gaps, types, direction, keep_last=True)
    np.testing.assert_array_equal(mask(rule, gaps * 3600, types, direction, True), hours)


def test_worked_example_of_the_docs():
    # docs/compression.md: gaps in hours, types A = 0 / B = 1, Δ = 0.2
    gaps = np.array([0, 10, 11, 0.05, 0.15, 0, 0, 3.0, 3.1])
    types = np.array([0, 0, 1, 1, 1, 1, 0, 0, 0])
    expected = {
        "absolute": ("000011101", "000111010"),
        "relative": ("001000101", "010001010"),
        "typed": ("000000001", "000000010"),
    }
    for mode, (forward, backward) in expected.items():
        rule = CompressionRule(mode, 0.2)
        for direction, keep_last, want in (
            ("forward", False, forward),
            ("backward", True, backward),
        ):
            got = mask(rule, gaps, types, direction, keep_last)
            assert "".join(map(str, got.astype(int))) == want, (mode, direction)
            # the same gaps in minutes: only the scale-free rules keep their mask
            in_minutes = mask(rule, gaps * 60, types, direction, keep_last)
            assert (in_minutes == got).all() == (mode != "absolute"), (mode, direction)
    assert "".join(map(str, similar_mask(gaps * 60, 0.2).astype(int))) == "000000100"
    costs = np.full(9, 30)
    spent = {}
    for mode in MODES:
        for keep in (False, True):
            rule = CompressionRule(mode, 0.2, keep)
            m = mask(rule, gaps, types, "backward", True)
            spent[mode, keep] = compressed_costs(costs, m, rule.compressed_tokens).sum()
    assert [spent[m, False] for m in MODES] == [154, 183, 241]
    assert [spent[m, True] - spent[m, False] for m in MODES] == [4, 3, 1]
    with pytest.raises(ValueError, match="typed compression rule needs the event types"):
        mask(CompressionRule("typed", 0.2), gaps)


def test_rule_spec_checks_and_costs():
    assert CompressionRule("relative", 0.2).compressed_tokens == 1
    assert CompressionRule("typed", 0.2, keep_type=True).compressed_tokens == 2
    assert "×1.22" in CompressionRule("relative", 0.2).describe()
    assert "type token kept" in CompressionRule("absolute", 1, keep_type=True).describe()
    rule = CompressionRule("typed", 0.1, True)
    assert CompressionRule.from_dict(rule.to_dict()) == rule
    for bad, match in [
        (dict(mode="auto", delta=0.2), "mode must be one of"),
        (dict(mode="relative", delta=-0.1), "delta must be >= 0"),
        (dict(mode="relative", delta=float("inf")), "delta must be >= 0"),
        (dict(mode="relative", delta="0.2"), "delta must be a number"),
        (dict(mode="relative", delta=0.2, keep_type="yes"), "keep_type"),
    ]:
        with pytest.raises(ValueError, match=match):
            CompressionRule(**bad)
    with pytest.raises(ValueError, match="delta must be >= 0"):
        similar_mask([0.0, 1.0, 1.0], -0.1)
    with pytest.raises(ValueError, match="direction"):
        mask(CompressionRule("relative", 0.0), [0.0, 1.0], direction="sideways")


# --- calibration ---------------------------------------------------------------------------


def hawkes_sequences(count, events, unit=1.0, seed=0):
    """Bursty (gaps, costs, types) from the synthetic default's Hawkes process, gaps scaled to
    another time unit by ``unit``; event costs vary like rendered events (20–40 tokens)."""
    p = default_hawkes()
    out = []
    for i in range(count):
        rng = np.random.default_rng(seed + i)
        times, types = simulate(p, rng, num_events=events)
        out.append((gaps_from_times(times) * unit, rng.integers(20, 41, times.size), types))
    return out


@pytest.fixture(scope="module")
def minutes():
    return hawkes_sequences(30, 1500)


TARGETS = [
    CompressionTarget("fraction", 0.5),
    CompressionTarget("fraction", 0.3),
    CompressionTarget("gain", 2.0),
    CompressionTarget("gain", 1.5),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", TARGETS, ids=[t.describe() for t in TARGETS])
def test_calibration_reaches_its_target(minutes, mode, target):
    cal = calibrate(mode, minutes, target, budget=4096)
    assert cal.reached and cal.rule.mode == mode and cal.rule.delta > 0
    stats = compression_stats(minutes, cal.rule, 4096)
    figure = stats.compressed_fraction if target.kind == "fraction" else stats.gain
    assert figure == pytest.approx(cal.achieved)  # what it reports is what the rule does
    assert figure == pytest.approx(target.value, rel=0.02)
    # the smallest such Δ: a slightly smaller one misses the target
    below = compression_stats(minutes, CompressionRule(mode, cal.rule.delta * 0.97), 4096)
    assert (below.compressed_fraction if target.kind == "fraction" else below.gain) < figure


def test_calibrated_relative_delta_is_the_same_in_seconds_and_hours():
    hours = hawkes_sequences(12, 1000, unit=1 / 60)
    seconds = [(g * 3600, c, k) for g, c, k in hours]
    for target in (CompressionTarget("fraction", 0.5), CompressionTarget("gain", 2.0)):
        rel_h, rel_s = (calibrate("relative", s, target) for s in (hours, seconds))
        assert rel_s.rule.delta == pytest.approx(rel_h.rule.delta, rel=1e-9)
        assert rel_s.achieved == pytest.approx(rel_h.achieved)
        abs_h, abs_s = (calibrate("absolute", s, target) for s in (hours, seconds))
        assert abs_s.rule.delta == pytest.approx(3600 * abs_h.rule.delta, rel=1e-6)


def test_unreachable_target_returns_the_best_reachable_delta():
    gaps = np.array([0.0, 1.0, 1.0, 1.0, 5.0, 5.0, 9.0])
    types = np.array([0, 0, 1, 1, 1, 0, 0])
    cal = calibrate("typed", [(gaps, None, types)], CompressionTarget("fraction", 0.9))
    # backward, keep_last: only events 2, 3 and 5 have a same-type successor, so 3/7 at most
    assert not cal.reached and cal.achieved == pytest.approx(3 / 7)
    kept = mask(cal.rule, gaps, types, "backward", True)
    assert kept.astype(int).tolist() == [0, 0, 1, 1, 0, 1, 0]
    # the smallest Δ that does it: above the largest distance, log 5 (event 3: 1 h → 5 h)
    assert math.log(5) < cal.rule.delta < 2 * math.log(5) + 1e-9
    nothing = calibrate("typed", [(gaps, None, types)], CompressionTarget("fraction", 0))
    assert nothing.rule.delta == 0 and nothing.reached
    with pytest.raises(ValueError, match="needs per-event token costs"):
        calibrate("relative", [(gaps, None)], CompressionTarget("gain", 2))


def test_budget_fits_match_the_per_sequence_count(minutes):
    from mmtpp.compression import _fits

    costs = [c for _, c, _ in minutes[:5]] + [np.array([5000]), np.array([1, 2])]
    bounds = np.concatenate([[0], np.cumsum([c.size for c in costs])])
    fits = _fits(np.concatenate(costs), bounds, 4096)
    assert fits.tolist() == [events_in_budget(c, 4096) for c in costs]


def test_target_spec():
    assert CompressionTarget.parse("gain=2").describe() == "gain=2"
    assert CompressionTarget.parse("fraction = 0.5") == CompressionTarget("fraction", 0.5)
    for bad in ("gain=0.5", "fraction=1", "ratio=2", "gain", "gain=x"):
        with pytest.raises(ValueError):
            CompressionTarget.parse(bad)
