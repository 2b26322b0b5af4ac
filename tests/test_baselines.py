import numpy as np
import pytest

from mmtpp.baselines import Reference, baseline_columns, oracle_columns, oracle_history_curve
from mmtpp.events import EventSequence
from mmtpp.hawkes import HawkesParams, bayes_predictions, simulate
from mmtpp.oracle import oracle_from_source


def seq(seq_id, times, types):
    return EventSequence(seq_id, np.asarray(times, float), np.asarray(types, np.int32))


def test_reference_is_fitted_on_the_training_sequences_only():
    train = [seq(f"g{i}", [0.0, 1.0, 3.0, 6.0], [1, 1, 0, 1]) for i in range(6)]
    ref = Reference.fit(train, 2)
    assert (ref.mean_gap, ref.median_gap, ref.majority) == (2.0, 2.0, 1)
    np.testing.assert_allclose(ref.type_freq, [7 / 26, 19 / 26])  # 6 + 18 of 24, add-one
    with pytest.raises(ValueError, match="no training gap"):
        Reference.fit([seq("one", [0.0], [0])], 2)


def test_baseline_columns_on_the_given_targets():
    s = seq("s", [0.0, 1.0, 3.0, 6.0], [1, 1, 0, 1])
    ref = Reference(mean_gap=2.0, median_gap=2.0, majority=1, type_freq=np.array([0.25, 0.75]))
    cols = baseline_columns(ref, {"s": s}, [("s", 2), ("s", 3)], [0.1, 0.5, 0.9])
    np.testing.assert_array_equal(cols["last_gap"], [1.0, 2.0])
    np.testing.assert_array_equal(cols["last_type"], [1, 0])
    np.testing.assert_allclose(cols["poisson_time_nll"], np.log(2.0) + np.array([2.0, 3.0]) / 2)
    np.testing.assert_allclose(cols["freq_type_nll"], -np.log([0.25, 0.75]))
    np.testing.assert_allclose(cols["poisson_pit"], 1 - np.exp(-np.array([2.0, 3.0]) / 2))
    np.testing.assert_allclose(cols["poisson_quantiles"][0, 1], 2.0 * np.log(2))
    assert "poisson_time_nll_binned" not in cols  # continuous times: no bins


def test_poisson_bin_probability_on_data_recorded_to_a_resolution():
    """Times in whole minutes of an hour: P(bin) = S(lo) − S(hi) of the exponential; a tie's
    bin is [0, r/2); a fine resolution tends to density × width."""
    s = seq("s", [0.0, 1.0, 1.0, 6.0 + 1 / 60], [1, 1, 0, 1])  # gaps 1 h, 0 (a tie), 5 h 1 min
    ref = Reference(mean_gap=2.0, median_gap=2.0, majority=1, type_freq=np.array([0.25, 0.75]))
    targets = [("s", 1), ("s", 2), ("s", 3)]
    r = 1 / 60
    cols = baseline_columns(ref, {"s": s}, targets, [0.5], resolution=r)
    lo, hi = np.array([1 - r / 2, 0.0, 5 + r / 2]), np.array([1 + r / 2, r / 2, 5 + 3 * r / 2])
    want = -np.log(np.exp(-lo / 2) - np.exp(-hi / 2))
    np.testing.assert_allclose(cols["poisson_time_nll_binned"], want, rtol=1e-12)
    fine = baseline_columns(ref, {"s": s}, targets, [0.5], resolution=1e-7)
    density = cols["poisson_time_nll"][[0, 2]] - np.log(1e-7)
    np.testing.assert_allclose(fine["poisson_time_nll_binned"][[0, 2]], density, rtol=1e-6)


def test_oracle_columns_are_the_bayes_predictions_of_the_same_targets():
    params = HawkesParams(mu=[0.3, 0.2], alpha=[[0.3, 0.4], [0.2, 0.1]], beta=2.0)
    times, types = simulate(params, np.random.default_rng(0), num_events=60)
    s = seq("s", times, types)
    oracle = oracle_from_source({"hawkes": params.to_dict()})
    targets = [("s", 5), ("s", 17), ("s", 59)]
    cols = oracle_columns(oracle, {"s": s}, targets, [0.05, 0.5, 0.95])
    want = bayes_predictions(params, times, types)
    idx = np.array([t for _, t in targets]) - 1  # bayes_predictions row i predicts event i+1
    np.testing.assert_allclose(cols["bayes_mean"], want.mean_gap[idx])
    np.testing.assert_allclose(cols["bayes_time_nll"], want.nll_time[idx])
    np.testing.assert_allclose(cols["bayes_type_nll"], want.nll_type[idx])
    np.testing.assert_allclose(cols["bayes_quantiles"][:, 1], want.median_gap[idx], rtol=1e-8)
    assert ((cols["bayes_pit"] > 0) & (cols["bayes_pit"] < 1)).all()
    curve = oracle_history_curve(oracle, {"s": s}, targets, [1, 1000])
    np.testing.assert_allclose(curve["time_nll"][:, 1], want.nll_time[idx])  # all history
    assert not np.allclose(curve["time_nll"][:, 0], curve["time_nll"][:, 1])
