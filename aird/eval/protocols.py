"""Who is compared with whom: LFW View 2 pairs and the gallery / probe identification splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aird.data.folders import FaceFolder
from aird.data.lfw import LFW, PairList
from aird.data.orl import load_orl

BENCHMARKS = ("lfw", "orl")


@dataclass
class IdentificationSplit:
    """Indices into ``paths``: one HR gallery image per known person, their other images as probes,
    and images of people outside the gallery as unknown probes (open set)."""

    paths: list[Path]
    labels: list[str]
    gallery: np.ndarray
    probes: np.ndarray
    unknown: np.ndarray

    def without_missing(self, index: dict[Path, int]) -> "IdentificationSplit":
        """The split over the images in ``index`` only (those aligned), in the same order.

        A probe whose person lost their gallery image is left out too: it could never be matched.
        """
        keep = [i for i, p in enumerate(self.paths) if p in index]
        if len(keep) == len(self.paths):
            return self
        row = {old: new for new, old in enumerate(keep)}
        gallery = [i for i in self.gallery if i in row]
        people = {self.labels[i] for i in gallery}
        probes = [i for i in self.probes if i in row and self.labels[i] in people]
        unknown = [i for i in self.unknown if i in row]
        return IdentificationSplit(
            [self.paths[i] for i in keep],
            [self.labels[i] for i in keep],
            np.array([row[i] for i in gallery], int),
            np.array([row[i] for i in probes], int),
            np.array([row[i] for i in unknown], int),
        )

    def describe(self) -> dict:
        return {"gallery": len(self.gallery), "probes": len(self.probes), "unknown_probes": len(self.unknown)}


def _split_folder(
    folder: FaceFolder, min_images: int, extra_unknown: list[Path], extra_labels: list[str]
) -> IdentificationSplit:
    paths: list[Path] = []
    labels: list[str] = []
    gallery, probes = [], []
    for person, items in folder.by_identity().items():
        if len(items) < min_images:
            continue
        for k, item in enumerate(items):
            (gallery if k == 0 else probes).append(len(paths))
            paths.append(item.path)
            labels.append(person)
    unknown = list(range(len(paths), len(paths) + len(extra_unknown)))
    return IdentificationSplit(
        paths + list(extra_unknown),
        labels + list(extra_labels),
        np.array(gallery, int),
        np.array(probes, int),
        np.array(unknown, int),
    )


def lfw_identification(
    root: str | Path, min_images: int = 10, n_unknown: int = 1000, seed: int = 0
) -> IdentificationSplit:
    """LFW people with >= ``min_images`` images (158 at 10): first image (file order) is the HR gallery,
    the rest are probes. Unknown probes: one image each of ``n_unknown`` people with fewer images,
    drawn with ``seed``."""
    folder = LFW(root).folder()
    groups = folder.by_identity()
    others = sorted(p for p, items in groups.items() if len(items) < min_images)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(others), size=min(n_unknown, len(others)), replace=False))
    unknown_people = [others[i] for i in chosen]
    return _split_folder(folder, min_images, [groups[p][0].path for p in unknown_people], unknown_people)


def orl_identification(root: str | Path) -> IdentificationSplit:
    """ORL: image 1 of each of the 40 people is the HR gallery, images 2-10 the probes (closed set)."""
    return _split_folder(load_orl(root), 1, [], [])


def lfw_pairs(root: str | Path, folds: list[int] | None = None, pairs_file: str | Path | None = None) -> PairList:
    return LFW(root).pairs(folds, pairs_file)
