"""One evaluation end to end: align -> (degrade) -> embed -> score -> metrics -> result record."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from aird.data.align import align_settings_for
from aird.data.chips import ChipSet, SkippedImage, align_images
from aird.data.crops import DEFAULT_CROP_JITTER, DetectorCrop, crop_condition, face_boxes
from aird.data.degrade import Degradation
from aird.data.jitter import Jitter
from aird.errors import ConfigError, DataError
from aird.eval.metrics import (
    cosine_similarity,
    identification_metrics,
    kfold_accuracy,
    similarity_matrix,
    verification_metrics,
)
from aird.eval.protocols import lfw_identification, lfw_pairs, orl_identification
from aird.eval.records import environment, make_record
from aird.models.embedder import Embedder, embed_cached, embed_chips
from aird.paths import data_root as resolve_data_root

PAIR_MODES = ("lr-lr", "hr-lr")
SPLITS = {"all": list(range(1, 11)), "A": [1, 2, 3, 4, 5], "B": [6, 7, 8, 9, 10]}


def _check_folds(folds: np.ndarray, skipped: list[SkippedImage] | None = None) -> None:
    """The LFW protocol picks each fold's threshold on the other folds: it needs two or more."""
    present = sorted(set(np.asarray(folds).tolist()))
    if len(present) >= 2:
        return
    if skipped:
        raise DataError(
            f"only {len(present)} fold(s) keep pairs after skipping {len(skipped)} unreadable image(s) "
            f"(first: {skipped[0].path}: {skipped[0].reason}); verification needs two folds to choose thresholds",
            fix="fix or replace the unreadable images, or evaluate more folds (--folds)",
        )
    raise ConfigError(
        f"folds {present}: verification chooses each fold's threshold on the other folds, so it needs at "
        "least two folds; pass e.g. --folds 1-2 (folds=[1, 2])"
    )


def _method(embedder: Embedder, cfg: EvalConfig) -> str:
    return cfg.method or getattr(embedder, "method", None) or "unknown"


def benchmark_name(benchmark: str, cfg: EvalConfig) -> str:
    """``lfw``; ``lfw-crop:<condition>`` when the probes are not aligned chips; ``...-shift:<shifts>`` under a
    capture shift (``grayscale``, ``blur<sigma>``, ``noise<std>``, ``jpeg<quality>``, ``gamma<g>``, joined by
    ``+``). Another condition is another benchmark, so its records never replace the clean ones in a results
    file (``aird eval --grayscale --out results.json`` once overwrote the colour figure)."""
    name = benchmark if cfg.crop == "aligned" else f"{benchmark}-crop:{cfg.crop}"
    shifts = [
        "grayscale" if cfg.grayscale else "",
        f"blur{cfg.blur_sigma:g}" if cfg.blur_sigma else "",
        f"noise{cfg.noise_std:g}" if cfg.noise_std else "",
        f"jpeg{cfg.jpeg_quality}" if cfg.jpeg_quality is not None else "",
        f"gamma{cfg.gamma:g}" if cfg.gamma != 1.0 else "",
    ]
    shifts = [s for s in shifts if s]
    return f"{name}-shift:{'+'.join(shifts)}" if shifts else name


def split_name(folds: list[int]) -> str:
    for name, members in SPLITS.items():
        if sorted(folds) == members:
            return name
    return "folds:" + ",".join(str(f) for f in sorted(folds))


@dataclass
class EvalConfig:
    """Everything that decides a figure; echoed in full in the record's settings."""

    res: int | None = 16  # None: HR chips, no degradation
    pairs: Literal["lr-lr", "hr-lr"] = "lr-lr"
    folds: list[int] | None = None  # verification folds; None: every fold of the pairs file
    down: str = "area"
    up: str = "bicubic"
    blur_sigma: float = 0.0
    noise_std: float = 0.0
    jpeg_quality: int | None = None
    grayscale: bool = False
    gamma: float = 1.0
    seed: int = 0
    chip_size: int = 150
    out_size: int | None = None  # side the LR face is up-sampled to (default: chip_size)
    # How the model was obtained (a record's "method"); None: the embedder's own ``method`` attribute
    # (the teacher's is "teacher", load_embedder sets one for every model), else "unknown", never a guess.
    method: str | None = None
    adapt: str = "off"
    n_unknown: int = 1000
    pairs_file: str | None = None  # another pairs file in LFW's format (default: the data root's pairs.txt)
    on_bad_image: str = "error"  # or "skip": leave unreadable images (and their pairs / probes) out, listed
    # "aligned": LR faces from the aligned chip; "detector": the probe side is cut from the detector's box
    # in the original photo (aird.data.crops); "jittered": from that box jittered per image by
    # ``crop_jitter``, drawn from ``seed``.
    crop: str = "aligned"
    crop_jitter: Jitter = DEFAULT_CROP_JITTER

    def crop_condition(self) -> DetectorCrop | None:
        return crop_condition(self.crop, self.crop_jitter, self.seed)

    def degradation(self) -> Degradation | None:
        if self.res is None:
            return None
        return Degradation(
            res=self.res,
            down=self.down,
            up=self.up,
            out_size=self.out_size,
            blur_sigma=self.blur_sigma,
            noise_std=self.noise_std,
            jpeg_quality=self.jpeg_quality,
            grayscale=self.grayscale,
            gamma=self.gamma,
            seed=self.seed,
        )


