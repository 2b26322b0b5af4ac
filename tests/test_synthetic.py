import io
import json

import numpy as np
import pytest
from PIL import Image

from mmtpp.events import read_info, read_sequences
from mmtpp.sources.synthetic import ZONES, SynthConfig, draw_map, generate, synthesize
from mmtpp.validation import validate_dataset

SMALL = {"num_sequences": 4, "min_events": 20, "max_events": 40}


def test_generation_is_seeded_and_order_independent():
    _, a = generate(SynthConfig(**SMALL, seed=1))
    _, b = generate(SynthConfig(**SMALL, seed=1))
    _, c = generate(SynthConfig(**SMALL, seed=2))
    a, b, c = list(a), list(b), list(c)
    assert all(
        np.array_equal(x.time, y.time) and x.text == y.text for x, y in zip(a, b, strict=True)
    )
    assert not np.array_equal(a[0].time, c[0].time)
    from mmtpp.sources.synthetic import generate_one

    assert np.array_equal(generate_one(SynthConfig(**SMALL, seed=1), 3).time, a[3].time)


def test_text_and_images_carry_the_zone():
    _, seqs = generate(SynthConfig(**SMALL))
    seq = next(seqs)
    assert any(any(z in t for z in ZONES) for t in seq.text)
    assert len(set(seq.text)) > len(seq) // 2  # real variety
    left, right = (np.asarray(Image.open(io.BytesIO(draw_map(z, 0, 56, np.random.default_rng(0)))))
                   for z in (3, 5))  # fmt: skip
    red = lambda im: np.argwhere((im[..., 0] > 200) & (im[..., 1] < 80))  # noqa: E731
    assert red(left)[:, 1].mean() < 28 < red(right)[:, 1].mean()  # marker moves with the zone
    image = Image.open(io.BytesIO(seq.image[0]))
    assert image.size == (56, 56)


@pytest.mark.parametrize("storage", ["bytes", "files"])
def test_synthesize_writes_a_valid_dataset_with_its_true_parameters(tmp_path, storage):
    count = synthesize(SynthConfig(**SMALL, image_storage=storage), tmp_path)
    assert count == 4
    info = read_info(tmp_path)
    assert info.type_names == ["traffic", "power", "water", "noise"]
    bayes = info.source["bayes_optimal"]
    assert bayes["accuracy_bayes"] > bayes["accuracy_majority"]
    assert json.loads(json.dumps(info.source["hawkes"]))["beta"] == 10.0
    report = validate_dataset(tmp_path)
    assert report.ok and report.sequences == 4
    seqs = read_sequences(tmp_path)
    if storage == "files":
        assert isinstance(seqs[0].image[0], str) and (tmp_path / seqs[0].image[0]).is_file()


def test_config_checks():
    with pytest.raises(ValueError, match="image_storage"):
        SynthConfig(image_storage="cloud")
    with pytest.raises(ValueError, match="min_events"):
        SynthConfig(min_events=10, max_events=5)
