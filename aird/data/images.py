"""Reading face images: every failure names the file and says what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from aird.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB; grayscale and palette images become 3-channel."""
    path = Path(path)
    if not path.is_file():
        raise DataError("image file not found", path, "check the path and the data root (--data-root / AIRD_DATA)")
    if path.stat().st_size == 0:
        raise DataError("image file is empty (0 bytes)", path, "re-download or delete the file")
    try:
        with Image.open(path) as img:
            img.load()  # decode fully now so truncated files fail here, not later
            rgb = img.convert("RGB")
    except UnidentifiedImageError:
        raise DataError(
            "not a readable image (unknown format)", path, f"use one of {', '.join(IMAGE_SUFFIXES)}"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"corrupt or truncated image ({exc})", path, "re-download or delete the file") from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or min(array.shape[:2]) < 8:
        raise DataError(f"image too small to hold a face ({array.shape[1]}x{array.shape[0]})", path)
    return array
