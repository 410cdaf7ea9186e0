"""Figures from scores and labels, written atomically as PNG.

Matplotlib is imported inside each function and drawn on an Agg canvas of its own (no pyplot), so
importing aird.eval stays cheap and never changes the caller's matplotlib backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aird.eval.metrics import roc_auc, roc_curve
from aird.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ScoresLabels = tuple[np.ndarray, np.ndarray]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        # The temporary name ends in .tmp, so the format cannot come from the suffix.
        fig.savefig(tmp, format="png", dpi=120)
    return path


def plot_roc(curves: dict[str, ScoresLabels], path: str | Path, title: str = "ROC", far_min: float = 1e-3) -> Path:
    """ROC curves (label -> (scores, labels)) on a log FAR axis from ``far_min`` to 1, AUC in the legend.

    Points with a FAR below ``far_min`` (FAR = 0 included) are drawn on the left edge.
    """
    if not curves:
        raise ValueError("no curves to plot")
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot()
    for label, (scores, labels) in curves.items():
        fpr, tpr, _ = roc_curve(scores, labels)
        ax.plot(np.maximum(fpr, far_min), tpr, label=f"{label} (AUC {roc_auc(scores, labels):.3f})")
    chance = np.logspace(math.log10(far_min), 0, 50)
    ax.plot(chance, chance, linestyle=":", color="grey", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(far_min, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_score_distributions(
    groups: dict[str, ScoresLabels],
    path: str | Path,
    title: str = "Score distributions",
    thresholds: dict[str, float] | None = None,
) -> Path:
    """One panel per group (name -> (scores, labels)): genuine and impostor score histograms,
    with a vertical line at ``thresholds[name]`` where given."""
    if not groups:
        raise ValueError("no score groups to plot")
    thresholds = thresholds or {}
    unknown = sorted(set(thresholds) - set(groups))
    if unknown:
        raise ValueError(f"thresholds for groups that are not plotted: {unknown}")
    cols = min(len(groups), 3)
    rows = math.ceil(len(groups) / cols)
    fig = _figure(4.0 * cols, 3.2 * rows)
    for i, (name, (scores, labels)) in enumerate(groups.items()):
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels).astype(bool)
        if s.ndim != 1 or s.size == 0 or y.shape != s.shape:
            raise ValueError(f"group {name!r}: scores and labels must be 1-D, non-empty and of equal length")
        ax = fig.add_subplot(rows, cols, i + 1)
        # Shared bins so the two histograms are comparable bar for bar.
        bins = np.histogram_bin_edges(s, bins=40)
        for kind, mask in (("genuine", y), ("impostor", ~y)):
            if mask.any():
                ax.hist(s[mask], bins=bins, alpha=0.6, density=True, label=f"{kind} ({int(mask.sum())})")
        if name in thresholds:
            ax.axvline(
                thresholds[name], color="black", linestyle="--", linewidth=1, label=f"threshold {thresholds[name]:.3f}"
            )
        ax.set_title(name)
        ax.set_xlabel("score")
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def plot_layer_statistics(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str = "Batch-norm statistics per layer",
) -> Path:
    """One line per label across layers (input side first): channel-averaged mean (top) and variance
    (bottom, log scale) of each BN layer's input."""
    fig = _figure(10, 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for (label, (means, variances)), marker in zip(series.items(), "os^vD*"):
        top.plot(means, f"{marker}-", label=label, markersize=4)
        bottom.plot(variances, f"{marker}-", label=label, markersize=4)
    top.set_ylabel("channel-averaged mean")
    bottom.set_ylabel("channel-averaged variance")
    bottom.set_yscale("log")
    bottom.set_xlabel("batch-norm layer (input side first)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=8)
    top.set_title(title)
    return _save(fig, path)
