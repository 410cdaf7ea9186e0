"""Aligned chips on disk, so that no image is ever aligned twice.

Each chip is stored as a small compressed ``.npz`` (chip, landmarks, detected) under
``<cache>/chips/<settings-hash>/<aa>/<content-hash>.npz``: the key is the hash of the image file's
bytes, so renaming or moving a data set keeps its cache and editing an image invalidates it.

An image is a file path, or an :class:`ImageRef` for one that is not a file of its own (a record of
a RecordIO pack): it gives its content hash and its pixels, and ``str()`` names it.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from aird.data.align import AlignedFace, AlignSettings, FaceAligner
from aird.data.images import load_rgb
from aird.errors import ConfigError, DataError
from aird.io import atomic_path, read_npz_cache
from aird.paths import cache_dir


def file_digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@runtime_checkable
class ImageRef(Protocol):
    """An image that is not a file of its own (``aird.data.recordio.RecordImage``); hashable."""

    def digest(self) -> str:
        """sha1 of the encoded image bytes (what the image's own file would hash to)."""
        ...

    def load_rgb(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB, or DataError naming the image."""
        ...


ImageSource = Path | ImageRef


class ChipCache:
    def __init__(self, settings: AlignSettings, root: str | Path | None = None):
        self.settings = settings
        self.root = (Path(root) if root else cache_dir("chips")) / settings.key()

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.npz"

    def get(self, digest: str) -> AlignedFace | None:
        z = read_npz_cache(self._path(digest), ("chip", "landmarks", "detected"))
        return None if z is None else AlignedFace(z["chip"], z["landmarks"], bool(z["detected"]))

    def put(self, digest: str, face: AlignedFace) -> None:
        with atomic_path(self._path(digest)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, chip=face.chip, landmarks=face.landmarks, detected=face.detected)


ON_BAD_IMAGE = ("error", "skip")


@dataclass(frozen=True)
class SkippedImage:
    """An image left out of a run (``on_bad_image="skip"``) and why."""

    path: ImageSource
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason}


@dataclass
class ChipSet:
    """Aligned chips of a list of images, in the list's order (less any skipped image)."""

    paths: list[ImageSource]
    chips: np.ndarray  # (N, S, S, 3) uint8
    detected: np.ndarray  # (N,) bool
    digests: list[str]  # content hash of each source image: the sample's key everywhere
    settings: AlignSettings
    skipped: list[SkippedImage] = field(default_factory=list)  # in input order; empty unless skipping

    @property
    def n_fallback(self) -> int:
        return int((~self.detected).sum())

    def fallback_paths(self) -> list[ImageSource]:
        return [p for p, d in zip(self.paths, self.detected) if not d]

    def index(self) -> dict[ImageSource, int]:
        """Row of each aligned image's path (skipped images have none)."""
        return {p: i for i, p in enumerate(self.paths)}

    def report(self) -> str:
        text = f"aligned {len(self.paths)} images; no face detected in {self.n_fallback} (fallback box used)"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} that could not be read: " + "; ".join(
                f"{s.path} ({s.reason})" for s in self.skipped
            )
        return text


_worker_aligner: FaceAligner | None = None
# The last aligned set, kept in memory: an evaluation runs several protocols over the same images
# (aird compare: 8 over LFW's 7,701), and reading thousands of cached chips back takes longer than
# embedding them. Keyed by the images' content, so an edited image is never served stale.
_last_set: tuple[tuple, ChipSet] | None = None


def _init_worker(settings: AlignSettings) -> None:
    global _worker_aligner
    # Loading dlib's detector and predictor takes about a second: reuse them across calls in a process.
    if _worker_aligner is None or _worker_aligner.settings != settings:
        _worker_aligner = FaceAligner(settings)


def _align_one(path: ImageSource) -> AlignedFace:
    assert _worker_aligner is not None
    image = load_rgb(path) if isinstance(path, Path) else path.load_rgb()
    return _worker_aligner.align(image, source=str(path))


def _align_or_skip(path: ImageSource) -> AlignedFace | SkippedImage:
    # Only DataError (an image the user can fix or drop) is skipped; anything else is a bug and stops the run.
    try:
        return _align_one(path)
    except DataError as exc:
        return SkippedImage(path, exc.message)


def _digest(path: ImageSource) -> str:
    try:
        return file_digest(path) if isinstance(path, Path) else path.digest()
    except (OSError, DataError):
        return ""  # missing or unreadable: loading it says which, and the result is not cached


def align_images(
    paths: Sequence[str | Path | ImageRef],
    settings: AlignSettings | None = None,
    cache: ChipCache | None | bool = True,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "aligning",
    on_bad_image: str = "error",
) -> ChipSet:
    """Align every image (cached ones are read back).

    An image that cannot be read or aligned raises a DataError naming it (``on_bad_image="error"``,
    right for benchmarks), or with ``"skip"`` is left out and listed in ``ChipSet.skipped`` with its
    reason (right for a user's folder of photos, where one bad file must not stop the rest).
    """
    global _last_set
    if on_bad_image not in ON_BAD_IMAGE:
        raise ConfigError(f"on_bad_image must be one of {', '.join(ON_BAD_IMAGE)}, got {on_bad_image!r}")
    settings = settings or AlignSettings()
    store = ChipCache(settings) if cache is True else (cache or None)
    paths = [Path(p) if isinstance(p, (str, os.PathLike)) else p for p in paths]  # the rest are ImageRefs
    digests = [_digest(p) for p in paths]
    memo_key = (str(store.root), on_bad_image, tuple(map(str, paths)), tuple(digests)) if cache is True else None
    if memo_key is not None and _last_set is not None and _last_set[0] == memo_key:
        return _last_set[1]
    faces: list[AlignedFace | SkippedImage | None] = [store.get(d) if store and d else None for d in digests]
    todo = [i for i, f in enumerate(faces) if f is None]
    align = _align_or_skip if on_bad_image == "skip" else _align_one
    if todo:
        workers = workers or min(len(todo) // 200 + 1, os.cpu_count() or 1)
        todo_paths = [paths[i] for i in todo]
        bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress)
        if workers > 1:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(settings,)) as pool:
                results = pool.map(align, todo_paths, chunksize=16)
                for i, face in zip(todo, results):
                    faces[i] = face
                    if store and digests[i] and isinstance(face, AlignedFace):
                        store.put(digests[i], face)
                    bar.update()
        else:
            _init_worker(settings)
            for i in todo:
                faces[i] = face = align(paths[i])
                if store and digests[i] and isinstance(face, AlignedFace):
                    store.put(digests[i], face)
                bar.update()
        bar.close()
    kept = [i for i, f in enumerate(faces) if isinstance(f, AlignedFace)]
    aligned = [faces[i] for i in kept]
    chip_set = ChipSet(
        [paths[i] for i in kept],
        np.stack([f.chip for f in aligned]) if aligned else np.zeros((0, settings.size, settings.size, 3), np.uint8),
        np.array([f.detected for f in aligned], dtype=bool),
        [digests[i] for i in kept],
        settings,
        [f for f in faces if isinstance(f, SkippedImage)],
    )
    if memo_key is not None:
        _last_set = (memo_key, chip_set)
    return chip_set
