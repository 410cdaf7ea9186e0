"""Extra training faces: CelebA (labelled, people disjoint from LFW) and UTKFace (unlabelled)."""

from __future__ import annotations

from pathlib import Path

from aird.data.images import is_image_file
from aird.errors import DataError
from aird.io import read_text

CELEBA_DIR = "celeba-aligned"
UTKFACE_DIR = "utkface/crop_part1"


def celeba_items(root: str | Path) -> tuple[list[Path], list[str]]:
    """CelebA images and their identities from ``identity.txt`` (``image identity`` lines)."""
    base = Path(root) / CELEBA_DIR
    table = base / "identity.txt"
    if not table.is_file():
        raise DataError("CelebA identity table not found", table, "expected <root>/celeba-aligned/identity.txt")
    paths, labels = [], []
    for lineno, line in enumerate(read_text(table, "CelebA identity table").splitlines(), start=1):
        fields = line.split()
        if not fields or fields == ["image", "identity"]:
            continue
        if len(fields) != 2:
            raise DataError(f"line {lineno}: expected 'image identity', got {line!r}", table)
        path = base / "images" / fields[0]
        if not path.is_file():
            raise DataError(f"line {lineno} refers to a missing image {path}", table)
        paths.append(path)
        labels.append(f"celeba:{fields[1]}")
    if not paths:
        raise DataError("CelebA identity table lists no images", table)
    return paths, labels


def utkface_items(root: str | Path) -> list[Path]:
    base = Path(root) / UTKFACE_DIR
    if not base.is_dir():
        raise DataError("UTKFace folder not found", base, "expected <root>/utkface/crop_part1/*.jpg")
    paths = sorted(p for p in base.iterdir() if p.is_file() and is_image_file(p))
    if not paths:
        raise DataError("UTKFace folder holds no images", base)
    return paths
