"""Images as users hand them over: file paths, encoded bytes, PIL images or uint8 arrays.

Every kind becomes one (H, W, 3) uint8 RGB array through one decoder, or a ``DataError`` that names
the input and says what to do. Nothing is guessed silently: 16-bit images are scaled to 8 bits (not
clipped to white), transparent pixels are composited over white (not dropped), CMYK is converted, a
mode that cannot be converted faithfully is refused, and an image whose header promises more pixels
than ``MAX_PIXELS`` is refused before it is decoded (a decompression bomb costs nothing).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from aird.data.images import IMAGE_SUFFIXES
from aird.errors import DataError

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

# 32 megapixels: a 24 MP camera photo passes; a 20000 x 20000 image (400 MP, 1.2 GB decoded) is refused.
MAX_PIXELS = 32_000_000
MIN_SIDE = 8  # the smallest face the students were trained on (8 px)
# Transparent pixels are shown over white, as an image viewer shows them.
ALPHA_BACKGROUND = 255


def describe(image: object, index: int | None = None) -> str:
    """How messages and results name an input: its path, or its kind and position in the call."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    kind = {bytes: "bytes", bytearray: "bytes", memoryview: "bytes", np.ndarray: "array"}.get(type(image))
    if kind is None:
        kind = "PIL image" if isinstance(image, Image.Image) else type(image).__name__
    return f"<{kind}>" if index is None else f"<{kind} #{index}>"


def read_image(image: ImageInput, source: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any supported input as an (H, W, 3) uint8 RGB array; ``DataError`` naming ``source`` otherwise."""
    source = source or describe(image)
    if isinstance(image, np.ndarray):
        rgb = _array_to_rgb(image, source, max_pixels)
    elif isinstance(image, Image.Image):
        rgb = _pil_to_rgb(image, source, max_pixels)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise DataError("image is empty (0 bytes)", source, "send the file's contents")
        rgb = _decode(io.BytesIO(data), source, max_pixels)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.is_dir():
            raise DataError("is a folder, not an image", path, "pass its image files (the CLI takes folders)")
        if not path.is_file():
            raise DataError("image file not found", path, "check the path")
        if path.stat().st_size == 0:
            raise DataError("image file is empty (0 bytes)", path, "re-download or delete the file")
        rgb = _decode(path, source, max_pixels)
    else:
        raise DataError(
            f"cannot read an image from a {type(image).__name__}",
            source,
            "pass a file path, encoded bytes, a PIL image or a uint8 array (H, W), (H, W, 3) or (H, W, 4)",
        )
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise DataError(
            f"image too small to hold a face ({rgb.shape[1]}x{rgb.shape[0]} px; at least {MIN_SIDE} px a side)",
            source,
        )
    return rgb


def _check_pixels(width: int, height: int, source: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DataError(
            f"image too large ({width}x{height} = {width * height / 1e6:.0f} MP; the limit is "
            f"{max_pixels / 1e6:.0f} MP)",
            source,
            "downscale it or crop the faces first",
        )


def _decode(fp, source: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below decides; Pillow's bomb warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                _check_pixels(img.width, img.height, source, max_pixels)  # from the header, before decoding
                img.load()  # decode fully now so truncated files fail here, not later
                return _pil_to_rgb(img, source, max_pixels)
    except Image.DecompressionBombError:
        raise DataError("image too large (a decompression bomb?)", source, "downscale it first") from None
    except UnidentifiedImageError:
        raise DataError(
            "not a readable image (unknown format)", source, f"use one of {', '.join(IMAGE_SUFFIXES)}"
        ) from None
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"corrupt or truncated image ({exc})", source, "re-download or delete the file") from None


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    return np.round(rgb.astype(np.float32) * a + ALPHA_BACKGROUND * (1.0 - a)).astype(np.uint8)


def _pil_to_rgb(img: Image.Image, source: str, max_pixels: int) -> np.ndarray:
    _check_pixels(img.width, img.height, source, max_pixels)
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey (PNG, TIFF): scale the full range to 8 bits instead of clipping at 255.
        grey = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.round(grey / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        raise DataError("floating-point image (mode F) has no fixed grey range", source, "save it as 8-bit")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    elif mode == "L" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        arr = np.asarray(img, dtype=np.uint8)
        return _composite(arr[..., :3], arr[..., 3])
    try:
        rgb = img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise DataError(f"image mode {mode} cannot be converted to RGB ({exc})", source, "save it as RGB") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def _array_to_rgb(arr: np.ndarray, source: str, max_pixels: int) -> np.ndarray:
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
    _check_pixels(arr.shape[1], arr.shape[0], source, max_pixels)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        return _composite(arr[..., :3], arr[..., 3])
    return np.ascontiguousarray(arr)


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
