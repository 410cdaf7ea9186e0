"""Box jitter: the face as a detector frames it, not as dlib's 5-point alignment does.

A camera pipeline hands over the square its detector drew, and that square is shifted, larger or
smaller and rolled against the aligned chip the students were trained on. :class:`Jitter` draws such
a misframing per sample (shift, scale and rotation of the square, from a generator seeded by
``stable_seed``), and :func:`cut` resamples any square of an image to a chip. Training jitters the HR
chip itself (:func:`jitter_chip`, through ``Degradation.jitter``); evaluation jitters a detector's box in
the original photo (``aird.data.crops``). Both then take the same LR path as every other face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from aird.errors import ConfigError

MAX_SHIFT = 0.5  # a centre moved by half the box has the face at the crop's edge
SCALE_LIMITS = (0.5, 2.0)
MAX_ROTATE = 45.0
# Outside the image (or the chip) the crop mirrors what is inside: at 8-24 px a mirrored background
# looks like background, where a constant fill would draw a sharp edge the camera never sees.
BORDER = cv2.BORDER_REFLECT_101


@dataclass(frozen=True)
class Box:
    """A square of ``side`` pixels centred at (``cx``, ``cy``) and turned by ``angle`` degrees (positive:
    its x axis towards the image's y axis, as ``dlib.chip_details.angle``), in pixel-centre coordinates
    (pixel (0, 0) is centred at 0, 0)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    @classmethod
    def of_image(cls, height: int, width: int) -> "Box":
        """The whole of a square image (a chip) as a box: ``cut`` of it returns the image itself."""
        return cls((width - 1) / 2, (height - 1) / 2, float(min(height, width)))


@dataclass(frozen=True)
class JitterDraw:
    """One sample's misframing: centre shift (fractions of the box side), scale of the side, roll (degrees)."""

    dx: float
    dy: float
    scale: float
    angle: float

    def apply(self, box: Box) -> Box:
        return Box(
            box.cx + self.dx * box.side, box.cy + self.dy * box.side, box.side * self.scale, box.angle + self.angle
        )


@dataclass(frozen=True)
class Jitter:
    """How far a detector's square may sit from the aligned one, drawn uniformly per sample.

    ``shift``: the centre moves by up to this fraction of the box side along x and along y;
    ``scale``: the side is multiplied by a factor in [low, high] (> 1: more background, a smaller face);
    ``rotate``: the square turns by up to this many degrees either way.
    """

    shift: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0

    def __post_init__(self) -> None:
        # Each comparison is written so that NaN fails it too.
        if not 0 <= self.shift <= MAX_SHIFT:
            raise ConfigError(
                f"jitter.shift must be in [0, {MAX_SHIFT}] (a fraction of the box side), got {self.shift!r}"
            )
        scale = tuple(self.scale) if isinstance(self.scale, (list, tuple)) else (self.scale, self.scale)
        lo_limit, hi_limit = SCALE_LIMITS
        if len(scale) != 2 or not lo_limit <= scale[0] <= scale[1] <= hi_limit:
            raise ConfigError(
                f"jitter.scale must be a range [low, high] with {lo_limit} <= low <= high <= {hi_limit}, "
                f"got {self.scale!r}"
            )
        if not 0 <= self.rotate <= MAX_ROTATE:
            raise ConfigError(f"jitter.rotate must be in [0, {MAX_ROTATE}] degrees, got {self.rotate!r}")
        object.__setattr__(self, "scale", (float(scale[0]), float(scale[1])))
        object.__setattr__(self, "shift", float(self.shift))
        object.__setattr__(self, "rotate", float(self.rotate))

    @property
    def is_identity(self) -> bool:
        return self.shift == 0 and self.scale == (1.0, 1.0) and self.rotate == 0

    def settings(self) -> dict:
        return {"shift": self.shift, "scale": list(self.scale), "rotate": self.rotate}

    def draw(self, rng: np.random.Generator) -> JitterDraw:
        """Always four draws, in this order, so one setting never changes another's values."""
        dx, dy = rng.uniform(-self.shift, self.shift, 2)
        scale = rng.uniform(*self.scale)
        angle = rng.uniform(-self.rotate, self.rotate)
        return JitterDraw(float(dx), float(dy), float(scale), float(angle))


def cut(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The ``box`` of ``image`` resampled (bilinear, as ``dlib.get_face_chip``) to ``size`` x ``size``.

    Output pixel u covers source point centre + R(angle) ((u + 1/2) side / size - side / 2): the
    square's edges, not its corner pixels' centres, meet the output's edges, so ``Box.of_image`` gives
    the image back unchanged and a chip's box (dlib's rectangle, ``side`` = its corner distance x
    size / (size - 1)) gives dlib's chip.
    """
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {image.dtype} {image.shape}")
    a = box.side / size
    t = math.radians(box.angle)
    cos, sin = math.cos(t), math.sin(t)
    off = 0.5 * a - box.side / 2
    # Maps output pixel coordinates to source coordinates (WARP_INVERSE_MAP).
    matrix = np.array(
        [
            [a * cos, -a * sin, box.cx + (cos - sin) * off],
            [a * sin, a * cos, box.cy + (sin + cos) * off],
        ]
    )
    out = cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=BORDER,
    )
    return out.reshape(size, size, *image.shape[2:])


def jitter_chip(chip: np.ndarray, jitter: Jitter, rng: np.random.Generator) -> np.ndarray:
    """The aligned chip re-framed as a detector might have framed it: same size, the face moved,
    scaled and rolled within it (what lies outside the chip is mirrored in)."""
    draw = jitter.draw(rng)
    h, w = chip.shape[:2]
    return cut(chip, draw.apply(Box.of_image(h, w)), h)
