"""5-point face alignment to a square chip, as dlib does it for its face descriptor.

dlib's HOG detector finds the face, its 5-landmark predictor places eyes and nose, and
``dlib.get_face_chip`` warps a similarity transform of those points to a canonical chip.
When the detector finds no face, a fixed box (per data set: where faces sit in its photos)
stands in for the detection and the landmark predictor still runs inside it; every such
fallback is counted and reported, never silent.

Images that are already aligned face chips (a pool with ``aligned: true``: insightface's 112 x 112
packs, tight crops) go the same way with the whole chip (its centred square) as the fallback box: the
chip is re-cut to dlib's geometry from its landmarks. On LFW photos cut to insightface-style crops
this keeps the teacher's embedding at cosine 0.996 (mean) of the photo chip's, where landmarks found in
the whole chip without the detector gave 0.995 with a worse tail, and resizing the crop 0.907
(``benchmarks/aligned_chips.py``, docs/results/aligned_chips.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aird.errors import DataError, ModelFileError


def dlib_model_file(name: str) -> Path:
    """A model file shipped by ``face_recognition_models`` (found without importing it: it needs pkg_resources)."""
    # find_spec locates the package without running its __init__ (which imports pkg_resources).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("package face_recognition_models is not installed: pip install face_recognition_models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise ModelFileError(f"{path}: dlib model file missing; reinstall face_recognition_models")
    return path


CHIP_SIZE = 150  # the aligned HR chip's side: dlib's input


@dataclass(frozen=True)
class AlignSettings:
    size: int = CHIP_SIZE
    padding: float = 0.25
    upsample: int = 1  # detector pyramid up-sampling: finds faces down to ~40 px
    # Stand-in detection box when no face is found: centre x, centre y (fractions of width, height)
    # and side (fraction of the shorter side). Defaults are the median dlib box on LFW deep-funneled.
    fallback_box: tuple[float, float, float] = (0.485, 0.53, 0.43)
    on_missing: str = "fallback"  # or "error"

    def key(self) -> str:
        """Hash of everything that changes a chip: part of the chip cache key."""
        blob = json.dumps({**asdict(self), "method": "dlib-5pt-v1"}, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


# Where faces sit in each data set's photos (measured on dlib detections), for the fallback box.
FALLBACK_BOXES = {
    "lfw": (0.485, 0.53, 0.43),
    "orl": (0.46, 0.60, 0.80),
    "celeba": (0.483, 0.624, 0.494),
    "utkface": (0.45, 0.45, 0.935),
}
CHIP_BOX = (0.5, 0.5, 1.0)  # an aligned chip is its own face box: the centred square of its shorter side


def align_settings_for(dataset: str, size: int = CHIP_SIZE, aligned: bool = False) -> AlignSettings:
    """Alignment per data set: only the fallback box (where its photos put the face) differs.
    ``aligned``: the images are already-aligned chips, so the whole chip is the fallback box."""
    box = CHIP_BOX if aligned else FALLBACK_BOXES.get(dataset, FALLBACK_BOXES["lfw"])
    return AlignSettings(size=size, fallback_box=box)


@dataclass
class AlignedFace:
    chip: np.ndarray  # (size, size, 3) uint8 RGB
    landmarks: np.ndarray  # (5, 2) float32, in the source image
    detected: bool  # False when the fallback box stood in for the detector


@dataclass
class DetectedFace:
    """One face the detector found in a photo (no fallback box ever stands in here)."""

    box: tuple[int, int, int, int]  # detector box (left, top, right, bottom) in the source image
    landmarks: np.ndarray  # (5, 2) float32, in the source image
    chip_px: float  # side of the aligned chip in source pixels: the face's native resolution
    shape: Any = field(repr=False, compare=False)  # dlib's landmark object, to cut chips from


class FaceAligner:
    """Aligns RGB images to chips; holds dlib's detector and predictor (load once, reuse)."""

    def __init__(self, settings: AlignSettings | None = None):
        import dlib

        self.settings = settings or AlignSettings()
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(dlib_model_file("shape_predictor_5_face_landmarks.dat")))

    def _fallback_rect(self, h: int, w: int):
        cx, cy, side = self.settings.fallback_box
        s = side * min(h, w)
        x0, y0 = cx * w - s / 2, cy * h - s / 2
        return self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x0 + s)), int(round(y0 + s)))

    def _face_rect(self, image: np.ndarray, source: str | Path):
        """The detector's box of the subject (or the fallback box), and whether the detector found it."""
        h, w = image.shape[:2]
        rects = list(self._detector(image, self.settings.upsample))
        if rects:
            # Curated face sets centre the subject; a bystander is off-centre.
            rect = min(rects, key=lambda r: (r.center().x - w / 2) ** 2 + (r.center().y - h / 2) ** 2 - r.area())
            return rect, True
        if self.settings.on_missing == "error":
            raise DataError("no face found", source, "use a photo with a visible frontal face of at least ~40 px")
        return self._fallback_rect(h, w), False

    def face_box(self, image: np.ndarray, source: str | Path = "<array>") -> tuple[tuple[int, int, int, int], bool]:
        """The box ``align`` starts from: (left, top, right, bottom), inclusive, in the source image, and
        whether the detector found it (False: the fallback box)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}", source)
        rect, detected = self._face_rect(np.ascontiguousarray(image), source)
        return (rect.left(), rect.top(), rect.right(), rect.bottom()), detected

    def align(self, image: np.ndarray, source: str | Path = "<array>") -> AlignedFace:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}", source)
        image = np.ascontiguousarray(image)
        rect, detected = self._face_rect(image, source)
        shape = self._predictor(image, rect)
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        chip = self._dlib.get_face_chip(image, shape, size=self.settings.size, padding=self.settings.padding)
        return AlignedFace(np.asarray(chip, dtype=np.uint8), landmarks, detected)

    def detect(self, image: np.ndarray, upsample: int | None = None) -> list[DetectedFace]:
        """Every face the detector finds, largest first; ``upsample`` (default: the settings') doubles the
        image that many times first, so each step finds faces about half as small (1: ~40 px, 2: ~20 px)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image)
        times = self.settings.upsample if upsample is None else int(upsample)
        faces = []
        for rect in self._detector(image, times):
            shape = self._predictor(image, rect)
            details = self._dlib.get_face_chip_details(shape, self.settings.size, self.settings.padding)
            faces.append(
                DetectedFace(
                    box=(rect.left(), rect.top(), rect.right(), rect.bottom()),
                    landmarks=np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32),
                    chip_px=float(details.rect.width()),
                    shape=shape,
                )
            )
        return sorted(faces, key=lambda f: -f.chip_px)

    def chip(self, image: np.ndarray, face: DetectedFace, size: int | None = None) -> np.ndarray:
        """The aligned chip of a detected face at ``size`` x ``size`` (default: the settings' size)."""
        size = size or self.settings.size
        chip = self._dlib.get_face_chip(
            np.ascontiguousarray(image), face.shape, size=size, padding=self.settings.padding
        )
        return np.asarray(chip, dtype=np.uint8)
