"""Reading face images: every mode Pillow opens becomes correct 8-bit RGB, or a clear error naming the file.

- 16-bit and other integer grayscale (``I;16``, ``I``: 16-bit PNG, PGM, TIFF) is scaled from 0..65535 to
  0..255, never clipped; 32-bit float images are refused (their value range is undefined).
- Transparency (``RGBA``, ``LA``, ``PA``, palette or colour-key transparency) is composited on white,
  as an image viewer shows it; dropping the alpha channel would expose whatever colour the hidden
  pixels happen to hold.
- Palette, 1-bit, CMYK, YCbCr and the like are converted by Pillow; a mode it cannot convert is refused.
- A pixel budget (``AIRD_MAX_IMAGE_PIXELS``, default 32 MP) is checked from the header, before any
  pixel is decoded, so a decompression bomb never reaches memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from aird.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp")
MAX_PIXELS_ENV = "AIRD_MAX_IMAGE_PIXELS"
# 24 MP camera photos (6000 x 4000) pass; a 6000 x 6000 image (36 MP: over 30 s and 2 GB to align) does not.
DEFAULT_MAX_IMAGE_PIXELS = 32_000_000
ALPHA_BACKGROUND = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


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


def _budget_error(path: Path, width: int, height: int, limit: int) -> DataError:
    return DataError(
        f"image is {width}x{height} = {width * height / 1e6:.1f} MP, over the {limit / 1e6:g} MP limit "
        "that guards against decompression bombs",
        path,
        f"shrink the image, or raise the limit with {MAX_PIXELS_ENV}=<pixels>",
    )


def _to_rgb(img: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded image of any mode, or DataError."""
    mode = img.mode
    if mode == "F":
        raise DataError("32-bit floating-point image: its value range is undefined", path, "save it as 8- or 16-bit")
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(
                f"32-bit integer image with values in {values.min()}..{values.max()}, beyond 16 bits",
                path,
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
    except ValueError:
        raise DataError(f"unsupported colour mode {mode!r}", path, "save it as 8-bit RGB or grayscale") from None


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB (see the module notes for how each mode is converted)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("image file not found", path, "check the path and the data root (--data-root / AIRD_DATA)")
    if path.stat().st_size == 0:
        raise DataError("image file is empty (0 bytes)", path, "re-download or delete the file")
    limit = max_image_pixels()
    try:
        with Image.open(path) as img:
            width, height = img.size  # from the header: nothing is decoded yet
            if width * height > limit:
                raise _budget_error(path, width, height, limit)
            img.load()  # decode fully now so truncated files fail here, not later
            array = _to_rgb(img, path)
    except UnidentifiedImageError:
        raise DataError(
            "not a readable image (unknown format)", path, f"use one of {', '.join(IMAGE_SUFFIXES)}"
        ) from None
    except Image.DecompressionBombError:
        # Pillow's own, larger limit: reached only when AIRD_MAX_IMAGE_PIXELS is raised above it.
        raise DataError(
            f"image is larger than Pillow accepts ({2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP)", path, "shrink it"
        ) from None
    except DataError:
        raise
    except PermissionError:
        raise DataError("cannot read the image (permission denied)", path, "make the file readable") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"corrupt or truncated image ({exc})", path, "re-download or delete the file") from None
    if array.ndim != 3 or min(array.shape[:2]) < 8:
        raise DataError(f"image too small to hold a face ({array.shape[1]}x{array.shape[0]})", path)
    return array
