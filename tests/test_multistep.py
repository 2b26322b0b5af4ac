"""Multi-step forecasts: per-horizon errors and OTD scores on hand cases, and the baseline
forecasters' validity and seeding."""

from __future__ import annotations

import numpy as np
import pytest

from mmtpp.baseline_forecasts import poisson_forecast, repeat_last_forecast
from mmtpp.events import EventSequence
from mmtpp.multistep import (
    NO_TYPE,
    Continuations,
    horizon_errors,
    otd_scores,
    point_forecast,
    truth_after,
)

# --- continuations, point forecast, per-horizon errors ------------------------------------


def hand_forecast() -> Continuations:
    """History ends at 3; three samples, the third stops after one event."""
    return Continuations.from_events(
        [3.0], [[[(4.5, 0), (6.0, 0), (9.0, 1)], [(3.5, 0), (7.0, 1), (8.0, 1)], [(5.0, 2)]]]
    )


def test_point_forecast_is_the_median_time_and_the_most_frequent_type():
    point = point_forecast(hand_forecast())
    # offsets per step: (1.5, 0.5, 2) → 1.5; (3, 4, none) → 4; (6, 5, none) → 6
    assert point.times[0, 0].tolist() == [4.5, 7.0, 9.0]
    # types: (0, 0, 2) → 0; (0, 1) tie → 0; (1, 1) → 1
    assert point.types[0, 0].tolist() == [0, 0, 1]
    two_short = Continuations.from_events([0.0], [[[(1.0, 0), (2.0, 0)], [(1.5, 1)], [(3.0, 1)]]])
    point = point_forecast(two_short)
    assert point.times[0, 0, 0] == 1.5 and np.isnan(point.times[0, 0, 1])  # most lack a 2nd


def test_per_horizon_errors_on_a_hand_case():
    seq = EventSequence("s", [0.0, 1.0, 3.0, 4.0, 7.0, 8.0], [0, 1, 2, 0, 0, 1])
    truth = truth_after([seq], [3], steps=3)
    assert truth.times[0, 0].tolist() == [4.0, 7.0, 8.0] and truth.start[0] == 3.0
    errors = horizon_errors(hand_forecast(), truth)
    # point forecast 4.5, 7, 9 (types 0, 0, 1) vs truth 4, 7, 8 (types 0, 0, 1)
    assert errors.abs_error[0].tolist() == [0.5, 0.0, 1.0]
    assert errors.correct[0].tolist() == [1.0, 1.0, 1.0]
    summary = errors.summary()
    assert [s["step"] for s in summary] == [1, 2, 3]
    assert all(s["mae"] is None for s in summary)  # one target: no interval
    two = horizon_errors(
        Continuations.from_events([0.0, 0.0], [[[(1.0, 0)]], [[(2.0, 1)]]]),
        Continuations.from_events([0.0, 0.0], [[[(1.5, 0)]], [[(3.0, 0)]]]),
    )
    (step,) = two.summary()
    assert step["mae"]["estimate"] == pytest.approx(0.75) and step["targets"] == 2
    assert step["type_accuracy"]["estimate"] == 0.5


def test_per_horizon_errors_count_missing_forecasts_and_short_truths():
    forecast = Continuations.from_events(
        [0.0, 10.0], [[[(1.0, 0), (2.0, 1)]], [[(12.0, 1)]]]
    )  # history 1 forecasts one event only
    truth = Continuations.from_events([0.0, 10.0], [[[(2.0, 0)]], [[(11.0, 1), (13.0, 0)]]])
    errors = horizon_errors(forecast, truth)
    assert errors.abs_error[0, 0] == 1.0 and np.isnan(errors.abs_error[0, 1])  # no true 2nd
    assert errors.abs_error[1, 0] == 1.0 and errors.correct[1, 0] == 1.0
    assert errors.missing.tolist() == [0, 1]  # history 1's 2nd true event was not forecast
    assert [s["targets"] for s in errors.summary()] == [2, 0]


def test_otd_scores_per_sample_point_and_incomplete_windows():
    seq = EventSequence("s", [0.0, 1.0, 3.0, 4.0, 7.0, 8.0], [0, 1, 2, 0, 0, 1])
    truth = truth_after([seq], [3], steps=3)
    scores = otd_scores(hand_forecast(), truth, horizon=10.0, cost=1.0)
    # sample 1: type 0 (4.5, 6) vs (4, 7): 0.5 + 1; type 1 9 vs 8: 1 → 2.5
    # sample 2: type 0 3.5 vs (4, 7): 0.5 + C; type 1 (7, 8) vs 8: 0 + C → 2.5
    # sample 3: every true event deleted, (5, type 2) inserted → 4
    assert scores.samples[0].tolist() == pytest.approx([2.5, 2.5, 4.0])
    assert scores.mean[0] == pytest.approx(3.0)
    assert scores.point[0] == pytest.approx(1.5)  # 4.5, 7, 9 vs 4, 7, 8
    # two samples and the truth stop at K = 3 events before the window ends at 13
    assert scores.incomplete_samples.tolist() == [2] and scores.incomplete_truth.tolist() == [True]
    summary = scores.summary()
    assert summary["otd"] is None and summary["incomplete_samples"] == 2  # one history
    short = otd_scores(hand_forecast(), truth, horizon=4.5, cost=1.0)  # window [3, 7.5]
    assert short.samples[0].tolist() == pytest.approx([1.5, 2.5, 3.0])
    assert short.incomplete_samples.tolist() == [0] and not short.incomplete_truth[0]
    unbounded = otd_scores(hand_forecast(), truth, horizon=np.inf, cost=1.0)  # next K events
    assert unbounded.samples[0].tolist() == pytest.approx([2.5, 2.5, 4.0])
    assert unbounded.incomplete_samples.tolist() == [0] and not unbounded.incomplete_truth[0]


