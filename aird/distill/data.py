"""The identity-disjoint training set of a split, with the frozen teacher's features cached.

Split A tests on LFW folds 1-5, so it trains on every LFW image whose person is not in folds 1-5
(split B likewise for folds 6-10; split "all" on no person of pairs.txt at all). Extra pools (CelebA,
labelled; UTKFace, unlabelled; the user's own, ``aird.data.pools``) pass a leak filter first: an extra
image whose teacher embedding is close to any image of a test person is dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aird.data.align import align_settings_for
from aird.data.chips import ImageSource, align_images
from aird.data.extra import celeba_items, utkface_items
from aird.data.lfw import LFW
from aird.data.pools import BUILTIN_POOLS, PoolSpec, pool_items
from aird.errors import ConfigError, DataError
from aird.eval.metrics import similarity_matrix
from aird.models.embedder import Embedder, embed_chips

# "all" holds out every person of pairs.txt: the student that ships, fair on all 6,000 pairs.
SPLIT_TEST_FOLDS = {"A": [1, 2, 3, 4, 5], "B": [6, 7, 8, 9, 10], "all": list(range(1, 11))}
# The training set keeps every HR chip in memory; a pool list that cannot fit is refused before any
# image is aligned (a 5.8M-face pack needs about 390 GB), with the setting that makes it fit.
MEMORY_SHARE = 0.8


@dataclass
class TrainingSet:
    chips: np.ndarray  # (N, S, S, 3) uint8 HR chips
    labels: np.ndarray  # (N,) identity index; -1 = unlabelled
    digests: list[str]  # content hash of each source image: the sample key of its degradations
    teacher: np.ndarray  # (N, d) f_t of each HR chip
    teacher_flip: np.ndarray  # (N, d) f_t of the mirrored chip (targets for flip augmentation)
    identities: list[str]
    report: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.identities)


def subsample(data: TrainingSet, share: float, seed: int) -> TrainingSet:
    """A seeded ``share`` of ``data``'s faces, drawn alike from every pool, the same in every process.

    For data-scaling studies: the faces are drawn, not the identities, so a labelled person may keep
    fewer images or none; people left without a face leave the classifier and the rest are renumbered.
    """
    if share == 1:
        return data
    n = len(data)
    keep = np.sort(np.random.default_rng(seed).choice(n, size=max(1, round(share * n)), replace=False))
    old = data.labels[keep]
    present = np.unique(old[old >= 0])
    renumber = np.full(max(data.num_classes, 1), -1, dtype=np.int64)
    renumber[present] = np.arange(len(present))
    labels = np.where(old >= 0, renumber[np.maximum(old, 0)], -1)
    report = dict(data.report)
    report.update(
        images=len(keep),
        identities=len(present),
        unlabelled=int((labels < 0).sum()),
        subsample={"share": share, "seed": seed, "images_before": n, "identities_before": data.num_classes},
    )
    return TrainingSet(
        chips=data.chips[keep],
        labels=labels,
        digests=[data.digests[i] for i in keep],
        teacher=data.teacher[keep],
        teacher_flip=data.teacher_flip[keep],
        identities=[data.identities[i] for i in present],
        report=report,
    )


def _pool_items(root: Path, pool: str | PoolSpec, split: str) -> tuple[list[ImageSource], list[str | None]]:
    if isinstance(pool, PoolSpec):
        return pool_items(pool)
    if pool == "lfw":
        lfw = LFW(root)
        test_people = lfw.fold_identities(SPLIT_TEST_FOLDS[split])
        items = [it for it in lfw.folder().items if it.identity not in test_people]
        return [it.path for it in items], [it.identity for it in items]
    if pool == "celeba":
        return celeba_items(root)
    if pool == "utkface":
        paths = utkface_items(root)
        return paths, [None] * len(paths)
    raise ConfigError(f"unknown training pool {pool!r}; choose from {list(BUILTIN_POOLS)}")


def embeddings_of_test_people(root: Path, split: str, teacher: Embedder, chip_size: int, progress: bool) -> np.ndarray:
    """HR teacher embeddings of every image of every person in the split's test folds."""
    lfw = LFW(root)
    people = lfw.fold_identities(SPLIT_TEST_FOLDS[split])
    paths = [it.path for it in lfw.folder().items if it.identity in people]
    chips = align_images(paths, align_settings_for("lfw", chip_size), progress=progress, desc="aligning test people")
    return embed_chips(teacher, chips, None, progress, desc="teacher on test people")


def leak_filter(extra: np.ndarray, test: np.ndarray, threshold: float, chunk: int = 2048) -> np.ndarray:
    """Keep-mask of extra images whose nearest test-person embedding stays below ``threshold`` (cosine)."""
    nearest = (
        np.concatenate([similarity_matrix(extra[i : i + chunk], test).max(axis=1) for i in range(0, len(extra), chunk)])
        if len(extra)
        else np.zeros(0)
    )
    return nearest < threshold


