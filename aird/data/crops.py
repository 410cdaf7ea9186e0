"""LR probes as a camera pipeline cuts them: from a detector's box in the original photo, not the aligned chip.

The aligned chip is what dlib's 5-point alignment makes of a face; a deployed detector hands over an
upright square of its own instead. Two evaluation conditions take the box dlib's HOG detector draws (the
same detection the alignment starts from; the data set's fallback box where it finds none) and frame it
as the chip is framed on average (``DETECTOR_FRAME``: the one calibration a deployment makes once):
``detector`` cuts that square as it is, ``jittered`` first shifts, scales and turns it per probe
(:class:`aird.data.jitter.Jitter`, seeded by the image's content hash), as a detector of another make or
a tracker's box from frame to frame would. The square is cut from the original image at the chip's size
and then takes the LR path of every other face (``Degradation``, then ``to_network_input``), so the box
is the only difference from the aligned chip.

Boxes are cached under ``$AIRD_CACHE/boxes/<alignment-hash>/`` like the chips (one ``.npz`` per image,
keyed by the hash of its bytes); the data root is only read.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from aird.data.align import AlignSettings, FaceAligner
from aird.data.chips import ChipSet
from aird.data.degrade import stable_seed
from aird.data.images import load_rgb
from aird.data.jitter import Box, Jitter, cut
from aird.errors import ConfigError
from aird.io import atomic_path, read_npz_cache
from aird.paths import cache_dir

CROPS = ("aligned", "detector", "jittered")
# The aligned chip (padding 0.25) against dlib's detector box, median over 597 detected LFW images: the
# chip's centre lies 0.045 box sides right of the box's centre and 0.021 below it, and its side is 1.09
# box sides (the chip's roll is what an upright box cannot follow: -1.4 deg median, 3.4 deg spread).
DETECTOR_FRAME = (0.045, 0.021, 1.09)
# A detector of another make, or a tracker's box from frame to frame: up to a tenth of the box off
# centre, 10% larger or smaller, turned up to 10 degrees (docs/evaluation.md).
DEFAULT_CROP_JITTER = Jitter(shift=0.1, scale=(0.9, 1.1), rotate=10.0)
BOX_METHOD = "dlib-hog-box-v1"


class BoxCache:
    def __init__(self, settings: AlignSettings, root: str | Path | None = None):
        self.root = (Path(root) if root else cache_dir("boxes")) / settings.key()

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.npz"

    def get(self, digest: str) -> tuple[np.ndarray, bool] | None:
        z = read_npz_cache(self._path(digest), ("box", "detected"))
        if z is None or z["box"].shape != (4,):
            return None
        return z["box"].astype(np.int64), bool(z["detected"])

    def put(self, digest: str, box: np.ndarray, detected: bool) -> None:
        with atomic_path(self._path(digest)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, box=np.asarray(box, np.int64), detected=detected)


@dataclass
class FaceBoxes:
    """The face box of each image of a chip set, in its order: (left, top, right, bottom), inclusive."""

    boxes: np.ndarray  # (N, 4) int64, in the source image
    detected: np.ndarray  # (N,) bool; False: the data set's fallback box stood in

    @property
    def n_fallback(self) -> int:
        return int((~self.detected).sum())


_worker_aligner: FaceAligner | None = None
_last_boxes: tuple[tuple, FaceBoxes] | None = None  # an evaluation asks for the same set many times


def _init_worker(settings: AlignSettings) -> None:
    global _worker_aligner
    if _worker_aligner is None or _worker_aligner.settings != settings:
        _worker_aligner = FaceAligner(settings)


def _box_one(path: Path) -> tuple[tuple[int, int, int, int], bool]:
    assert _worker_aligner is not None
    return _worker_aligner.face_box(load_rgb(path), source=path)


def face_boxes(chips: ChipSet, progress: bool = True, workers: int | None = None) -> FaceBoxes:
    """The detector box each chip of ``chips`` was aligned from (cached; detected once per image)."""
    global _last_boxes
    store = BoxCache(chips.settings)
    memo_key = (str(store.root), tuple(chips.digests))
    if _last_boxes is not None and _last_boxes[0] == memo_key:
        return _last_boxes[1]
    found = [store.get(d) for d in chips.digests]
    todo = [i for i, f in enumerate(found) if f is None]
    if todo:
        workers = workers or min(len(todo) // 200 + 1, os.cpu_count() or 1)
        bar = tqdm(total=len(todo), desc="detector boxes", unit="img", disable=not progress)
        paths = [chips.paths[i] for i in todo]
        if workers > 1:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(chips.settings,)) as pool:
                results = pool.map(_box_one, paths, chunksize=16)
                for i, (box, detected) in zip(todo, results):
                    found[i] = (np.asarray(box, np.int64), detected)
                    store.put(chips.digests[i], *found[i])
                    bar.update()
        else:
            _init_worker(chips.settings)
            for i, path in zip(todo, paths):
                box, detected = _box_one(path)
                found[i] = (np.asarray(box, np.int64), detected)
                store.put(chips.digests[i], *found[i])
                bar.update()
        bar.close()
    result = FaceBoxes(
        np.stack([f[0] for f in found]) if found else np.zeros((0, 4), np.int64),
        np.array([f[1] for f in found], dtype=bool),
    )
    _last_boxes = (memo_key, result)
    return result


def framed_box(box: Sequence[int], frame: tuple[float, float, float] = DETECTOR_FRAME) -> Box:
    """A detector box (left, top, right, bottom; inclusive) framed like the aligned chip: the upright
    square a deployment would cut for the student."""
    left, top, right, bottom = (float(v) for v in box)
    side = (right - left + 1 + bottom - top + 1) / 2
    dx, dy, k = frame
    return Box((left + right) / 2 + dx * side, (top + bottom) / 2 + dy * side, k * side)


@dataclass(frozen=True)
class DetectorCrop:
    """How each probe's square is cut from its photo: conditions ``detector`` (no jitter) and ``jittered``."""

    condition: str = "jittered"
    jitter: Jitter = DEFAULT_CROP_JITTER
    seed: int = 0
    frame: tuple[float, float, float] = DETECTOR_FRAME

    def settings(self) -> dict:
        return {
            "condition": self.condition,
            "box": f"{BOX_METHOD}: dlib's HOG detector box, the one the alignment starts from (the data set's "
            "fallback box where none is found), framed like the aligned chip, upright",
            "frame": {"dx": self.frame[0], "dy": self.frame[1], "side": self.frame[2]},
            "jitter": self.jitter.settings(),
            "seed": self.seed,
            "interpolation": "bilinear (as dlib.get_face_chip), then the LR degradation",
        }

    def key(self) -> str:
        # The condition's name changes no pixel: "detector" and an all-zero "jittered" share embeddings.
        blob = json.dumps({**self.settings(), "condition": None, "method": BOX_METHOD}, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]

    def crop(self, image: np.ndarray, box: Sequence[int], key: str, size: int) -> np.ndarray:
        """The ``size`` x ``size`` HR crop of one probe; ``key`` (its content hash) seeds its jitter."""
        framed = framed_box(box, self.frame)
        if not self.jitter.is_identity:
            framed = self.jitter.draw(np.random.default_rng(stable_seed(self.seed, "crop", key))).apply(framed)
        return cut(image, framed, size)

    def crops(self, chips: ChipSet, boxes: FaceBoxes, indices: Sequence[int]) -> np.ndarray:
        """HR crops (chip-sized) of images ``indices`` of ``chips``, read from their original files."""
        size = chips.settings.size
        out = [self.crop(load_rgb(chips.paths[i]), boxes.boxes[i], chips.digests[i], size) for i in indices]
        return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def crop_condition(name: str, jitter: Jitter = DEFAULT_CROP_JITTER, seed: int = 0) -> DetectorCrop | None:
    """None for the aligned chip, else how to cut the probe from its photo; an unknown name is a ConfigError.
    ``jitter`` applies to ``jittered`` only."""
    if name not in CROPS:
        raise ConfigError(f"unknown crop condition {name!r}; choose from {list(CROPS)}")
    if name == "aligned":
        return None
    return DetectorCrop(name, jitter if name == "jittered" else Jitter(), seed)
