"""Verification and identification metrics on scores and labels (pure numpy).

Conventions used throughout:

* a verification score is a similarity: higher means "more likely the same person";
* a pair is accepted when ``score >= threshold``; label 1 (or True) means a genuine pair;
* tied scores are never split: they are accepted or rejected together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

VERIFICATION_FARS = (1e-1, 1e-2, 1e-3)


def far_key(prefix: str, far: float) -> str:
    """Metric name for a rate at a false accept rate: ``far_key("tar", 0.01) == "tar@far=1e-2"``."""
    mantissa, exponent = f"{far:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{prefix}@far={mantissa}e{int(exponent)}"


# ---------------------------------------------------------------------------- similarity


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero row stays zero, so its similarity to anything is 0 rather than 0/0.
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of paired rows of ``a`` and ``b`` (both (N, D)); zero rows give 0."""
    ua, ub = _unit_rows(a, "a"), _unit_rows(b, "b")
    if ua.shape != ub.shape:
        raise ValueError(f"paired embeddings need equal shapes, got {ua.shape} and {ub.shape}")
    return np.einsum("nd,nd->n", ua, ub)


def similarity_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` (Na, D) with every row of ``b`` (Nb, D); zero rows give 0."""
    ua, ub = _unit_rows(a, "a"), _unit_rows(b, "b")
    if ua.shape[1] != ub.shape[1]:
        raise ValueError(f"embedding sizes differ: {ua.shape[1]} and {ub.shape[1]}")
    return ua @ ub.T


# ---------------------------------------------------------------------------- verification


def _scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if s.size == 0:
        raise ValueError("no scores")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores hold NaN or infinite values")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1 (1 = same person)")
    return s, y.astype(bool)


def _both_classes(y: np.ndarray) -> None:
    if y.all() or not y.any():
        raise ValueError("need both genuine (1) and impostor (0) pairs")


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points, one per distinct score, from strictest to loosest.

    ``thresholds[i]`` accepts ``score >= thresholds[i]`` and gives ``(fpr[i], tpr[i])``; the first
    point is ``(0, 0)`` at ``+inf``, the last ``(1, 1)``.
    """
    s, y = _scores_labels(scores, labels)
    _both_classes(y)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # Cut only after the last member of each run of equal scores, so ties move together.
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    fpr = np.r_[0.0, fp / fp[-1]]
    tpr = np.r_[0.0, tp / tp[-1]]
    thresholds = np.r_[np.inf, s[last]]
    return fpr, tpr, thresholds


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve; a tied genuine/impostor pair counts one half."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate: where FPR meets FNR, linearly interpolated along the ROC segment that crosses."""
    fpr, tpr, _ = roc_curve(scores, labels)
    # fpr - fnr rises strictly along the curve, from -1 at (0, 0) to +1 at (1, 1).
    d = fpr - (1.0 - tpr)
    i = int(np.argmax(d >= 0))
    if d[i] == 0:
        return float(fpr[i])
    t = -d[i - 1] / (d[i] - d[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    """Largest true accept rate over thresholds whose false accept rate is at most ``far``.

    When ``far`` is below ``1 / n_impostors`` only FAR = 0 qualifies, so this is the TAR of the
    strictest threshold that lets no impostor in (genuine scores above every impostor score); it is
    always defined, but says nothing finer than that resolution.
    """
    _check_far(far)
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(tpr[fpr <= far].max())


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Threshold with the highest accuracy on these pairs.

    Candidates are the midpoints between consecutive distinct scores, plus the nearest floats just
    below the lowest (accept all) and just above the highest (reject all) score. Among equally
    accurate candidates the lowest wins.
    """
    s, y = _scores_labels(scores, labels)
    values, group = np.unique(s, return_inverse=True)
    genuine = np.bincount(group, weights=y, minlength=values.size)
    impostor = np.bincount(group, weights=~y, minlength=values.size)
    # Candidate k accepts values[k:]: correct = genuine at or above k + impostors below k.
    genuine_above = np.r_[np.cumsum(genuine[::-1])[::-1], 0.0]
    impostor_below = np.r_[0.0, np.cumsum(impostor)]
    k = int(np.argmax(genuine_above + impostor_below))
    if k == 0:
        return float(np.nextafter(values[0], -np.inf))
    if k == values.size:
        return float(np.nextafter(values[-1], np.inf))
    return float((values[k - 1] + values[k]) / 2)


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict:
    """LFW protocol: each fold is scored at the best threshold of all the other folds.

    ``folds`` gives each pair's fold id (any ids, at least two distinct). Returns ``accuracy`` (mean
    over folds), ``accuracy_std`` (population std over folds, ddof=0, as the usual LFW code reports),
    and per fold, in ascending id order: ``folds``, ``fold_accuracies``, ``thresholds``.
    """
    s, y = _scores_labels(scores, labels)
    f = np.asarray(folds)
    if f.shape != s.shape:
        raise ValueError(f"folds must give one id per pair, got shape {f.shape} for {s.size} pairs")
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError(f"need at least two folds, got ids {ids.tolist()}")
    accuracies, thresholds = [], []
    for fold in ids:
        test = f == fold
        t = best_threshold(s[~test], y[~test])
        accuracies.append(float(np.mean((s[test] >= t) == y[test])))
        thresholds.append(t)
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "folds": ids.tolist(),
        "fold_accuracies": accuracies,
        "thresholds": thresholds,
    }


def verification_metrics(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict[str, float]:
    """Headline verification figures as plain floats.

    ``threshold_mean`` is a score, not a fraction: keep it out of a record's ``metrics``.
    """
    kfold = kfold_accuracy(scores, labels, folds)
    out = {
        "accuracy": kfold["accuracy"],
        "accuracy_std": kfold["accuracy_std"],
        "auc": roc_auc(scores, labels),
        "eer": eer(scores, labels),
    }
    for far in VERIFICATION_FARS:
        out[far_key("tar", far)] = tar_at_far(scores, labels, far)
    out["threshold_mean"] = float(np.mean(kfold["thresholds"]))
    return out


def merged_verification_metrics(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Figures over several splits scored by different models (AIRD's split A and split B students).

    Each part is (scores, labels, folds). A fold's threshold is chosen on the other folds of its own
    part only (its scores come from the same model); accuracy is the mean over all folds, while AUC,
    EER and TAR@FAR pool every pair.
    """
    fold_acc: list[float] = []
    thresholds: list[float] = []
    for scores, labels, folds in parts:
        k = kfold_accuracy(scores, labels, folds)
        fold_acc += k["fold_accuracies"]
        thresholds += k["thresholds"]
    scores = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    out = {
        "accuracy": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
        "auc": roc_auc(scores, labels),
        "eer": eer(scores, labels),
    }
    for far in VERIFICATION_FARS:
        out[far_key("tar", far)] = tar_at_far(scores, labels, far)
    out["threshold_mean"] = float(np.mean(thresholds))
    return out


# ---------------------------------------------------------------------------- identification


def _correct_rank(
    similarity: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Each probe's rank of its best true match (1 = top) and its top score.

    Ties are pessimistic: a wrong gallery entry scoring the same as the best true match ranks above it.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    p = np.asarray(probe_labels)
    g = np.asarray(gallery_labels)
    if sim.ndim != 2 or sim.shape != (p.size, g.size):
        raise ValueError(f"{name} must be (probes, gallery) = ({p.size}, {g.size}), got shape {sim.shape}")
    if p.size == 0 or g.size == 0:
        raise ValueError(f"{name} is empty: need probes and a gallery")
    if not np.all(np.isfinite(sim)):
        raise ValueError(f"{name} holds NaN or infinite values")
    match = p.reshape(-1, 1) == g.reshape(1, -1)
    missing = int(np.sum(~match.any(axis=1)))
    if missing:
        raise ValueError(
            f"{missing} of {p.size} probes have no gallery entry of their identity; closed-set "
            "ranking needs every probe's identity in the gallery"
        )
    best_true = np.where(match, sim, -np.inf).max(axis=1, keepdims=True)
    rank = 1 + np.sum(~match & (sim >= best_true), axis=1)
    return rank, sim.max(axis=1)


def _check_ranks(ranks: Sequence[int]) -> list[int]:
    out = [int(r) for r in ranks]
    if not out or any(r < 1 or r != k for r, k in zip(out, ranks)):
        raise ValueError(f"ranks must be positive integers, got {list(ranks)}")
    return out


def _check_far(far: float) -> None:
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")


def _unknown_tops(sim_unknown: np.ndarray, n_gallery: int) -> np.ndarray:
    """Top gallery score of each unknown probe, highest first."""
    unknown = np.asarray(sim_unknown, dtype=np.float64)
    if unknown.ndim != 2 or unknown.shape[0] == 0 or unknown.shape[1] != n_gallery:
        raise ValueError(f"sim_unknown must be (unknowns, gallery) = (U > 0, {n_gallery}), got shape {unknown.shape}")
    if not np.all(np.isfinite(unknown)):
        raise ValueError("sim_unknown holds NaN or infinite values")
    return np.sort(unknown.max(axis=1))[::-1]


def _dir(rank: np.ndarray, top: np.ndarray, unknown_tops: np.ndarray, far: float) -> float:
    # The epsilon keeps far * U from flooring one short (0.29 * 100 = 28.999...).
    allowed = math.floor(far * unknown_tops.size + 1e-9)
    if allowed >= unknown_tops.size:
        accepted = np.ones(top.shape, dtype=bool)
    else:
        # Tied unknowns pass together, so t sits just above the first top score that must be rejected.
        accepted = top > unknown_tops[allowed]
    return float(np.mean((rank == 1) & accepted))


def cmc(
    similarity: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray, ranks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Closed-set cumulative match characteristic: ``{"rank1": ..., "rank5": ...}``.

    Rank-k is the fraction of probes with a true match among their k most similar gallery entries
    (ties pessimistic). Raises ValueError when a probe's identity is absent from the gallery.
    """
    ks = _check_ranks(ranks)
    rank, _ = _correct_rank(similarity, probe_labels, gallery_labels, "similarity")
    return {f"rank{k}": float(np.mean(rank <= k)) for k in ks}


def dir_at_far(
    sim_known: np.ndarray,
    known_labels: np.ndarray,
    gallery_labels: np.ndarray,
    sim_unknown: np.ndarray,
    far: float = 1e-2,
) -> float:
    """Open-set detection and identification rate at a false alarm rate.

    The threshold t is the lowest that lets at most ``floor(far * U)`` of the U unknown probes
    through (top score ``>= t``); tied unknowns pass or fail together. DIR is the fraction of known
    probes whose top-1 match is correct (ties pessimistic) and whose top score is ``>= t``.
    """
    _check_far(far)
    rank, top = _correct_rank(sim_known, known_labels, gallery_labels, "sim_known")
    return _dir(rank, top, _unknown_tops(sim_unknown, np.asarray(sim_known).shape[1]), far)


def identification_metrics(
    sim_known: np.ndarray,
    known_labels: np.ndarray,
    gallery_labels: np.ndarray,
    sim_unknown: np.ndarray | None = None,
    ranks: Sequence[int] = (1, 5, 10),
    fars: Sequence[float] = (1e-2,),
) -> dict[str, float]:
    """CMC ranks of the known probes, plus ``dir@far=...`` for each far when unknown probes are given."""
    ks = _check_ranks(ranks)
    for far in fars:
        _check_far(far)
    # Ranked once: the similarity matrices of a real gallery are large.
    rank, top = _correct_rank(sim_known, known_labels, gallery_labels, "sim_known")
    out = {f"rank{k}": float(np.mean(rank <= k)) for k in ks}
    if sim_unknown is not None:
        tops = _unknown_tops(sim_unknown, np.asarray(sim_known).shape[1])
        for far in fars:
            out[far_key("dir", far)] = _dir(rank, top, tops, far)
    return out
