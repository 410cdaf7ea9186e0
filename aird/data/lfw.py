"""LFW deep-funneled and its View 2 pairs protocol (10 identity-disjoint folds of 300 + 300 pairs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aird.data.folders import FaceFolder
from aird.errors import DataError
from aird.io import read_text
from aird.paths import LFW_HELP

LFW_IMAGES = "lfw/lfw-deepfunneled"
LFW_PAIRS = "lfw/pairs.txt"


@dataclass
class PairList:
    """Verification pairs; ``fold`` counts from 1 as in the LFW documentation."""

    left: list[Path]
    right: list[Path]
    same: np.ndarray  # bool (N,)
    fold: np.ndarray  # int (N,)
    left_identity: list[str]
    right_identity: list[str]
    source: Path | None = None  # the pairs file, for messages

    def __len__(self) -> int:
        return len(self.left)

    def take(self, idx: np.ndarray | list[int]) -> "PairList":
        """The pairs at positions ``idx``, in that order."""
        idx = np.asarray(idx, dtype=int)
        return PairList(
            [self.left[i] for i in idx],
            [self.right[i] for i in idx],
            self.same[idx],
            self.fold[idx],
            [self.left_identity[i] for i in idx],
            [self.right_identity[i] for i in idx],
            self.source,
        )

    def subset(self, folds: list[int] | None) -> "PairList":
        """The pairs of ``folds``; DataError when a requested fold is not in the file."""
        if folds is None:
            return self
        present = sorted(set(self.fold.tolist()))
        missing = [f for f in folds if f not in present]
        if missing:
            raise DataError(
                f"fold {missing[0]} is not in this pairs file, which has folds {present[0]}-{present[-1]}",
                self.source,
                f"choose folds within {present[0]}-{present[-1]} (--folds)",
            )
        return self.take(np.flatnonzero(np.isin(self.fold, folds)))

    def images(self) -> list[Path]:
        """Every distinct image of the pairs, in first-seen order."""
        return list(dict.fromkeys(self.left + self.right))


def lfw_image_path(images_root: Path, name: str, index: int) -> Path:
    return images_root / name / f"{name}_{index:04d}.jpg"


def read_pairs(pairs_file: str | Path, images_root: str | Path, check_files: bool = True) -> PairList:
    """Parse and validate an LFW ``pairs.txt`` (header ``<folds> <n>``, then per fold n same and n different)."""
    pairs_file, images_root = Path(pairs_file), Path(images_root)
    if not pairs_file.is_file():
        raise DataError("pairs file not found", pairs_file, LFW_HELP)
    lines = [ln for ln in read_text(pairs_file, "pairs file").splitlines() if ln.strip()]
    if not lines:
        raise DataError("pairs file is empty", pairs_file)
    try:
        n_folds, per_fold = (int(t) for t in lines[0].split())
    except ValueError:
        raise DataError(f"line 1: bad header {lines[0]!r}; expected '<folds> <pairs per class>'", pairs_file) from None
    expected = n_folds * per_fold * 2
    if len(lines) - 1 != expected:
        raise DataError(f"has {len(lines) - 1} pair lines, header promises {expected}", pairs_file)
    left, right, same, fold, lid, rid = [], [], [], [], [], []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split()
        try:
            if len(fields) == 3:
                a, b = fields[0], fields[0]
                i, j = int(fields[1]), int(fields[2])
            elif len(fields) == 4:
                a, i, b, j = fields[0], int(fields[1]), fields[2], int(fields[3])
            else:
                raise ValueError
        except ValueError:
            raise DataError(
                f"line {lineno}: malformed pair {line!r}; expected 'name i j' or 'name1 i name2 j'", pairs_file
            ) from None
        k = lineno - 2
        is_same = (k % (2 * per_fold)) < per_fold
        if is_same != (len(fields) == 3):
            kind = "same-person" if is_same else "different-person"
            raise DataError(f"line {lineno}: expected a {kind} pair here, got {line!r}", pairs_file)
        pa, pb = lfw_image_path(images_root, a, i), lfw_image_path(images_root, b, j)
        if check_files:
            for p in (pa, pb):
                if not p.is_file():
                    raise DataError(
                        f"line {lineno} refers to a missing image {p}",
                        pairs_file,
                        "check that the pairs file matches the image folder (LFW deep-funneled)",
                    )
        left.append(pa)
        right.append(pb)
        lid.append(a)
        rid.append(b)
        same.append(is_same)
        fold.append(k // (2 * per_fold) + 1)
    return PairList(left, right, np.array(same), np.array(fold), lid, rid, pairs_file)


@dataclass
class LFW:
    """LFW under a data root: ``<root>/lfw/lfw-deepfunneled`` and ``<root>/lfw/pairs.txt``."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.images_root.is_dir():
            raise DataError("LFW image folder not found", self.images_root, LFW_HELP)

    @property
    def images_root(self) -> Path:
        return self.root / LFW_IMAGES

    @property
    def pairs_file(self) -> Path:
        return self.root / LFW_PAIRS

    def pairs(self, folds: list[int] | None = None, pairs_file: str | Path | None = None) -> PairList:
        """View 2 pairs (or another file in the same format) restricted to ``folds``."""
        return read_pairs(pairs_file or self.pairs_file, self.images_root).subset(folds)

    def folder(self, min_images: int = 1) -> FaceFolder:
        return FaceFolder.scan(self.images_root, min_images=min_images)

    def fold_identities(self, folds: list[int]) -> set[str]:
        """People appearing in the given folds (who must never be seen in training for those folds)."""
        pairs = self.pairs(folds)
        return set(pairs.left_identity) | set(pairs.right_identity)