def memory_bytes() -> int:
    """Physical memory of this machine (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_fits_in_memory(counts: dict[str, int], chip_size: int) -> None:
    """DataError when the chips of every listed image would not fit in memory, naming the largest pool."""
    need = sum(counts.values()) * chip_size * chip_size * 3
    have = memory_bytes()
    if have and need > MEMORY_SHARE * have:
        largest = max(counts, key=counts.__getitem__)
        raise DataError(
            f"the training pools list {sum(counts.values()):,} images, whose {chip_size} px chips need "
            f"{need / 1e9:.0f} GB of memory, more than {MEMORY_SHARE:.0%} of this machine's {have / 1e9:.0f} GB "
            f"(the largest pool, {largest!r}, lists {counts[largest]:,})",
            None,
            "set max_images: on the largest pools (docs/data.md)",
        )


def build_training_set(
    root: Path,
    split: str,
    teacher: Embedder,
    pools: list[str | PoolSpec] | tuple[str | PoolSpec, ...] = ("lfw",),
    leak_threshold: float = 0.95,
    chip_size: int = 150,
    progress: bool = True,
) -> TrainingSet:
    """The split's training set from ``pools``: built-in names or ``PoolSpec``s (checked again here, so a
    spec built in code is validated too). Every pool but LFW passes the leak filter."""
    if split not in SPLIT_TEST_FOLDS:
        raise ConfigError(f"unknown split {split!r}; choose from {sorted(SPLIT_TEST_FOLDS)}")
    report: dict = {"split": split, "test_folds": SPLIT_TEST_FOLDS[split], "pools": {}}
    pools = [p.checked(f"pools[{i}]", root) if isinstance(p, PoolSpec) else p for i, p in enumerate(pools)]
    pool_names = [_pool_name(pool) for pool in pools]
    if len(set(pool_names)) != len(pool_names):
        raise ConfigError(f"pools {pool_names} name a pool twice: give each pool its own name")
    # Every pool is listed before any is aligned, so a pool list too large for memory fails in seconds.
    listed = {name: _pool_items(root, pool, split) for name, pool in zip(pool_names, pools)}
    check_fits_in_memory({name: len(items[0]) for name, items in listed.items()}, chip_size)
    test_emb = None
    parts = []
    for name, pool in zip(pool_names, pools):
        paths, names = listed[name]
        custom = isinstance(pool, PoolSpec)
        # a pool of the user's photos falls back to LFW's box (a face central in the photo) where none is found
        settings = align_settings_for("lfw" if custom else name, chip_size, aligned=custom and bool(pool.aligned))
        chips = align_images(
            paths,
            settings,
            progress=progress,
            desc=f"aligning {name}",
            on_bad_image=pool.on_bad_image if custom else "error",
        )
        if chips.skipped:  # the kept images' labels, in the chips' order
            label_of = dict(zip(paths, names))
            names = [label_of[p] for p in chips.paths]
        f_t = embed_chips(teacher, chips, None, progress, desc=f"teacher on {name}")
        keep = np.ones(len(chips.paths), dtype=bool)
        if pool != "lfw":
            if test_emb is None:
                test_emb = embeddings_of_test_people(root, split, teacher, chip_size, progress)
            keep = leak_filter(f_t, test_emb, leak_threshold)
        entry: dict = {"kind": pool.kind, "path": pool.path, "aligned": pool.aligned} if custom else {}
        entry.update(
            images=len(paths),
            kept=int(keep.sum()),
            dropped_by_leak_filter=int((~keep).sum()),
            no_face_detected=chips.n_fallback,
        )
        if custom:
            entry["skipped"] = len(chips.skipped)
            if chips.skipped:
                entry["skipped_images"] = [s.as_dict() for s in chips.skipped[:20]]  # the first 20
        report["pools"][name] = entry
        idx = np.flatnonzero(keep)
        f_flip = embed_chips(teacher, chips, None, progress, desc=f"teacher on mirrored {name}", flip=True)
        parts.append(
            (chips.chips[idx], [names[i] for i in idx], [chips.digests[i] for i in idx], f_t[idx], f_flip[idx])
        )
    identities = sorted({n for part in parts for n in part[1] if n is not None})
    index = {name: i for i, name in enumerate(identities)}
    labels = np.array([index[n] if n is not None else -1 for part in parts for n in part[1]], dtype=np.int64)
    report.update(
        images=int(len(labels)),
        identities=len(identities),
        unlabelled=int((labels < 0).sum()),
        leak_threshold=leak_threshold,
    )
    return TrainingSet(
        chips=np.concatenate([p[0] for p in parts]),
        labels=labels,
        digests=[d for p in parts for d in p[2]],
        teacher=np.concatenate([p[3] for p in parts]),
        teacher_flip=np.concatenate([p[4] for p in parts]),
        identities=identities,
        report=report,
    )


def _pool_name(pool: str | PoolSpec) -> str:
    return pool.name if isinstance(pool, PoolSpec) else pool
