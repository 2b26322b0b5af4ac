"""Multi-step evaluation: hand-computed figures on a regular sequence, the true-process
sampler, the frame the offline job writes, and the report pieces."""

import json

import numpy as np
import pandas as pd
import pytest

from mmtpp.baselines import Reference
from mmtpp.events import EventSequence
from mmtpp.forecast_eval import (
    evaluate_forecasts,
    forecast_table,
    model_forecasts,
    oracle_forecast,
    plot_forecasts,
)
from mmtpp.hawkes import HawkesParams, simulate
from mmtpp.oracle import HawkesOracle

STEPS = 3


def alternating(seq_id: str, n: int = 12) -> EventSequence:
    """Gaps of exactly 1, types 0, 1, 0, 1, …"""
    return EventSequence(seq_id, np.arange(n, dtype=float), np.arange(n) % 2)


def frame_of(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def perfect_rows(sequences, targets, samples=2):
    """Forecast columns as offline prediction writes them, each sample the true future."""
    rows = []
    for seq_id, t in targets:
        seq = sequences[seq_id]
        times = seq.time[t : t + STEPS].tolist()
        types = seq.type[t : t + STEPS].tolist()
        rows.append(
            {
                "seq_id": seq_id,
                "target": t,
                "forecast_times": [times] * samples,
                "forecast_types": [types] * samples,
                "forecast_invalid": json.dumps({"not_a_byte_token": 1}),
            }
        )
    return rows


@pytest.fixture
def regular():
    sequences = {f"s{i}": alternating(f"s{i}") for i in range(4)}
    ref = Reference.fit(list(sequences.values()), 2)
    # histories ending with either type
    targets = [(s, t) for s in sequences for t in (4, 5)]
    return sequences, ref, targets


def test_a_perfect_forecast_and_repeat_last_by_hand(regular):
    sequences, ref, targets = regular
    assert ref.mean_gap == 1.0
    frame = frame_of([*perfect_rows(sequences, targets), {"seq_id": "s0", "target": 7}])
    r = evaluate_forecasts(frame, sequences, ref, None, STEPS, seed=0)
    assert r["targets"] == 8 and r["otd_cost"] == 1.0 and r["horizon"] is None
    assert r["invalid_draws"] == {"not_a_byte_token": 8}
    model = r["forecasters"]["mmtpp"]
    for k in range(STEPS):
        assert model["per_step"][k]["mae"]["estimate"] == 0.0
        assert model["per_step"][k]["type_accuracy"]["estimate"] == 1.0
    assert model["otd"]["otd"]["estimate"] == 0.0
    assert model["window_events"]["estimate"] == r["truth_window_events"]["estimate"] == 3.0
    assert model["otd"]["incomplete_samples"] == 0 and model["otd"]["incomplete_truth"] == 0
    # repeat-last: the gap (1) is right, the type (the last one) right only every other step
    rep = r["forecasters"]["repeat_last"]
    assert [s["mae"]["estimate"] for s in rep["per_step"]] == [0.0, 0.0, 0.0]
    assert [s["type_accuracy"]["estimate"] for s in rep["per_step"]] == [0.0, 1.0, 0.0]
    # history ends with type a at t; truth (t+1, b), (t+2, a), (t+3, b); forecast
    # (t+1, a), (t+2, a), (t+3, a): type a pairs t+2 and deletes two (2C), type b inserts
    # two (2C): OTD = 4 with C = 1
    assert rep["otd"]["otd"]["estimate"] == 4.0
    # a forecast far in the future: on the next K events, each true event deleted and each
    # forecast one inserted (2C per event); on a window, it leaves the window empty (C per
    # true event, whatever it is)
    far = frame_of(perfect_rows(sequences, targets))
    far["forecast_times"] = [[[t + 1e6 for t in c] for c in f] for f in far["forecast_times"]]
    late = evaluate_forecasts(far, sequences, ref, None, STEPS)["forecasters"]["mmtpp"]
    assert late["otd"]["otd"]["estimate"] == 6.0
    late = evaluate_forecasts(far, sequences, ref, None, STEPS, horizon=3.0)["forecasters"]["mmtpp"]
    assert late["otd"]["otd"]["estimate"] == 3.0 and late["window_events"]["estimate"] == 0.0
    paired = r["paired"]["repeat_last"]["otd"]
    assert (paired["estimate"], paired["low"], paired["high"]) == (-4.0, -4.0, -4.0)
    assert set(r["forecasters"]) == {"mmtpp", "poisson", "repeat_last"}
    assert r["paired"]["poisson"]["otd"]["estimate"] < 0  # the truth beats random arrivals


def test_no_forecast_columns_give_no_figures(regular):
    sequences, ref, _ = regular
    frame = frame_of([{"seq_id": "s0", "target": 4, "forecast_times": None}])
    assert evaluate_forecasts(frame, sequences, ref, None, STEPS) == {}
    assert forecast_table({}) == "" and plot_forecasts({}, ".") == []


def test_model_forecasts_read_ragged_rows(regular):
    sequences, _, _ = regular
    rows = perfect_rows(sequences, [("s1", 4)])
    rows[0]["forecast_times"] = [[4.5], [4.2, 6.0, 6.5]]
    rows[0]["forecast_types"] = [[1], [0, 0, 1]]
    targets, c, invalid = model_forecasts(frame_of(rows), sequences, STEPS)
    assert targets == [("s1", 4)] and c.times.shape == (1, 2, STEPS)
    assert c.start[0] == 3.0 and c.lengths.tolist() == [[1, 3]]
    assert invalid == {"not_a_byte_token": 1}


def test_the_true_process_sampler_continues_each_history():
    params = HawkesParams(mu=[0.3, 0.2], alpha=[[0.4, 0.1], [0.2, 0.3]], beta=1.5)
    times, types = simulate(params, np.random.default_rng(0), num_events=200)
    seq = EventSequence("h", times, types)
    histories = [seq.slice(0, 50), seq.slice(0, 120)]
    oracle = HawkesOracle(params)
    a = oracle_forecast(oracle, histories, steps=4, samples=16, seed=1)
    b = oracle_forecast(oracle, histories, steps=4, samples=16, seed=1)
    np.testing.assert_array_equal(a.times, b.times)
    a.check_types(2)
    assert a.times.shape == (2, 16, 4) and (a.lengths == 4).all()
    np.testing.assert_array_equal(a.start, [times[49], times[119]])
    # the mean first gap matches the oracle's conditional mean gap, up to sampling noise
    mean, _, _ = oracle.predict_next(times, types, [50, 120])
    draws = oracle_forecast(oracle, histories, steps=1, samples=4000, seed=2)
    np.testing.assert_allclose(draws.offsets[:, :, 0].mean(axis=1), mean, rtol=0.1)


def test_the_true_process_joins_on_synthetic_data_and_the_report_shows_it(tmp_path):
    params = HawkesParams(mu=[0.3, 0.2], alpha=[[0.4, 0.1], [0.2, 0.3]], beta=1.5)
    rng = np.random.default_rng(3)
    sequences = {}
    for i in range(6):
        times, types = simulate(params, rng, num_events=60)
        sequences[f"h{i}"] = EventSequence(f"h{i}", times, types)
    ref = Reference.fit(list(sequences.values()), 2)
    oracle = HawkesOracle(params)
    targets = [(s, t) for s in sequences for t in (20, 40)]
    # a "model" that draws from the true process: its figures match the true process's
    rows = []
    model = oracle_forecast(
        oracle, [sequences[s].slice(0, t) for s, t in targets], STEPS, samples=4, seed=9
    )
    for h, (s, t) in enumerate(targets):
        rows.append(
            {
                "seq_id": s,
                "target": t,
                "forecast_times": model.times[h].tolist(),
                "forecast_types": model.types[h].tolist(),
                "forecast_invalid": "{}",
            }
        )
    r = evaluate_forecasts(frame_of(rows), sequences, ref, oracle, STEPS, cost=2.0, seed=0)
    assert set(r["forecasters"]) == {"mmtpp", "poisson", "repeat_last", "true_process"}
    assert r["otd_cost"] == 2.0 and r["horizon"] is None  # default: OTD on the next K events
    gap = r["paired"]["true_process"]["otd"]
    assert gap["low"] <= 0 <= gap["high"]  # the same process: no difference detected
    json.dumps(r)  # JSON-able as evaluation writes it
    table = forecast_table(r)
    for label in ("mmtpp", "Poisson", "repeat last", "true process", "MAE k=1", "OTD"):
        assert label in table
    assert f"on the next {STEPS} events" in table and "events in window" not in table
    paths = plot_forecasts(r, tmp_path)
    assert [p.name for p in paths] == ["forecast_horizon.png", "forecast_otd.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
