import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmtpp.compression import (
    compressed_costs,
    compression_stats,
    events_in_budget,
    gaps_from_times,
    similar_mask,
)


@pytest.fixture(autouse=True, scope="module")
def ieee_subnormals():
    """Other tests (and Ray workers) flush denormals for speed; these check exact IEEE
    behaviour, subnormals included."""
    torch.set_flush_denormal(False)


gap_arrays = arrays(np.float64, st.integers(0, 60), elements=st.floats(0, 3, width=32))
deltas = st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0])


def loop_mask(gaps, delta, direction, keep_last=False):
    """SPEC §4 written as the scan it describes: the reference is the previous event in
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


def test_stats_count_compression():
    gaps = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 9.0])
    costs = np.full(6, 10)
    s0, s2 = (compression_stats([(gaps, costs)], d, budget=25) for d in (0.0, 0.2))
    assert s0.events_per_budget == 2 and s0.compression_ratio == 1.0
    # backward, keep_last: events 1..3 compressed -> costs 10,1,1,1,10,10
    assert s2.compressed_events == 3
    assert s2.tokens_compressed == 33 and s2.compression_ratio == pytest.approx(60 / 33)
    assert s2.events_per_budget == 5  # 10 + 10 + 1 + 1 + 1 = 23 <= 25; the first adds 10
    assert s2.events_per_budget_uncompressed == 2 and s2.capped_sequences == 0
