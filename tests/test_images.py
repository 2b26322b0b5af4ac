import io
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from mmtpp.images import (
    ImageError,
    ImageSpec,
    image_size,
    load_image,
    read_bytes,
    resolve_path,
)


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


@pytest.fixture
def mounted(tmp_path):
    """A project whose images/ is a symlink to a store elsewhere, as clusters mount them; the
    store holds a symlink leading out of it."""
    store, project = tmp_path / "store", tmp_path / "project"
    store.mkdir()
    project.mkdir()
    (store / "a.png").write_bytes(png(8, 8))
    (tmp_path / "secret.png").write_bytes(png(9, 9))
    (store / "out.png").symlink_to(tmp_path / "secret.png")
    (project / "images").symlink_to(store, target_is_directory=True)
    return project, store


def test_a_trusted_root_admits_symlinked_folders_and_absolute_paths_under_it(mounted):
    project, store = mounted
    with pytest.raises(ImageError, match="resolves outside"):
        resolve_path("images/a.png", project)
    with pytest.raises(ImageError, match="must be relative"):
        resolve_path(str(store / "a.png"), project)
    real = (store / "a.png").resolve()
    for trusted in (store, project / "images"):  # the store, or the link that mounts it
        assert resolve_path("images/a.png", project, trusted) == real
        assert resolve_path(str(store / "a.png"), project, trusted) == real
        assert resolve_path("a.png", None, trusted) == real  # no base: relative to the root
    assert read_bytes("images/a.png", project, ImageSpec(), store) == png(8, 8)


@pytest.mark.parametrize(
    "ref", ["images/out.png", "images/../images/a.png", "../store/a.png", "{tmp}/secret.png"]
)
def test_a_trusted_root_still_refuses_traversal_and_escaping_symlinks(mounted, tmp_path, ref):
    project, store = mounted
    with pytest.raises(ImageError) as err:
        resolve_path(ref.format(tmp=tmp_path), project, store)
    assert err.value.reason == "path_escapes_root"


@given(
    st.lists(st.sampled_from(["a", "b.png", "..", ".", "c"]), min_size=1, max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_dot_dot_is_always_refused_and_accepted_paths_stay_inside(
    tmp_path_factory, parts, absolute, trust
):
    """The rule: no '..' component, whatever the roots; an accepted path lies under a root."""
    root = tmp_path_factory.getbasetemp() / "dot_dot_root"  # shared: nothing is written in it
    root.mkdir(exist_ok=True)
    ref = os.path.join(str(root) if absolute else "", *parts)
    trusted = root if trust else None
    if ".." in parts or (absolute and not trust):
        with pytest.raises(ImageError) as err:
            resolve_path(ref, root, trusted)
        assert err.value.reason == "path_escapes_root"
    else:
        path = resolve_path(ref, root, trusted)
        assert path == root.resolve() or root.resolve() in path.parents


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
