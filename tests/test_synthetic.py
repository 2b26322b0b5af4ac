import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from test_city_alerts import marker_centre

from mmtpp import profile, regime, regime_filter
from mmtpp.events import iter_tables, read_info, table_to_sequences
from mmtpp.hawkes import HawkesParams
from mmtpp.oracle import ProfileOracle, RegimeOracle, oracle_from_source
from mmtpp.profile import ProfileParams
from mmtpp.quarantine import validate_dataset
from mmtpp.regime import RegimeParams
from mmtpp.sources.city_alerts import HINT_BACKGROUNDS, REGIME_BACKGROUNDS, TYPE_COLOURS, ZONES
from mmtpp.sources.synthetic import (
    HISTORY_LENGTHS,
    SynthConfig,
    generate,
    generate_one,
    sequence_profile,
    sequence_regimes,
    simulate_sequence,
    synthesize,
)
from mmtpp.sources.synthetic_processes import default_hawkes, default_profile, default_regime

SMALL = {"num_sequences": 4, "events_per_sequence": (20, 40)}


def same(a, b):
    return (
        a.seq_id == b.seq_id
        and np.array_equal(a.time, b.time)
        and np.array_equal(a.type, b.type)
        and a.text == b.text
        and a.image == b.image
    )


def test_generation_is_seeded_and_order_independent():
    _, a = generate(SynthConfig(**SMALL, seed=1))
    _, b = generate(SynthConfig(**SMALL, seed=1))
    _, c = generate(SynthConfig(**SMALL, seed=2))
    a, b, c = list(a), list(b), list(c)
    assert [s.seq_id for s in a] == ["seq-00000", "seq-00001", "seq-00002", "seq-00003"]
    assert all(same(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].time, c[0].time)
    assert same(generate_one(SynthConfig(**SMALL, seed=1), 3), a[3])
    # times and types do not depend on which modalities are rendered
    bare = generate_one(SynthConfig(**SMALL, seed=1, text=False, images=False), 3)
    assert np.array_equal(bare.time, a[3].time) and np.array_equal(bare.type, a[3].type)
    assert bare.text == [None] * len(bare) and not bare.has_images