@dataclass
class EvalResult:
    record: dict
    scores: np.ndarray | None = None  # verification: one score per pair
    labels: np.ndarray | None = None  # verification: 1 = same person
    folds: np.ndarray | None = None  # verification: each pair's fold
    threshold: float | None = None


def _probe_embeddings(
    embedder: Embedder, chips: ChipSet, deg: Degradation | None, cfg: EvalConfig, progress: bool, desc: str
) -> tuple[np.ndarray, dict]:
    """Embeddings of the probe side (LR, or HR when ``deg`` is None) under ``cfg.crop``, and the crop's
    settings for the record."""
    crop = cfg.crop_condition()
    if crop is None:
        return embed_chips(embedder, chips, deg, progress, desc=desc), {"condition": "aligned"}
    boxes = face_boxes(chips, progress=progress)
    transform = f"crop-{crop.key()}-align-{chips.settings.key()}-" + ("hr" if deg is None else f"lr-{deg.key()}")

    def make_faces(idx: list[int]) -> np.ndarray:
        hr = crop.crops(chips, boxes, idx)
        return hr if deg is None else deg.batch(hr, [chips.digests[i] for i in idx])

    emb = embed_cached(embedder, chips.digests, make_faces, transform, progress=progress, desc=f"{desc}, {cfg.crop}")
    return emb, {**crop.settings(), "boxes_detected": int(boxes.detected.sum()), "fallback_boxes": boxes.n_fallback}


def _settings(
    embedder: Embedder, cfg: EvalConfig, chips: ChipSet, root: Path, started: float, crop: dict, extra: dict
) -> dict:
    deg = cfg.degradation()
    return {
        # An adapted embedder has no cache fingerprint (its output depends on the stream), but its weights have one.
        "model_fingerprint": embedder.fingerprint() or getattr(embedder, "weights_fingerprint", None),
        "adaptation": embedder.settings() if hasattr(embedder, "settings") else {"adapter": "off"},
        "degradation": deg.settings() if deg else None,
        "crop": crop,
        "alignment": {**asdict(chips.settings), "images": len(chips.paths), "no_face_detected": chips.n_fallback},
        "on_bad_image": cfg.on_bad_image,
        "skipped_images": [s.as_dict() for s in chips.skipped],
        "data_root": str(root),
        "seed": cfg.seed,
        **extra,
        "environment": environment(),
        "wall_s": round(time.time() - started, 2),
    }


