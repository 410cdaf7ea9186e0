"""Reading face images: every mode Pillow opens becomes correct 8-bit RGB, or a clear error naming the file.

- 16-bit and other integer grayscale (``I;16``, ``I``: 16-bit PNG, PGM, TIFF) is scaled from 0..65535 to
  0..255, never clipped; 32-bit float images are refused (their value range is undefined).
- Transparency (``RGBA``, ``LA``, ``PA``, palette or colour-key transparency) is composited on white,
  as an image viewer shows it; dropping the alpha channel would expose whatever colour the hidden
  pixels happen to hold.
- Palette, 1-bit, CMYK, YCbCr and the like are converted by Pillow; a mode it cannot convert is refused.
- A pixel budget (``AIRD_MAX_IMAGE_PIXELS``, default 32 MP) is checked from the header, before any
  pixel is decoded, so a decompression bomb never reaches memory.

This is the one image reader: datasets call ``load_rgb``; ``aird.data.inputs`` reads what users hand the
recognizer (paths, bytes, PIL images, arrays) through the same ``decode_rgb`` / ``to_rgb`` and budget.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from aird.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp")
MAX_PIXELS_ENV = "AIRD_MAX_IMAGE_PIXELS"
# 24 MP camera photos (6000 x 4000) pass; a 6000 x 6000 image (36 MP: over 30 s and 2 GB to align) does not.
DEFAULT_MAX_IMAGE_PIXELS = 32_000_000
ALPHA_BACKGROUND = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
MIN_SIDE = 8  # the smallest face the students were trained on (8 px)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def max_image_pixels() -> int:
    """The pixel budget of one image: ``AIRD_MAX_IMAGE_PIXELS`` if set, else 32,000,000."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive whole number of pixels, e.g. 64000000")
    return value


def check_pixel_budget(width: int, height: int, source: str | Path) -> None:
    """DataError naming ``source`` when a ``width`` x ``height`` image is over ``AIRD_MAX_IMAGE_PIXELS``."""
    limit = max_image_pixels()
    if width * height > limit:
        raise DataError(
            f"image is {width}x{height} = {width * height / 1e6:.1f} MP, over the {limit / 1e6:g} MP limit "
            "that guards against decompression bombs",
            source,
            f"shrink the image, or raise the limit with {MAX_PIXELS_ENV}=<pixels>",
        )


def check_min_side(array: np.ndarray, source: str | Path) -> np.ndarray:
    """``array`` itself, or DataError when it is too small to hold a face (under ``MIN_SIDE`` px a side)."""
    if array.ndim != 3 or min(array.shape[:2]) < MIN_SIDE:
        raise DataError(
            f"image too small to hold a face ({array.shape[1]}x{array.shape[0]} px; at least {MIN_SIDE} px a side)",
            source,
        )
    return array


def to_rgb(img: Image.Image, source: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image of any mode (see the module notes), or DataError naming ``source``."""
    check_pixel_budget(img.width, img.height, source)
    mode = img.mode
    if mode == "F":
        raise DataError("32-bit floating-point image: its value range is undefined", source, "save it as 8- or 16-bit")
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(
                f"32-bit integer image with values in {values.min()}..{values.max()}, beyond 16 bits",
                source,
                "save it as 8- or 16-bit",
            )
        gray = np.round(values.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", img.size, ALPHA_BACKGROUND + (255,))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError):
        raise DataError(f"unsupported colour mode {mode!r}", source, "save it as 8-bit RGB or grayscale") from None


def decode_rgb(fp: str | Path | BinaryIO, source: str | Path) -> np.ndarray:
    """Decode an encoded image (a path or a binary file object) to (H, W, 3) uint8 RGB, or DataError naming
    ``source``; the pixel budget is checked from the header, before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # Our own budget decides; Pillow's bomb warning (above 89 MP) would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                check_pixel_budget(img.width, img.height, source)  # from the header: nothing is decoded yet
                img.load()  # decode fully now so truncated files fail here, not later
                return to_rgb(img, source)
    except UnidentifiedImageError:
        raise DataError(
            "not a readable image (unknown format)", source, f"use one of {', '.join(IMAGE_SUFFIXES)}"
        ) from None
    except Image.DecompressionBombError:
        # Pillow refuses images over twice its MAX_IMAGE_PIXELS inside Image.open, before the header check
        # above can run: name our budget when that is the smaller one, so the message is the same either way.
        ceiling, limit = 2 * Image.MAX_IMAGE_PIXELS, max_image_pixels()
        if limit < ceiling:
            raise DataError(
                f"image is over {ceiling / 1e6:.0f} MP, over the {limit / 1e6:g} MP limit that guards against "
                "decompression bombs",
                source,
                "shrink the image",
            ) from None
        raise DataError(f"image is larger than Pillow accepts ({ceiling / 1e6:.0f} MP)", source, "shrink it") from None
    except (DataError, ConfigError):  # both are ValueErrors: not to be taken for a corrupt file below
        raise
    except PermissionError:
        raise DataError("cannot read the image (permission denied)", source, "make the file readable") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"corrupt or truncated image ({exc})", source, "re-download or delete the file") from None


def load_rgb(path: str | Path, source: str | Path | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (see the module notes for how each mode is converted);
    errors name ``source`` (default: the path)."""
    path = Path(path)
    source = path if source is None else source
    if path.is_dir():
        raise DataError("is a folder, not an image", source, "pass the image files inside it")
    if not path.is_file():
        raise DataError("image file not found", source, "check the path (for datasets, --data-root / AIRD_DATA)")
    if path.stat().st_size == 0:
        raise DataError("image file is empty (0 bytes)", source, "re-download or delete the file")
    return check_min_side(decode_rgb(path, source), source)