def test_continuations_round_trip_through_nested_lists():
    events = [[[(4.5, 0), (6.0, 0)], [(5.0, 2)]], [[], [(11.0, 1)]]]
    forecast = Continuations.from_events([3.0, 10.0], events)
    assert forecast.times.shape == (2, 2, 2) and forecast.lengths.tolist() == [[2, 1], [0, 1]]
    assert forecast.to_events() == events


def test_continuations_refuse_invalid_events():
    with pytest.raises(ValueError, match="times decrease"):
        Continuations.from_events([0.0], [[[(2.0, 0), (1.0, 0)]]])
    with pytest.raises(ValueError, match="before its history's end"):
        Continuations.from_events([5.0], [[[(4.0, 0)]]])
    with pytest.raises(ValueError, match="follows padding"):
        Continuations([0.0], [[[np.nan, 1.0]]], [[[NO_TYPE, 0]]])
    with pytest.raises(ValueError, match="NaN without type -1"):
        Continuations([0.0], [[[np.nan]]], [[[0]]])
    with pytest.raises(ValueError, match="out of range"):
        Continuations.from_events([0.0], [[[(1.0, 4)]]]).check_types(4)
    seq = EventSequence("s", [0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="sequence s: cut 0"):
        truth_after([seq], [0], steps=2)


# --- baselines ----------------------------------------------------------------------------


def histories() -> list[EventSequence]:
    return [
        EventSequence("a", [0.0, 1.0, 3.0], [0, 1, 2]),
        EventSequence("b", [5.0], [1]),
        EventSequence("c", [2.0, 2.0], [3, 0]),  # a tie: the last gap is 0
    ]


def assert_valid(forecast: Continuations, num_types: int) -> None:
    forecast.check_types(num_types)  # also checked: sorted, after the history (post_init)
    offsets = forecast.offsets[~np.isnan(forecast.times)]
    assert (offsets >= 0).all()
    assert (np.diff(forecast.times, axis=2)[~np.isnan(np.diff(forecast.times, axis=2))] >= 0).all()


def test_poisson_forecast_is_valid_seeded_and_at_the_training_rate():
    kwargs = dict(steps=6, samples=500, mean_gap=2.0, type_freq=[1, 1, 2, 0], seed=7)
    forecast = poisson_forecast(histories(), **kwargs)
    assert forecast.times.shape == (3, 500, 6) and forecast.start.tolist() == [3.0, 5.0, 2.0]
    assert_valid(forecast, 4)
    again = poisson_forecast(histories(), **kwargs)
    assert np.array_equal(forecast.times, again.times)
    assert np.array_equal(forecast.types, again.types)
    other = poisson_forecast(histories(), **{**kwargs, "seed": 8})
    assert not np.array_equal(forecast.times, other.times)
    gaps = np.diff(forecast.offsets, axis=2, prepend=0.0)
    assert gaps.mean() == pytest.approx(2.0, rel=0.03)
    share = np.bincount(forecast.types.ravel(), minlength=4) / forecast.types.size
    assert share == pytest.approx([0.25, 0.25, 0.5, 0.0], abs=0.02)


def test_poisson_forecast_drops_events_after_until():
    forecast = poisson_forecast(histories(), 20, 50, 1.0, [1, 1], seed=0, until=[5.0, 6.0, 4.0])
    assert_valid(forecast, 2)
    ends = np.array([5.0, 6.0, 4.0])[:, None, None]
    kept = ~np.isnan(forecast.times)
    assert (forecast.times[kept] <= np.broadcast_to(ends, forecast.times.shape)[kept]).all()
    assert forecast.lengths.max() < 20 and forecast.lengths.min() >= 0


def test_repeat_last_forecast_repeats_the_last_gap_and_type():
    forecast = repeat_last_forecast(histories(), steps=3, samples=2, fallback_gap=4.0)
    assert_valid(forecast, 4)
    assert forecast.times[0, 1].tolist() == [5.0, 7.0, 9.0]  # last gap 2
    assert forecast.types[0, 0].tolist() == [2, 2, 2]
    assert forecast.times[1, 0].tolist() == [9.0, 13.0, 17.0]  # one event: the fallback gap
    assert forecast.times[2, 0].tolist() == [2.0, 2.0, 2.0]  # a zero gap stays zero
    cut = repeat_last_forecast(histories(), 3, 1, 4.0, until=[8.0, 100.0, 2.0])
    assert cut.lengths.tolist() == [[2], [3], [3]]


def test_baselines_refuse_bad_arguments():
    with pytest.raises(ValueError, match="steps and samples must be >= 1"):
        repeat_last_forecast(histories(), steps=0, samples=1, fallback_gap=1.0)
    with pytest.raises(ValueError, match="mean_gap must be > 0"):
        poisson_forecast(histories(), 2, 2, mean_gap=0.0, type_freq=[1.0], seed=0)
    empty = EventSequence("e", [], [])
    with pytest.raises(ValueError, match="history of sequence e is empty"):
        repeat_last_forecast([empty], 2, 1, 1.0)
