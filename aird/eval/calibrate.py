"""Verification thresholds at named false accept rates, from every impostor pair of a labelled face set.

LFW's 6,000 pairs hold 3,000 impostors: a FAR of 1e-3 would rest on three of them. Scoring every
cross-person pair among the ~7,700 images of the pairs.txt people gives ~30 million impostors, so
thresholds down to 1e-3 (and below) are measured, not guessed.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from aird.eval.metrics import far_key

CALIBRATION_FARS = (1e-2, 1e-3)


def far_label(far: float) -> str:
    """``1e-3`` for 0.001: the key of a FAR in thresholds and model cards."""
    return far_key("", far).split("=")[1]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def far_thresholds(
    gallery: np.ndarray,
    probe: np.ndarray,
    identities: Sequence[str],
    fars: Sequence[float] = CALIBRATION_FARS,
    symmetric: bool = True,
    decimals: int = 5,
    chunk: int = 1024,
) -> dict:
    """Cosine thresholds accepting at most ``far`` of the impostor pairs (a pair is accepted at score >= t).

    Row i of ``gallery`` and of ``probe`` embed the same face (e.g. the teacher on its HR chip and the
    student on its LR version); ``identities[i]`` names its person. With ``symmetric`` (both sides by the
    same model on the same input: lr-lr, hr-hr) each unordered pair i < j is scored once; otherwise every
    ordered pair i != j (hr-lr: i's HR face against j's LR face). A face is never paired with itself.

    Each threshold is rounded up to ``decimals`` (rounding up keeps the FAR at most ``far``). Returns
    ``{"impostor_pairs", "genuine_pairs", "1e-2": {"threshold", "far", "tar"}, ...}`` with the FAR
    and TAR measured at the rounded threshold on these pairs.
    """
    g, p = _unit(gallery), _unit(probe)
    if g.shape != p.shape or g.shape[0] != len(identities):
        raise ValueError(f"gallery {g.shape}, probe {p.shape} and {len(identities)} identities must agree")
    for far in fars:
        if not 0.0 < far < 1.0:
            raise ValueError(f"far must lie in (0, 1), got {far}")
    _, ids = np.unique(np.asarray(identities), return_inverse=True)
    n = len(ids)
    counts = np.bincount(ids)
    n_genuine = int((counts * (counts - 1)).sum()) // (2 if symmetric else 1)
    n_impostor = (n * (n - 1)) // (2 if symmetric else 1) - n_genuine
    if n_impostor == 0:
        raise ValueError("no impostor pairs: the faces need at least two people")
    # The highest impostor scores decide every threshold: keep the top (largest far) of them, plus one.
    keep = min(n_impostor, math.floor(max(fars) * n_impostor) + 1)
    top = np.empty(0, np.float32)
    genuine = []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        sim = g[rows] @ p.T
        allowed = rows[:, None] < np.arange(n)[None, :] if symmetric else rows[:, None] != np.arange(n)[None, :]
        same = ids[rows][:, None] == ids[None, :]
        genuine.append(sim[allowed & same])
        imp = sim[allowed & ~same]
        top = np.concatenate([top, imp])
        if top.size > keep:
            top = np.partition(top, top.size - keep)[-keep:]
    top = np.sort(top)[::-1].astype(np.float64)
    genuine_scores = np.concatenate(genuine).astype(np.float64) if genuine else np.zeros(0)
    out: dict = {"impostor_pairs": int(n_impostor), "genuine_pairs": int(n_genuine)}
    scale = 10.0**decimals
    for far in fars:
        k = math.floor(far * n_impostor + 1e-9)  # impostors that may be accepted; top holds at least k + 1
        # Just above the (k+1)-th highest impostor score: at most k impostors reach it, ties included.
        t = math.ceil(np.nextafter(top[k], np.inf) * scale) / scale
        while t <= top[k]:  # float rounding of t * scale
            t = (round(t * scale) + 1) / scale
        out[far_label(far)] = {
            "threshold": t,
            "far": float((top >= t).sum() / n_impostor),
            **({"tar": float((genuine_scores >= t).mean())} if genuine_scores.size else {}),
        }
    return out
