"""Aligned chips on disk, so that no image is ever aligned twice.

Each chip is stored as a small compressed ``.npz`` (chip, landmarks, detected) under
``<cache>/chips/<settings-hash>/<aa>/<content-hash>.npz``: the key is the hash of the image file's
bytes, so renaming or moving a data set keeps its cache and editing an image invalidates it.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from aird.data.align import AlignedFace, AlignSettings, FaceAligner
from aird.data.images import load_rgb
from aird.io import atomic_path
from aird.paths import cache_dir


def file_digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


class ChipCache:
    def __init__(self, settings: AlignSettings, root: str | Path | None = None):
        self.settings = settings
        self.root = (Path(root) if root else cache_dir("chips")) / settings.key()

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.npz"

    def get(self, digest: str) -> AlignedFace | None:
        path = self._path(digest)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return AlignedFace(z["chip"], z["landmarks"], bool(z["detected"]))
        except (OSError, ValueError, KeyError, EOFError):
            path.unlink(missing_ok=True)  # a damaged entry is recomputed, never trusted
            return None

    def put(self, digest: str, face: AlignedFace) -> None:
        with atomic_path(self._path(digest)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, chip=face.chip, landmarks=face.landmarks, detected=face.detected)


@dataclass
class ChipSet:
    """Aligned chips of a list of images, in the list's order."""

    paths: list[Path]
    chips: np.ndarray  # (N, S, S, 3) uint8
    detected: np.ndarray  # (N,) bool
    digests: list[str]  # content hash of each source image: the sample's key everywhere
    settings: AlignSettings

    @property
    def n_fallback(self) -> int:
        return int((~self.detected).sum())

    def fallback_paths(self) -> list[Path]:
        return [p for p, d in zip(self.paths, self.detected) if not d]

    def report(self) -> str:
        return f"aligned {len(self.paths)} images; no face detected in {self.n_fallback} (fallback box used)"


_worker_aligner: FaceAligner | None = None
# The last aligned set, kept in memory: an evaluation runs several protocols over the same images
# (aird compare: 8 over LFW's 7,701), and reading thousands of cached chips back takes longer than
# embedding them. Keyed by the images' content, so an edited image is never served stale.
_last_set: tuple[tuple, ChipSet] | None = None


def _init_worker(settings: AlignSettings) -> None:
    global _worker_aligner
    _worker_aligner = FaceAligner(settings)


def _align_one(path: Path) -> AlignedFace:
    assert _worker_aligner is not None
    return _worker_aligner.align(load_rgb(path), source=path)


def align_images(
    paths: Sequence[str | Path],
    settings: AlignSettings | None = None,
    cache: ChipCache | None | bool = True,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "aligning",
) -> ChipSet:
    """Align every image (cached ones are read back); errors name the offending file."""
    global _last_set
    settings = settings or AlignSettings()
    store = ChipCache(settings) if cache is True else (cache or None)
    paths = [Path(p) for p in paths]
    digests = [file_digest(p) if p.is_file() else "" for p in paths]
    memo_key = (str(store.root), tuple(map(str, paths)), tuple(digests)) if cache is True else None
    if memo_key is not None and _last_set is not None and _last_set[0] == memo_key:
        return _last_set[1]
    faces: list[AlignedFace | None] = [store.get(d) if store and d else None for d in digests]
    todo = [i for i, f in enumerate(faces) if f is None]
    if todo:
        workers = workers or min(len(todo) // 200 + 1, os.cpu_count() or 1)
        todo_paths = [paths[i] for i in todo]
        bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress)
        if workers > 1:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(settings,)) as pool:
                results = pool.map(_align_one, todo_paths, chunksize=16)
                for i, face in zip(todo, results):
                    faces[i] = face
                    if store:
                        store.put(digests[i], face)
                    bar.update()
        else:
            _init_worker(settings)
            for i in todo:
                faces[i] = _align_one(paths[i])
                if store:
                    store.put(digests[i], faces[i])
                bar.update()
        bar.close()
    chip_set = ChipSet(
        paths,
        np.stack([f.chip for f in faces]),
        np.array([f.detected for f in faces], dtype=bool),
        digests,
        settings,
    )
    if memo_key is not None:
        _last_set = (memo_key, chip_set)
    return chip_set
