import io

import numpy as np
import pytest
from PIL import Image

from mmtpp.sources.city_alerts import (
    REGIME_BACKGROUNDS,
    TINTS,
    TYPE_COLOURS,
    ZONES,
    draw_map,
    land_colour,
)


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


def test_every_tinted_land_colour_names_its_own_background():
    """A tint moves a colour by at most 18 (L1), backgrounds are >= 50 apart: the nearest
    background of an image's land colour is the one it was drawn from."""
    for regime_id in range(len(REGIME_BACKGROUNDS)):
        for tint in range(len(TINTS)):
            colour = np.array(land_colour(regime_id, tint))
            dist = [int(np.abs(colour - np.array(c)).sum()) for c in REGIME_BACKGROUNDS]
            assert int(np.argmin(dist)) == regime_id and dist[regime_id] <= 18
