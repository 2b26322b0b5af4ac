import numpy as np

from mmtpp.compression import gaps_from_times
from mmtpp.compression_stats import compression_stats
from mmtpp.hawkes import bayes_predictions, simulate
from mmtpp.sources.city_alerts import HINT_BACKGROUNDS, REGIME_BACKGROUNDS
from mmtpp.sources.synthetic_processes import (
    dataset_record,
    default_hawkes,
    default_profile,
    default_regime,
)


def test_default_process_is_bursty_predictable_and_compressible():
    p = default_hawkes()
    times, types = simulate(p, np.random.default_rng(5), num_events=20_000)
    b = bayes_predictions(p, times, types)
    accuracy = np.mean(b.most_probable_type == types[1:])
    majority = np.bincount(types).max() / types.size
    assert 0.5 < accuracy < 0.75 and majority < 0.4 and accuracy > majority + 0.2
    gaps = np.diff(times)
    assert np.mean(np.abs(np.diff(gaps)) < 0.2) > 0.6  # most neighbouring gaps nearly equal
    # events per 4096 tokens at ~30 tokens/event, long sequences so nothing fits whole
    seqs = [simulate(p, np.random.default_rng(i), num_events=2000)[0] for i in range(10)]
    fit = {
        delta: compression_stats(
            ((gaps_from_times(t), np.full(t.size, 30)) for t in seqs), delta, 4096
        )
        for delta in (0.0, 0.2)
    }
    assert fit[0.2].capped_sequences == 0
    assert fit[0.2].events_per_budget >= 2.5 * fit[0.0].events_per_budget


def test_each_process_records_its_parameters_and_image_colours():
    name, description, source = dataset_record(default_hawkes(), 0.15)
    assert name == "synthetic-city-alerts" and list(source) == ["hawkes"]
    name, description, source = dataset_record(default_regime(), 0.15)
    assert name == "synthetic-city-alerts-regime" and "15%" in description
    assert source["regime"] == default_regime().to_dict()
    assert source["regime_backgrounds"] == [list(c) for c in REGIME_BACKGROUNDS[:4]]
    params = default_profile(6)
    name, description, source = dataset_record(params, 0.5)  # the profile's own noise counts
    assert name == "synthetic-city-alerts-profile" and "15%" in description
    assert source["hint_backgrounds"][0] == list(REGIME_BACKGROUNDS[HINT_BACKGROUNDS[0]])
    assert len(source["hint_backgrounds"]) == 6 and source["profile"] == params.to_dict()