def test_text_and_image_of_an_event_show_the_same_zone_and_type():
    seq = generate_one(SynthConfig(**SMALL, image_size=64), 0)
    assert len(set(seq.text)) > len(seq) // 2  # real variety
    for text, png, k in zip(seq.text, seq.image, seq.type, strict=True):
        assert 8 <= len(text.split()) <= 20
        named = [
            z
            for z in ZONES
            if f" {z} "
            in f" {text} ".replace("(", " ").replace(")", " ").replace(",", " ").replace(".", " ")
        ]
        x, y = marker_centre(png, TYPE_COLOURS[k])
        drawn = ZONES[int(y // (64 / 3)) * 3 + int(x // (64 / 3))]
        assert drawn in named


def test_zones_follow_the_home_zone_and_the_type():
    seq = generate_one(SynthConfig(num_sequences=1, events_per_sequence=(400, 400)), 0)
    zones = np.array(
        [next(i for i, z in enumerate(ZONES) if f"{z} " in t or f"({z})" in t) for t in seq.text]
    )
    shift = (zones - seq.type) % len(ZONES)
    assert np.bincount(shift).max() / len(seq) > 0.6  # one home zone dominates


@pytest.mark.parametrize("storage", ["bytes", "files"])
def test_synthesize_round_trips_through_parquet(tmp_path, storage):
    cfg = SynthConfig(**SMALL, image_storage=storage)
    calls = []
    assert synthesize(cfg, tmp_path, progress=lambda d, t: calls.append((d, t))) == 4
    assert calls[-1] == (4, 4)
    read = [s for _, table in iter_tables(tmp_path) for s in table_to_sequences(table)]
    _, expected = generate(cfg)
    for got, want in zip(read, expected, strict=True):
        assert got.seq_id == want.seq_id and got.text == want.text
        np.testing.assert_array_equal(got.time, want.time)
        np.testing.assert_array_equal(got.type, want.type)
        if storage == "files":
            assert got.image[1] == f"images/{got.seq_id}/1.png"
            got.image = [(tmp_path / ref).read_bytes() for ref in got.image]
        assert got.image == want.image
    report = validate_dataset(tmp_path)
    assert report.ok and report.sequences == 4

    info = read_info(tmp_path)
    assert info.type_names == ["traffic", "power", "water", "noise"]
    assert HawkesParams.from_dict(info.source["hawkes"]) == cfg.hawkes
    assert SynthConfig(**json.loads(json.dumps(info.source["generator"]))) == cfg
    bayes = info.source["bayes_optimal"]
    assert bayes["targets"] == sum(len(s) - 1 for s in read)
    assert bayes["bayes"]["accuracy"] > bayes["majority"]["accuracy"]
    assert bayes["bayes"]["nll"] < bayes["poisson"]["nll"]
    assert "regime_known" not in bayes and len(bayes["value_of_history"]) == 10


def test_config_checks():
    with pytest.raises(ValueError, match="image_storage"):
        SynthConfig(image_storage="cloud")
    with pytest.raises(ValueError, match="events_per_sequence"):
        SynthConfig(events_per_sequence=(10, 5))
    with pytest.raises(ValueError, match="num_types"):
        SynthConfig(num_types=3, hawkes=default_hawkes(4))
    with pytest.raises(ValueError, match="num_types"):
        SynthConfig(num_types=9)
    with pytest.raises(ValueError, match="spectral radius"):
        SynthConfig(num_types=1, hawkes={"mu": [0.1], "alpha": [[1.5]], "beta": 1.0})
    with pytest.raises(ValueError, match="image_size"):
        SynthConfig(image_size=8)
    cfg = SynthConfig(num_types=6, events_per_sequence=[5, 5])
    assert cfg.events_per_sequence == (5, 5) and cfg.hawkes == default_hawkes(6)
    assert len(generate_one(cfg, 0)) == 5


def test_hawkes_sequences_are_unchanged_by_the_regime_process():
    """Times, types and text of the default process, byte for byte as before 'regime' existed
    (a digest taken then); a new random stream or draw order would change it."""
    digest = hashlib.sha256()
    cfg = SynthConfig(num_sequences=3, events_per_sequence=(20, 40), seed=1)
    for i in range(3):
        seq = generate_one(cfg, i)
        digest.update(seq.time.tobytes())
        digest.update(np.asarray(seq.type, dtype=np.int64).tobytes())
        digest.update("\n".join(seq.text).encode())
    assert digest.hexdigest() == (
        "d573722411ce10b8b08d7a96ff291950eb6bff5445a17decccdb400f98ba6ac0"
    )


def background_regime(png: bytes) -> int:
    """The regime whose background colour (± tint) is nearest the image's commonest colour."""
    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    colours, counts = np.unique(im, axis=0, return_counts=True)
    land = colours[counts.argmax()]
    return int(np.argmin([np.abs(land - np.array(c)).sum() for c in REGIME_BACKGROUNDS]))


def test_regime_images_show_the_regime_with_noise_and_text_does_not():
    cfg = SynthConfig(process="regime", num_sequences=3, events_per_sequence=(300, 300), seed=2)
    shown_all, true_all = [], []
    for i in range(3):
        seq = generate_one(cfg, i)
        true, shown = sequence_regimes(cfg, i)
        times, _ = simulate_sequence(cfg, i)
        np.testing.assert_array_equal(seq.time, times)
        assert true.shape == shown.shape == (300,)
        assert [background_regime(png) for png in seq.image] == shown.tolist()
        for text, png, k in zip(seq.text, seq.image, seq.type, strict=True):
            x, y = marker_centre(png, TYPE_COLOURS[k])  # the marker still shows zone and type
            zone = ZONES[int(y // (56 / 3)) * 3 + int(x // (56 / 3))]
            assert zone in text and "regime" not in text
        shown_all.append(shown)
        true_all.append(true)
    wrong = np.mean(np.concatenate(shown_all) != np.concatenate(true_all))
    assert abs(wrong - cfg.regime_image_noise) < 0.05
    # the regimes are those of the process: same draws as the regime simulator
    rng = np.random.SeedSequence([2, 0]).spawn(1)[0]
    rng = np.random.default_rng(rng)
    rng.integers(300, 301)
    _, _, z = regime.simulate(cfg.process_params, rng, num_events=300)
    np.testing.assert_array_equal(z, true_all[0])
    with pytest.raises(ValueError, match="regime"):
        sequence_regimes(SynthConfig(num_sequences=1), 0)


def test_regime_dataset_records_its_process_oracle_and_value_of_history(tmp_path):
    cfg = SynthConfig(process="regime", num_sequences=3, events_per_sequence=(40, 60), seed=4)
    assert synthesize(cfg, tmp_path) == 3
    assert validate_dataset(tmp_path).ok
    info = read_info(tmp_path)
    assert info.name == "synthetic-city-alerts-regime" and "hawkes" not in info.source
    assert RegimeParams.from_dict(info.source["regime"]) == cfg.regime == default_regime(4)
    assert SynthConfig(**json.loads(json.dumps(info.source["generator"]))) == cfg
    oracle = oracle_from_source(info.source)
    assert isinstance(oracle, RegimeOracle)
    bayes = info.source["bayes_optimal"]
    curve = bayes["value_of_history"]
    assert [r["history"] for r in curve] == list(HISTORY_LENGTHS)
    assert curve[-1]["nll"] == pytest.approx(bayes["bayes"]["nll"], rel=1e-9)  # 256 ≥ every i
    assert curve[0]["nll"] > bayes["bayes"]["nll"]
    assert set(bayes["regime_known"]) == set(curve[0]) - {"history"}
    seqs = [s for _, t in iter_tables(tmp_path) for s in table_to_sequences(t)]
    b = oracle.predictions(seqs[0].time, seqs[0].type)
    assert b.nll.shape == (len(seqs[0]) - 1,)


def test_default_regime_process_rewards_long_history_and_compresses():
    cfg = SynthConfig(process="regime", num_sequences=40, seed=3)
    oracle = cfg.oracle
    acc = {None: [], 14: []}
    known, compressible = [], []
    for i in range(cfg.num_sequences):
        times, types = simulate_sequence(cfg, i)
        true, _ = sequence_regimes(cfg, i)
        preds = oracle.predictions_for_histories(times, types, (None, 14))
        for h, b in zip((None, 14), preds, strict=True):
            acc[h].append(b.most_probable_type == types[1:])
        known.append(regime_filter.known_regime_predictions(cfg.regime, times, types, true).nll)
        gaps = np.diff(times)
        compressible.append(np.abs(np.diff(gaps)) < 0.2)
    full, short = np.mean(np.concatenate(acc[None])), np.mean(np.concatenate(acc[14]))
    assert full > short + 0.015  # events beyond the last 14 carry the regime
    assert np.mean(np.concatenate(compressible)) > 0.6  # bursts of near-equal gaps
    assert cfg.regime.num_regimes == 4 and np.allclose(
        cfg.regime.mean_dwell_events(), 500, rtol=1e-3
    )
    assert np.mean(np.concatenate(known)) < np.mean(
        np.concatenate([oracle.predictions(*simulate_sequence(cfg, i)).nll for i in range(40)])
    )


def test_process_config_checks():
    with pytest.raises(ValueError, match="process"):
        SynthConfig(process="poisson")
    with pytest.raises(ValueError, match="hawkes parameters"):
        SynthConfig(process="regime", hawkes=default_hawkes())
    with pytest.raises(ValueError, match="regime parameters"):
        SynthConfig(regime=default_regime())
    with pytest.raises(ValueError, match="num_types"):
        SynthConfig(process="regime", num_types=3, regime=default_regime(4))
    with pytest.raises(ValueError, match="regime_image_noise"):
        SynthConfig(process="regime", regime_image_noise=1.5)
    many = default_regime().to_dict()
    switch = regime.uniform_switching([0.01] * 7)
    many.update(mu=[0.5] * 7, mix=[many["mix"][0]] * 7, switch=switch)
    with pytest.raises(ValueError, match="at most 6 regimes"):
        SynthConfig(process="regime", regime=many)
    cfg = SynthConfig(process="regime", regime=default_regime().to_dict())
    assert cfg.regime == default_regime() and cfg.events_per_sequence == (150, 400)
    with pytest.raises(ValueError, match="process_params"):
        _ = cfg.params


def test_profile_images_hint_the_favourite_next_type_and_text_does_not():
    cfg = SynthConfig(process="profile", num_sequences=3, events_per_sequence=(300, 300), seed=2)
    right = []
    for i in range(3):
        seq = generate_one(cfg, i)
        drawn, shown = sequence_profile(cfg, i)
        times, types = simulate_sequence(cfg, i)
        np.testing.assert_array_equal(seq.time, times)
        np.testing.assert_array_equal(seq.type, types)
        backgrounds = [HINT_BACKGROUNDS.index(background_regime(png)) for png in seq.image]
        assert backgrounds == shown.tolist()
        for text, png, k in zip(seq.text, seq.image, seq.type, strict=True):
            x, y = marker_centre(png, TYPE_COLOURS[k])  # the marker still shows zone and type
            zone = ZONES[int(y // (56 / 3)) * 3 + int(x // (56 / 3))]
            assert zone in text
        right.append(shown == drawn.favourites[types])
    assert abs(1 - np.mean(np.concatenate(right)) - cfg.profile.image_noise) < 0.03
    # the draws are the profile simulator's, from the process stream after the count
    rng = np.random.default_rng(np.random.SeedSequence([2, 0]).spawn(1)[0])
    rng.integers(300, 301)
    times, types, drawn = profile.simulate(cfg.profile, rng, 300)
    np.testing.assert_array_equal(times, simulate_sequence(cfg, 0)[0])
    np.testing.assert_array_equal(drawn.transitions, sequence_profile(cfg, 0)[0].transitions)
    with pytest.raises(ValueError, match="profile"):
        sequence_profile(SynthConfig(num_sequences=1), 0)


def test_profile_dataset_records_its_priors_oracle_and_what_images_add(tmp_path):
    cfg = SynthConfig(process="profile", num_sequences=3, events_per_sequence=(40, 60), seed=4)
    assert synthesize(cfg, tmp_path) == 3
    assert validate_dataset(tmp_path).ok
    info = read_info(tmp_path)
    assert info.name == "synthetic-city-alerts-profile" and "hawkes" not in info.source
    assert info.type_names == ["traffic", "power", "water", "noise", "fire", "medical"]
    assert ProfileParams.from_dict(info.source["profile"]) == cfg.profile == default_profile()
    assert SynthConfig(**json.loads(json.dumps(info.source["generator"]))) == cfg
    assert len(info.source["hint_backgrounds"]) == 6
    oracle = oracle_from_source(info.source)
    assert isinstance(oracle, ProfileOracle)
    bayes = info.source["bayes_optimal"]
    curve = bayes["value_of_history"]
    assert [r["history"] for r in curve] == list(HISTORY_LENGTHS)
    assert curve[-1]["nll"] == pytest.approx(bayes["bayes"]["nll"], rel=1e-12)
    assert curve[0]["accuracy"] < bayes["bayes"]["accuracy"]
    reader = bayes["image_reader"]
    assert reader["bayes"]["nll_time"] == pytest.approx(bayes["bayes"]["nll_time"], rel=1e-12)
    assert reader["bayes"]["nll_type"] < bayes["bayes"]["nll_type"]
    assert [r["history"] for r in reader["value_of_history"]] == list(HISTORY_LENGTHS)
    assert reader["value_of_history"][0]["nll_type"] < curve[0]["nll_type"]
    seqs = [s for _, t in iter_tables(tmp_path) for s in table_to_sequences(t)]
    assert bayes["targets"] == sum(len(s) - 1 for s in seqs)
    b = oracle.predictions(seqs[0].time, seqs[0].type)
    assert b.nll.shape == (len(seqs[0]) - 1,)


def test_default_profile_process_rewards_long_history_and_compresses():
    cfg = SynthConfig(process="profile", num_sequences=60, seed=3)
    oracle = cfg.oracle
    scores = {None: [], 14: []}
    compressible, relative = [], []
    for i in range(cfg.num_sequences):
        times, types = simulate_sequence(cfg, i)
        preds = oracle.predictions_for_histories(times, types, (None, 14))
        for h, b in zip((None, 14), preds, strict=True):
            scores[h].append(np.c_[b.most_probable_type == types[1:], b.nll_time])
        gaps = np.diff(times)
        compressible.append(np.abs(np.diff(gaps)) < 0.2)
        relative.append(np.abs(np.diff(np.log(gaps))) < 0.2)
    full, short = (np.concatenate(scores[h]).mean(axis=0) for h in (None, 14))
    assert full[0] > short[0] + 0.06  # accuracy: events beyond the last 14 teach the rows
    assert full[1] < short[1] - 0.1  # time NLL: and the rates
    assert np.mean(np.concatenate(compressible)) > 0.5  # runs of short, near-equal gaps
    assert np.mean(np.concatenate(relative)) > 0.1


def test_profile_config_checks():
    cfg = SynthConfig(process="profile")
    assert cfg.num_types == 6 and cfg.profile == default_profile(6)
    assert cfg.events_per_sequence == (150, 400)
    assert SynthConfig().num_types == 4 and SynthConfig(process="regime").num_types == 4
    four = SynthConfig(process="profile", num_types=4, profile=default_profile(4).to_dict())
    assert four.profile == default_profile(4)
    with pytest.raises(ValueError, match="num_types"):
        SynthConfig(process="profile", profile=default_profile(4))  # 6 types by default
    with pytest.raises(ValueError, match="num_types >= 2"):
        SynthConfig(process="profile", num_types=1)
    with pytest.raises(ValueError, match="profile parameters"):
        SynthConfig(profile=default_profile())
    with pytest.raises(ValueError, match="hawkes parameters"):
        SynthConfig(process="profile", hawkes=default_hawkes())
    with pytest.raises(ValueError, match="rate_shape"):
        SynthConfig(process="profile", profile={**default_profile().to_dict(), "rate_shape": 1})
    with pytest.raises(ValueError, match="process_params"):
        _ = cfg.params
