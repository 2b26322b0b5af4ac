import io

import numpy as np
import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from mmtpp.images import ImageError, ImageSpec, image_size, load_image, resolve_path


def png(width, height) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("width", "height"), [(56, 56), (64, 48), (200, 30), (300, 300), (20, 20)])
def test_token_count_matches_the_qwen_processor(width, height):
    spec = ImageSpec()
    processor = Qwen2VLImageProcessorPil(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    image = Image.new("RGB", (width, height))
    grid = processor(images=[image], return_tensors="np")["image_grid_thw"][0]
    assert tuple(int(g) for g in grid) == spec.grid_thw(height, width)
    assert spec.token_count(height, width) == int(np.prod(grid)) // 4


def test_image_size_reads_header_and_load_decodes(tmp_path):
    spec = ImageSpec()
    data = png(40, 30)
    assert image_size(data, None, spec) == (30, 40)
    assert load_image(data, None, spec).size == (40, 30)
    (tmp_path / "a.png").write_bytes(data)
    assert load_image("a.png", tmp_path, spec).mode == "RGB"


@pytest.mark.parametrize("ref", ["/etc/passwd", "../x.png", "a/../../x.png"])
def test_paths_may_not_escape_the_root(tmp_path, ref):
    with pytest.raises(ImageError) as err:
        resolve_path(ref, tmp_path)
    assert err.value.reason == "path_escapes_root"


def test_symlink_out_of_root_is_refused(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(png(8, 8))
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.png").symlink_to(outside)
    with pytest.raises(ImageError, match="outside"):
        resolve_path("link.png", root)


def test_path_without_root_is_refused():
    with pytest.raises(ImageError) as err:
        load_image("a.png", None, ImageSpec())
    assert err.value.reason == "path_not_allowed"


def test_refusals():
    spec = ImageSpec(max_bytes=10_000, max_source_pixels=100 * 100)
    for data, reason in [
        (b"", "undecodable"),
        (b"\x89PNG garbage", "undecodable"),
        (png(101, 100), "oversize"),
        (b"x" * 10_001, "oversize"),
        (png(10, 2100), "oversize"),
    ]:
        with pytest.raises(ImageError) as err:
            load_image(data, None, spec)
        assert err.value.reason == reason
    with pytest.raises(ImageError) as err:
        load_image(png(1, 201), None, ImageSpec())
    assert err.value.reason == "bad_aspect"


def test_spec_checks():
    with pytest.raises(ValueError, match="min_pixels"):
        ImageSpec(min_pixels=10)
    with pytest.raises(ValueError, match="max_pixels"):
        ImageSpec(max_pixels=56 * 56 - 1)


def test_qwen_resize_is_the_processors_rule():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    from mmtpp.images import qwen_resize

    bounds = [(56 * 56, 14 * 14 * 4 * 1280), (56 * 56, 112 * 112), (28 * 28, 28 * 28 * 4)]
    for lo, hi in bounds:
        for h in [*range(1, 120, 7), 200, 333, 1000, 2049]:
            for w in [*range(1, 120, 11), 201, 640, 3001]:
                if max(h, w) / min(h, w) > 200:
                    continue
                assert qwen_resize(h, w, 28, lo, hi) == smart_resize(h, w, 28, lo, hi), (h, w)
