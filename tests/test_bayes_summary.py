import numpy as np
import pytest

from mmtpp import profile
from mmtpp.bayes_summary import (
    bayes_summary,
    image_reader_scores,
    regime_known_scores,
    value_of_history,
)
from mmtpp.hawkes import HawkesParams, bayes_predictions, simulate
from mmtpp.oracle import HawkesOracle
from mmtpp.profile import ProfileParams
from mmtpp.regime import RegimeParams

HAWKES = HawkesParams(mu=[0.3, 0.1], alpha=[[0.5, 0.1], [0.2, 0.3]], beta=4.0)


def sample(n_seq=6, n=80):
    out = [simulate(HAWKES, np.random.default_rng(i), num_events=n) for i in range(n_seq)]
    return [*out, (np.array([1.0]), np.array([0]))]  # one event: no target, left out


def test_summary_scores_every_target_against_the_baselines():
    sequences = sample()
    s = bayes_summary(HAWKES, sequences, history_lengths=(1, 1000))
    assert s["targets"] == 6 * 79 and s["sequences"] == 6
    parts = [bayes_predictions(HAWKES, t, k) for t, k in sequences[:-1]]
    target = np.concatenate([k[1:] for _, k in sequences[:-1]])
    best = np.concatenate([p.most_probable_type for p in parts])
    assert s["bayes"]["accuracy"] == pytest.approx(np.mean(best == target))
    assert s["bayes"]["nll"] == pytest.approx(np.concatenate([p.nll for p in parts]).mean())
    gaps = np.concatenate([np.diff(t) for t, _ in sequences[:-1]])
    freq = np.bincount(target) / target.size
    rate = 1 / gaps.mean()
    poisson = np.mean(rate * gaps - np.log(rate) - np.log(freq[target]))
    assert s["poisson"]["nll"] == pytest.approx(poisson)
    assert s["majority"]["accuracy"] == pytest.approx(freq.max())
    assert s["bayes"]["nll"] < s["poisson"]["nll"]
    short, whole = s["value_of_history"]
    assert short["history"] == 1 and whole["nll"] == pytest.approx(s["bayes"]["nll"], rel=1e-12)
    assert short["nll"] > whole["nll"]
    assert "value_of_history" not in bayes_summary(HawkesOracle(HAWKES), sequences)


def test_value_of_history_gives_one_record_per_length():
    sequences = sample()[:-1]
    curve = value_of_history(HawkesOracle(HAWKES), sequences, (2, 4))
    assert [r["history"] for r in curve] == [2, 4]
    assert set(curve[0]) == {"history", "accuracy", "nll", "nll_time", "nll_type", "rmse_mean"}


def test_knowing_the_only_regime_or_reading_empty_hints_adds_nothing():
    one = RegimeParams.from_hawkes(HAWKES)
    sequences = sample()[:-1]
    known = regime_known_scores(one, [(t, k, np.zeros(t.size, int)) for t, k in sequences])
    assert known["nll"] == pytest.approx(bayes_summary(one, sequences)["bayes"]["nll"], rel=1e-9)
    # κ = 0: the hints show a favourite that does not exist
    params = ProfileParams(2, 0.5, 0.0, 1.5, 0.3, 2.0, 0.2)
    rng = np.random.default_rng(3)
    drawn = [profile.simulate(params, rng, 60) for _ in range(4)]
    with_hints = [(t, k, profile.shown_hints(params, p, k, rng)) for t, k, p in drawn]
    reader = image_reader_scores(params, with_hints, (5,))
    plain = bayes_summary(params, [(t, k) for t, k, _ in with_hints], (5,))
    assert reader["bayes"]["nll"] == pytest.approx(plain["bayes"]["nll"], rel=1e-9)
    assert reader["value_of_history"][0]["history"] == 5
