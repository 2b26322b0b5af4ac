"""OTD against hand-computed cases and a brute-force assignment."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from mmtpp.otd import otd

events = st.lists(st.tuples(st.floats(0, 10), st.integers(0, 1)), max_size=5)


def split(seq):
    return np.array([t for t, _ in seq], dtype=float), np.array([k for _, k in seq], dtype=int)


def brute_force_otd(a, b, cost: float) -> float:
    """The same distance as an assignment problem: each event of a is paired with an event
    of b of its type (|t − t'|) or with a deletion slot (C); unused slots pair at 0."""
    (ta, ka), (tb, kb) = split(a), split(b)
    n, m = ta.size, tb.size
    big = 1e9
    matrix = np.zeros((n + m, m + n))
    pair = np.abs(ta[:, None] - tb[None, :])
    matrix[:n, :m] = np.where(ka[:, None] == kb[None, :], pair, big)
    matrix[:n, m:] = np.where(np.eye(n, dtype=bool), cost, big)  # delete a_i
    matrix[n:, :m] = np.where(np.eye(m, dtype=bool), cost, big)  # insert b_j
    rows, cols = linear_sum_assignment(matrix)
    return float(matrix[rows, cols].sum())


@pytest.mark.parametrize("k", [1, 3, 7])
def test_otd_of_k_events_against_nothing_is_k_deletions(k):
    times, types = np.arange(k, dtype=float), np.arange(k) % 2
    assert otd(times, types, [], [], cost=1.5) == pytest.approx(1.5 * k)
    assert otd([], [], times, types, cost=1.5) == pytest.approx(1.5 * k)


@pytest.mark.parametrize("shift", [0.0, 0.7, 3.9, 4.1, 25.0])
def test_otd_of_one_shifted_event_is_the_shift_up_to_two_costs(shift):
    assert otd([2.0], [1], [2.0 + shift], [1], cost=2.0) == pytest.approx(min(shift, 4.0))


def test_otd_never_pairs_events_of_different_types():
    assert otd([2.0], [0], [2.0], [1], cost=3.0) == pytest.approx(6.0)
    # two types: each pairs with its own, although the other type is nearer
    assert otd([1.0, 1.2], [0, 1], [1.25, 1.05], [0, 1], cost=1.0) == pytest.approx(0.4)


def test_otd_hand_cases_where_the_cost_decides_between_moving_and_replacing():
    # a = 0, 1, 2 and b = 0, 2 (one type, C = 0.8): pair 0↔0, 2↔2, delete 1 → 0.8
    assert otd([0, 1, 2], [0, 0, 0], [0, 2], [0, 0], cost=0.8) == pytest.approx(0.8)
    # moving 1 → 1.9 costs 0.9: cheaper than deleting and inserting at C = 0.5 (1.0), dearer
    # at C = 0.4 (0.8)
    assert otd([0, 1], [0, 0], [0, 1.9], [0, 0], cost=0.5) == pytest.approx(0.9)
    assert otd([0, 1], [0, 0], [0, 1.9], [0, 0], cost=0.4) == pytest.approx(0.8)


@given(a=events, b=events, cost=st.floats(0.05, 5.0))
def test_otd_equals_the_optimal_assignment_and_is_symmetric(a, b, cost):
    ab = otd(*split(a), *split(b), cost=cost)
    assert ab == pytest.approx(brute_force_otd(a, b, cost), rel=1e-9, abs=1e-9)
    assert ab == pytest.approx(otd(*split(b), *split(a), cost=cost), rel=1e-12, abs=1e-12)
    assert 0 <= ab <= cost * (len(a) + len(b)) + 1e-9


@given(a=events, b=events, c=events, cost=st.floats(0.05, 5.0))
def test_otd_satisfies_the_triangle_inequality(a, b, c, cost):
    ac = otd(*split(a), *split(c), cost=cost)
    ab, bc = otd(*split(a), *split(b), cost=cost), otd(*split(b), *split(c), cost=cost)
    assert ac <= ab + bc + 1e-9


def test_otd_rejects_a_bad_cost():
    with pytest.raises(ValueError, match="cost must be > 0"):
        otd([1.0], [0], [1.0], [0], cost=0.0)
