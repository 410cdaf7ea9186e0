"""Face folders: one sub-folder per identity, images inside."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aird.data.images import IMAGE_SUFFIXES, is_image_file
from aird.errors import DataError


def natural_key(path: Path) -> tuple:
    """Sort "2.pgm" before "10.pgm" (ORL numbers its images without zero padding)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


@dataclass(frozen=True)
class FaceItem:
    path: Path
    identity: str


@dataclass
class FaceFolder:
    """All images of a face folder, sorted by identity then file name (stable across machines)."""

    root: Path
    items: list[FaceItem]

    @classmethod
    def scan(cls, root: str | Path, min_images: int = 1, allow_empty_identities: bool = False) -> "FaceFolder":
        root = Path(root)
        if not root.is_dir():
            raise DataError("face folder not found", root, "pass a folder with one sub-folder per identity")
        items: list[FaceItem] = []
        empty: list[str] = []
        for person in sorted((p for p in root.iterdir() if p.is_dir()), key=natural_key):
            files = sorted((f for f in person.iterdir() if f.is_file() and is_image_file(f)), key=natural_key)
            if not files:
                empty.append(person.name)
                continue
            if len(files) >= min_images:
                items.extend(FaceItem(f, person.name) for f in files)
        if empty and not allow_empty_identities:
            raise DataError(
                f"identity folder has no images ({', '.join(IMAGE_SUFFIXES)})",
                root / empty[0],
                f"add images or remove the folder ({len(empty)} empty identity folder(s) in all)",
            )
        if not items:
            raise DataError("no face images found", root, "expected <root>/<identity>/<image>.jpg|png|pgm")
        return cls(root, items)

    @property
    def identities(self) -> list[str]:
        return sorted({it.identity for it in self.items})

    def by_identity(self) -> dict[str, list[FaceItem]]:
        groups: dict[str, list[FaceItem]] = {}
        for it in self.items:
            groups.setdefault(it.identity, []).append(it)
        return groups

    def __len__(self) -> int:
        return len(self.items)
