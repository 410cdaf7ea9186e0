"""The identity-disjoint training set of a split, with the frozen teacher's features cached.

Split A tests on LFW folds 1-5, so it trains on every LFW image whose person is not in folds 1-5
(split B likewise for folds 6-10; split "all" on no person of pairs.txt at all). Extra pools (CelebA, labelled; UTKFace, unlabelled) pass a leak
filter first: an extra image whose teacher embedding is close to any image of a test person is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.data.extra import celeba_items, utkface_items
from aird.data.lfw import LFW
from aird.errors import ConfigError
from aird.eval.metrics import similarity_matrix
from aird.models.embedder import Embedder, embed_chips

# "all" holds out every person of pairs.txt: the student that ships, fair on all 6,000 pairs.
SPLIT_TEST_FOLDS = {"A": [1, 2, 3, 4, 5], "B": [6, 7, 8, 9, 10], "all": list(range(1, 11))}
POOLS = ("lfw", "celeba", "utkface")


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


def _pool_items(root: Path, pool: str, split: str) -> tuple[list[Path], list[str | None]]:
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
    raise ConfigError(f"unknown training pool {pool!r}; choose from {list(POOLS)}")


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


def build_training_set(
    root: Path,
    split: str,
    teacher: Embedder,
    pools: list[str] | tuple[str, ...] = ("lfw",),
    leak_threshold: float = 0.95,
    chip_size: int = 150,
    progress: bool = True,
) -> TrainingSet:
    if split not in SPLIT_TEST_FOLDS:
        raise ConfigError(f"unknown split {split!r}; choose from {sorted(SPLIT_TEST_FOLDS)}")
    report: dict = {"split": split, "test_folds": SPLIT_TEST_FOLDS[split], "pools": {}}
    test_emb = None
    parts = []
    for pool in pools:
        paths, names = _pool_items(root, pool, split)
        chips = align_images(paths, align_settings_for(pool, chip_size), progress=progress, desc=f"aligning {pool}")
        f_t = embed_chips(teacher, chips, None, progress, desc=f"teacher on {pool}")
        keep = np.ones(len(paths), dtype=bool)
        if pool != "lfw":
            if test_emb is None:
                test_emb = embeddings_of_test_people(root, split, teacher, chip_size, progress)
            keep = leak_filter(f_t, test_emb, leak_threshold)
        report["pools"][pool] = {
            "images": len(paths),
            "kept": int(keep.sum()),
            "dropped_by_leak_filter": int((~keep).sum()),
            "no_face_detected": chips.n_fallback,
        }
        idx = np.flatnonzero(keep)
        f_flip = embed_chips(teacher, chips, None, progress, desc=f"teacher on mirrored {pool}", flip=True)
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
