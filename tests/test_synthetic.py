import io
import json

import numpy as np
import pytest
from PIL import Image

from mmtpp.compression import compression_stats, gaps_from_times
from mmtpp.events import iter_tables, read_info, table_to_sequences
from mmtpp.hawkes import HawkesParams, bayes_predictions, simulate
from mmtpp.sources.synthetic import (
    TYPE_COLOURS,
    ZONES,
    SynthConfig,
    default_hawkes,
    draw_map,
    generate,
    generate_one,
    synthesize,
)
from mmtpp.validation import validate_dataset

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


def marker_centre(png: bytes, colour) -> np.ndarray:
    """(x, y) centroid of the pixels close to the marker colour."""
    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    hits = np.argwhere(np.abs(im - np.array(colour)).sum(axis=2) < 60)
    assert hits.size, "no marker pixels"
    return hits.mean(axis=0)[::-1]


@pytest.mark.parametrize("size", [56, 90])
def test_images_decode_and_the_marker_sits_in_the_zone(size):
    for zone in range(len(ZONES)):
        for type_id in range(4):
            png = draw_map(zone, type_id, size, (1, -1))
            image = Image.open(io.BytesIO(png))
            assert image.size == (size, size) and len(png) < 1000
            x, y = marker_centre(png, TYPE_COLOURS[type_id])
            assert int(x // (size / 3)) == zone % 3 and int(y // (size / 3)) == zone // 3


def test_text_and_image_of_an_event_show_the_same_zone_and_type():
    seq = generate_one(SynthConfig(**SMALL, image_size=64), 0)
    assert len(set(seq.text)) > len(seq) // 2  # real variety
    for text, png, k in zip(seq.text, seq.image, seq.type, strict=True):
        assert 8 <= len(text.split()) <= 20
        named = [z for z in ZONES if f" {z} " in f" {text} ".replace("(", " ").replace(")", " ")
                 .replace(",", " ").replace(".", " ")]  # fmt: skip
        x, y = marker_centre(png, TYPE_COLOURS[k])
        drawn = ZONES[int(y // (64 / 3)) * 3 + int(x // (64 / 3))]
        assert drawn in named


def test_zones_follow_the_home_zone_and_the_type():
    seq = generate_one(SynthConfig(num_sequences=1, events_per_sequence=(400, 400)), 0)
    zones = np.array([next(i for i, z in enumerate(ZONES) if f"{z} " in t or f"({z})" in t)
                      for t in seq.text])  # fmt: skip
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