def run_verification(
    embedder: Embedder,
    cfg: EvalConfig,
    root: str | Path | None = None,
    progress: bool = True,
    gallery_embedder: Embedder | None = None,
) -> EvalResult:
    """LFW View 2 verification on ``cfg.folds`` (threshold for each fold chosen on the others).

    In ``hr-lr`` mode the HR side is embedded by ``gallery_embedder`` (default: the same model), so a
    distilled student can match LR probes against a gallery the HR teacher enrolled.
    """
    if cfg.pairs not in PAIR_MODES:
        raise ValueError(f"unknown pair mode {cfg.pairs!r}; choose from {list(PAIR_MODES)}")
    started = time.time()
    deg = cfg.degradation()  # checks every degradation and crop setting before any work
    cfg.crop_condition()
    root = resolve_data_root(root)
    pairs = lfw_pairs(root, cfg.folds, cfg.pairs_file)
    _check_folds(pairs.fold)
    chips = align_images(
        pairs.images(), align_settings_for("lfw", cfg.chip_size), progress=progress, on_bad_image=cfg.on_bad_image
    )
    index = chips.index()
    n_listed = len(pairs)
    if chips.skipped:
        pairs = pairs.take([k for k, (a, b) in enumerate(zip(pairs.left, pairs.right)) if a in index and b in index])
        _check_folds(pairs.fold, skipped=chips.skipped)
    folds = sorted(set(pairs.fold.tolist()))
    left = np.array([index[p] for p in pairs.left])
    right = np.array([index[p] for p in pairs.right])
    probe, crop = _probe_embeddings(embedder, chips, deg, cfg, progress, desc=f"embedding {cfg.res or 'HR'} px")
    hr_model = gallery_embedder or embedder
    # hr-lr: the gallery side is the enrolment photo, aligned, whatever the probes' crop.
    gallery = (
        probe if (deg is None or cfg.pairs == "lr-lr") else embed_chips(hr_model, chips, None, progress, "embedding HR")
    )
    scores = cosine_similarity(gallery[left], probe[right])
    labels = pairs.same.astype(int)
    metrics = verification_metrics(scores, labels, pairs.fold)
    threshold = metrics.pop("threshold_mean", None)
    record = make_record(
        benchmark=benchmark_name("lfw", cfg),
        task="verification",
        model=embedder.name,
        method=_method(embedder, cfg),
        adapt=cfg.adapt,
        res=cfg.res or cfg.chip_size,
        pairs=cfg.pairs if deg else "hr-hr",
        split=split_name(folds) if cfg.pairs_file is None else f"custom:{Path(cfg.pairs_file).name}",
        n=len(pairs),
        metrics=metrics,
        settings=_settings(
            embedder,
            cfg,
            chips,
            root,
            started,
            crop,
            {
                "folds": folds,
                "gallery_model": hr_model.name if cfg.pairs == "hr-lr" else None,
                "pairs_file": str(cfg.pairs_file or root / "lfw/pairs.txt"),
                "threshold_mean": threshold,
                # so that any two records of the same pairs can be compared paired over the folds
                "fold_accuracies": kfold_accuracy(scores, labels, pairs.fold)["fold_accuracies"],
                "pairs_dropped": n_listed - len(pairs),  # pairs with a skipped image
                "score": "cosine",
            },
        ),
    )
    return EvalResult(record, scores, labels, pairs.fold, threshold)


def run_identification(
    embedder: Embedder,
    benchmark: str,
    cfg: EvalConfig,
    root: str | Path | None = None,
    progress: bool = True,
    gallery_embedder: Embedder | None = None,
) -> EvalResult:
    """Closed-set CMC (and open-set DIR where the protocol has unknown probes): HR gallery, LR probes."""
    started = time.time()
    deg = cfg.degradation()  # checks every degradation and crop setting before any work
    cfg.crop_condition()
    root = resolve_data_root(root)
    if benchmark == "lfw":
        split = lfw_identification(root, n_unknown=cfg.n_unknown, seed=cfg.seed)
    elif benchmark == "orl":
        split = orl_identification(root)
    else:
        raise ValueError(f"unknown identification benchmark {benchmark!r}; choose from ['lfw', 'orl']")
    chips = align_images(
        split.paths, align_settings_for(benchmark, cfg.chip_size), progress=progress, on_bad_image=cfg.on_bad_image
    )
    n_listed = len(split.probes)
    split = split.without_missing(chips.index())
    if chips.skipped and not len(split.probes):
        raise DataError(
            f"no probe left after skipping {len(chips.skipped)} unreadable image(s) "
            f"(first: {chips.skipped[0].path}: {chips.skipped[0].reason})",
            fix="fix or replace the unreadable images",
        )
    labels = np.array(split.labels)
    hr_model = gallery_embedder or embedder
    hr = embed_chips(hr_model, chips, None, progress, desc="embedding HR")
    if deg is None and cfg.crop_condition() is None:
        lr, crop = hr, {"condition": "aligned"}
    else:
        lr, crop = _probe_embeddings(embedder, chips, deg, cfg, progress, desc=f"embedding {cfg.res or 'HR'} px")
    gallery = hr[split.gallery]
    sim_known = similarity_matrix(lr[split.probes], gallery)
    sim_unknown = similarity_matrix(lr[split.unknown], gallery) if len(split.unknown) else None
    metrics = identification_metrics(sim_known, labels[split.probes], labels[split.gallery], sim_unknown)
    record = make_record(
        benchmark=benchmark_name(benchmark, cfg),
        task="identification",
        model=embedder.name,
        method=_method(embedder, cfg),
        adapt=cfg.adapt,
        res=cfg.res or cfg.chip_size,
        pairs=None,
        split="all",
        n=len(split.probes),
        metrics=metrics,
        settings=_settings(
            embedder,
            cfg,
            chips,
            root,
            started,
            crop,
            {
                "protocol": split.describe(),
                "gallery_model": hr_model.name,
                "probes_dropped": n_listed - len(split.probes),  # skipped, or their person's gallery image was
                "score": "cosine",
            },
        ),
    )
    return EvalResult(record)
