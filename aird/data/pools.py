"""Training pools of the user's own faces, beside the built-in sets (``data.pools`` in an experiment config).

A pool is a mapping in the config, e.g. ``{kind: identities, path: /data/casia, aligned: false}``:

- ``kind``: ``identities`` (one sub-folder per person, the CASIA-WebFace layout), ``unlabelled`` (a
  folder of faces, searched recursively; label -1), or ``recordio`` (insightface's ``train.rec`` +
  ``train.idx``, labelled by each record's class).
- ``path``: the folder (for ``recordio``: the folder holding ``train.rec`` and ``train.idx``, or the
  ``.rec`` file with its ``.idx`` beside it). A relative path is read under the data root.
- ``aligned``: required. ``false``: photos, detected and aligned by dlib like LFW's; ``true``: already
  aligned face chips (the face fills the image), re-cut to dlib's chip the same way, with the whole
  chip as the face box where the detector finds none (``aird.data.align``, docs/data.md).
- ``name``: how reports and identity labels name the pool (``<name>:<person>``); default: the folder's name.
- ``max_images``: keep only the first that many images, in listing order (person by person).
- ``on_bad_image``: ``error`` (default) stops at an unreadable image naming it; ``skip`` leaves it out
  and reports it.

Specs are checked when the config loads (``PoolSpec.checked``), the images listed when the training set
is built (``pool_items``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from aird.config import require
from aird.data.chips import ON_BAD_IMAGE
from aird.data.folders import FaceFolder, natural_key
from aird.data.images import is_image_file
from aird.data.recordio import IDX_FILE, REC_FILE, RecordImage, pack_files, read_pack
from aird.errors import ConfigError, DataError

BUILTIN_POOLS = ("lfw", "celeba", "utkface")
POOL_KINDS = ("identities", "unlabelled", "recordio")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
KIND_HELP = (
    "identities (one sub-folder per person), unlabelled (a folder of faces) or recordio "
    f"(insightface's {REC_FILE} + {IDX_FILE})"
)
ALIGNED_HELP = (
    "true when the images are already-aligned face chips (the face fills the image, as in insightface's "
    "112x112 packs), false when they are photos to detect and align"
)


@dataclass(frozen=True)
class PoolSpec:
    """A pool of the user's own faces; see the module notes for each key."""

    kind: str
    path: str
    aligned: bool | None = None  # required; None only so that a missing value gets its own message
    name: str | None = None
    max_images: int | None = None
    on_bad_image: str = "error"

    def checked(self, where: str, root: Path) -> "PoolSpec":
        """This spec validated, its path made absolute (a relative one under ``root``, the data root) and
        its name filled in; ConfigError naming ``<where>.<key>`` and the fix."""
        require(f"{where}.kind", self.kind, self.kind in POOL_KINDS, f"one of {KIND_HELP}")
        if self.aligned is None:
            raise ConfigError(f"{where}.aligned is required: {ALIGNED_HELP}")
        require(f"{where}.max_images", self.max_images, self.max_images is None or self.max_images >= 1, ">= 1 or null")
        require(f"{where}.on_bad_image", self.on_bad_image, self.on_bad_image in ON_BAD_IMAGE, f"one of {ON_BAD_IMAGE}")
        require(f"{where}.path", self.path, bool(self.path.strip()), "a folder")
        path = Path(self.path).expanduser()
        path = path if path.is_absolute() else Path(root) / path
        where_path = f"{where}.path: {path}" + (
            "" if Path(self.path).expanduser().is_absolute() else f" (under the data root {root})"
        )
        if self.kind == "recordio":
            rec, idx = pack_files(path)
            if not rec.is_file():
                raise ConfigError(
                    f"{where_path}: {rec.name} not found -- point path at the folder holding {REC_FILE} and "
                    f"{IDX_FILE}, or at the .rec file"
                )
            if not idx.is_file():
                raise ConfigError(
                    f"{where_path}: {idx.name} not found beside {rec.name} -- the reader needs the pack's index "
                    "(key<TAB>offset lines); it ships with insightface's packs"
                )
        elif not path.is_dir():
            raise ConfigError(
                f"{where_path}: folder not found -- give an existing folder (absolute, or relative to the data root)"
            )
        elif self.kind == "identities" and not any(p.is_dir() for p in path.iterdir()):
            raise ConfigError(
                f"{where_path}: holds no sub-folders -- an identities pool has one sub-folder per person; "
                "a flat folder of faces is kind: unlabelled"
            )
        name = self.name if self.name is not None else default_name(self.kind, path)
        why = None
        if name in BUILTIN_POOLS:
            why = "is a built-in pool's name"
        elif not _NAME.fullmatch(name):
            why = "is not a plain name"
        if why:
            origin = "" if self.name is not None else " (the default, from the path)"
            raise ConfigError(
                f"{where}.name {name!r}{origin} {why} -- set name: to letters, digits, '_', '-', '.', other than "
                f"{', '.join(BUILTIN_POOLS)}"
            )
        return replace(self, path=str(path), name=name)


def default_name(kind: str, path: Path) -> str:
    """The folder's name; for a pack given as ``<folder>/train.rec``, the folder's."""
    if kind == "recordio" and path.suffix == ".rec" and path.stem == "train":
        return path.parent.name
    return path.stem if kind == "recordio" and path.suffix == ".rec" else path.name


def unlabelled_images(root: Path) -> list[Path]:
    """Every image under ``root`` (recursively, hidden files and folders left out), in natural order."""
    if not root.is_dir():
        raise DataError("face folder not found", root)
    paths = [
        p
        for p in root.rglob("*")
        if p.is_file() and is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if not paths:
        raise DataError("no face images found", root, "expected image files (.jpg, .png, ...) in the folder")
    return sorted(paths, key=lambda p: tuple(natural_key(Path(part)) for part in p.relative_to(root).parts))


def pool_items(spec: PoolSpec) -> tuple[list[Path | RecordImage], list[str | None]]:
    """The images of a (checked) pool and their identity labels (``<name>:<person>``; None: unlabelled)."""
    root, name, limit = Path(spec.path), spec.name, spec.max_images
    if spec.kind == "identities":
        items = FaceFolder.scan(root).items[:limit]
        return [it.path for it in items], [f"{name}:{it.identity}" for it in items]
    if spec.kind == "unlabelled":
        paths = unlabelled_images(root)[:limit]
        return list(paths), [None] * len(paths)
    if spec.kind == "recordio":
        images, labels = read_pack(root, limit)
        return list(images), [f"{name}:{label}" for label in labels]
    raise ConfigError(f"unknown pool kind {spec.kind!r}; choose {KIND_HELP}")
