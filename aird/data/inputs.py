"""Images as users hand them over: file paths, encoded bytes, PIL images or uint8 arrays.

Every kind becomes one (H, W, 3) uint8 RGB array, or a ``DataError`` that names the input and says what
to do, through ``aird.data.images``: the same mode conversion (16-bit scaled, alpha over white, CMYK,
palette and 1-bit converted, undefined modes refused), the same pixel budget (``AIRD_MAX_IMAGE_PIXELS``,
checked from the header before decoding) and the same minimum side (``MIN_SIDE`` px) as the datasets.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from aird.data.images import MIN_SIDE, check_min_side, check_pixel_budget, decode_rgb, load_rgb, to_rgb
from aird.errors import DataError

__all__ = ["MIN_SIDE", "ImageInput", "describe", "expand_paths", "read_image"]

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


def describe(image: object, index: int | None = None) -> str:
    """How messages and results name an input: its path, or its kind and position in the call."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    kind = {bytes: "bytes", bytearray: "bytes", memoryview: "bytes", np.ndarray: "array"}.get(type(image))
    if kind is None:
        kind = "PIL image" if isinstance(image, Image.Image) else type(image).__name__
    return f"<{kind}>" if index is None else f"<{kind} #{index}>"


def read_image(image: ImageInput, source: str | None = None) -> np.ndarray:
    """Any supported input as an (H, W, 3) uint8 RGB array; ``DataError`` naming ``source`` otherwise."""
    source = source or describe(image)
    if isinstance(image, (str, os.PathLike)):
        return load_rgb(Path(image), source)
    if isinstance(image, np.ndarray):
        rgb = to_rgb(_array_image(image, source), source)
    elif isinstance(image, Image.Image):
        rgb = to_rgb(image, source)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise DataError("image is empty (0 bytes)", source, "send the file's contents")
        rgb = decode_rgb(io.BytesIO(data), source)
    else:
        raise DataError(
            f"cannot read an image from a {type(image).__name__}",
            source,
            "pass a file path, encoded bytes, a PIL image or a uint8 array (H, W), (H, W, 3) or (H, W, 4)",
        )
    return check_min_side(rgb, source)


def _array_image(arr: np.ndarray, source: str) -> Image.Image:
    """A uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array as the L, RGB or RGBA image it holds."""
    if arr.dtype != np.uint8:
        raise DataError(
            f"expected uint8 pixels 0..255, got {arr.dtype}", source, "scale the array to 0..255 and cast to uint8"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DataError(
            f"expected an (H, W), (H, W, 3) RGB or (H, W, 4) RGBA array, got shape {arr.shape}",
            source,
            "pass one image at a time, channels last",
        )
    check_pixel_budget(arr.shape[1], arr.shape[0], source)  # before Pillow copies it
    mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(arr), mode)


def expand_paths(items: "list[str | Path]", recursive: bool = True) -> list[Path]:
    """Files named directly, plus every non-hidden file inside named folders (sorted, "2" before "10").

    Files are not filtered by suffix: one that is not an image fails when read, and the caller reports it.
    """
    from aird.data.folders import natural_key

    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            files = [
                f for f in found if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
            ]
            out.extend(
                sorted(files, key=lambda f: tuple(natural_key(Path(part)) for part in f.relative_to(path).parts))
            )
        else:
            out.append(path)  # a missing file is reported when read
    return out
