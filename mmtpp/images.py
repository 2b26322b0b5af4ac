"""Event images: safe loading, and their token cost exactly as Qwen2.5-VL counts it.

Qwen2.5-VL resizes an image so both sides are multiples of ``patch_size * merge_size`` (28)
and its pixel count lies in ``[min_pixels, max_pixels]`` (``qwen_resize``),
cuts it into 14×14 patches and merges 2×2 patches into one ``<|image_pad|>`` token. The token
cost of an image therefore depends only on its size, which Pillow reads from the header
without decoding the pixels.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image

from mmtpp.events import ImageRef

# Pillow raises DecompressionBombError above twice this many pixels and warns above it; we
# turn the warning into an error too (see ``open_image``).
Image.MAX_IMAGE_PIXELS = 64_000_000


def qwen_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Qwen2.5-VL's target size: each side rounded to a multiple of ``factor``, then both
    scaled by one ratio (down to a multiple, or up to one) into ``[min_pixels, max_pixels]``.

    The same rule as the processor's (a test checks them equal over many sizes); written here
    so that data preparation does not import transformers.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio {height}x{width} is above 200")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    return h, w


class ImageError(ValueError):
    """An image reference that cannot be used; ``reason`` is a short machine-readable key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageSpec:
    """How images are sized for the model, and which images are refused.

    ``min_pixels``/``max_pixels`` bound the resized image (Qwen2.5-VL's processor arguments);
    the defaults keep an event image at 4–16 tokens. ``max_bytes`` and ``max_source_pixels``
    refuse oversize inputs before they are decoded.
    """

    min_pixels: int = 56 * 56
    max_pixels: int = 112 * 112
    patch_size: int = 14
    merge_size: int = 2
    max_bytes: int = 8 * 1024 * 1024
    max_source_pixels: int = 16_000_000

    def __post_init__(self) -> None:
        factor = self.patch_size * self.merge_size
        if self.min_pixels < factor * factor:
            raise ValueError(f"min_pixels must be >= {factor * factor}, got {self.min_pixels}")
        if self.max_pixels < self.min_pixels:
            raise ValueError("max_pixels must be >= min_pixels")

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after Qwen2.5-VL's resize."""
        return qwen_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def token_count(self, height: int, width: int) -> int:
        """Number of ``<|image_pad|>`` tokens for an image of this size."""
        h, w = self.resized(height, width)
        return (h // self.patch_size) * (w // self.patch_size) // (self.merge_size**2)

    def grid_thw(self, height: int, width: int) -> tuple[int, int, int]:
        """``image_grid_thw`` row the processor produces for one image (t=1)."""
        h, w = self.resized(height, width)
        return (1, h // self.patch_size, w // self.patch_size)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def resolve_path(ref: str, root: str | Path | None, trusted_root: str | Path | None = None) -> Path:
    """An image path → the real path of the file it names; refuses paths that escape.

    The rule, the same for importers, validation, preparation and Serve:

    - a ``..`` component is refused always (even when it would land inside a root);
    - a relative path is joined to ``root`` (to ``trusted_root`` when ``root`` is None);
    - an absolute path is refused unless a ``trusted_root`` is given;
    - the real path (every symlink followed) must lie under the real path of ``root`` (relative
      paths only) or of ``trusted_root``. So a symlink, or a symlinked folder, may point
      anywhere under the trusted root, and nowhere else.

    Without ``trusted_root`` this is the strict rule: relative paths that stay under ``root``.
    """
    base = root if root is not None else trusted_root
    if base is None:
        raise ImageError("path_not_allowed", f"image path {ref!r} given but no image root is set")
    given = Path(ref)
    if ".." in given.parts:
        raise ImageError("path_escapes_root", f"image path {ref!r} must not contain '..'")
    if given.is_absolute() and trusted_root is None:
        raise ImageError(
            "path_escapes_root",
            f"image path {ref!r} must be relative (absolute paths need a trusted image_root)",
        )
    try:
        # strict=False: a missing file resolves too, and is reported as missing by the caller
        folders = [Path(base).resolve()] if not given.is_absolute() else []
        if trusted_root is not None:
            folders.append(Path(trusted_root).resolve())
        path = (Path(base) / given).resolve()  # an absolute ``given`` replaces ``base``
    except (OSError, RuntimeError, ValueError) as err:  # symlink loop, NUL byte
        raise ImageError("bad_path", f"image path {ref!r} cannot be resolved: {err}") from err
    if not any(_inside(path, folder) for folder in folders):
        allowed = " or ".join(str(f) for f in dict.fromkeys(folders))
        hint = "" if trusted_root is not None else " (name a trusted image_root to allow it)"
        raise ImageError(
            "path_escapes_root", f"image path {ref!r} resolves outside {allowed}{hint}"
        )
    return path


def as_trusted_root(image_root: str | Path | None) -> Path | None:
    """A trusted image root as a user gives it: None, or a folder that exists."""
    if image_root is None:
        return None
    root = Path(str(image_root))
    if not root.is_dir():
        raise ValueError(f"image_root {str(image_root)!r}: no such folder")
    return root


def read_bytes(
    ref: ImageRef,
    root: str | Path | None,
    spec: ImageSpec,
    trusted_root: str | Path | None = None,
) -> bytes:
    """The encoded bytes of an image reference, size-checked (paths: see ``resolve_path``)."""
    if isinstance(ref, bytes | bytearray | memoryview):
        data = bytes(ref)
    else:
        path = resolve_path(str(ref), root, trusted_root)
        if not path.is_file():
            where = root if root is not None else trusted_root
            raise ImageError("missing", f"image file {ref!r} not found under {where}")
        size = path.stat().st_size
        if size > spec.max_bytes:
            raise ImageError("oversize", f"image {ref!r}: {size} bytes > {spec.max_bytes}")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageError("unreadable", f"image file {ref!r} cannot be read: {err}") from err
    if len(data) > spec.max_bytes:
        raise ImageError("oversize", f"image of {len(data)} bytes > max_bytes {spec.max_bytes}")
    if not data:
        raise ImageError("undecodable", "image is empty (0 bytes)")
    return data


def open_image(data: bytes, spec: ImageSpec, decode: bool = True) -> Image.Image:
    """Open encoded bytes with Pillow; checks the pixel count before decoding.

    With ``decode=False`` only the header is read (enough for the size and token count).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > spec.max_source_pixels:
                raise ImageError(
                    "oversize",
                    f"image of {width}x{height} pixels > max_source_pixels "
                    f"{spec.max_source_pixels}",
                )
            if decode:
                image.load()
                image = image.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError("oversize", f"image refused as a decompression bomb: {err}") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError("undecodable", f"image cannot be decoded: {err}") from err
    if max(width, height) / max(min(width, height), 1) > 200:
        raise ImageError("bad_aspect", f"image of {width}x{height}: aspect ratio above 200")
    return image


def load_image(
    ref: ImageRef,
    root: str | Path | None,
    spec: ImageSpec,
    trusted_root: str | Path | None = None,
) -> Image.Image:
    """An image reference → a decoded RGB Pillow image (raises ImageError)."""
    return open_image(read_bytes(ref, root, spec, trusted_root), spec, decode=True)


def image_size(
    ref: ImageRef,
    root: str | Path | None,
    spec: ImageSpec,
    trusted_root: str | Path | None = None,
) -> tuple[int, int]:
    """(height, width) of an image reference, from its header only."""
    image = open_image(read_bytes(ref, root, spec, trusted_root), spec, decode=False)
    width, height = image.size
    return height, width


def image_token_counter(
    root: str | Path | None, spec: ImageSpec, trusted_root: str | Path | None = None
) -> Callable[[ImageRef], int]:
    """A function image ref → its ``<|image_pad|>`` count; sizes are read from the image
    headers (no decoding) and counts cached per size."""

    @lru_cache(maxsize=65536)
    def by_size(height: int, width: int) -> int:
        return spec.token_count(height, width)

    def count(ref: ImageRef) -> int:
        return by_size(*image_size(ref, root, spec, trusted_root))

    return count
