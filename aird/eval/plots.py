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


def plot_training_curves(
    curves: dict[str, dict[str, Sequence[float]]],
    path: str | Path,
    title: str = "Training loss per epoch",
) -> Path:
    """One panel per run (label -> {term: per-epoch mean}): each loss term against the epoch, each on its
    own scale relative to its first epoch (1 = where it started), so that terms of different sizes can be
    read side by side and a flat line at the end means that term stopped falling."""
    runs = list(curves)
    fig = _figure(5 * len(runs), 4)
    axes = np.atleast_1d(fig.subplots(1, len(runs), squeeze=False)[0])
    for ax, run in zip(axes, runs):
        for (term, values), marker in zip(curves[run].items(), "os^vD*"):
            v = np.asarray(values, dtype=float)
            ax.plot(
                np.arange(1, len(v) + 1), v / v[0], f"{marker}-", label=f"{term} (epoch 1: {v[0]:.3g})", markersize=3
            )
        ax.set_title(run)
        ax.set_xlabel("epoch")
        ax.set_ylabel("per-epoch mean / first epoch's")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_stream_check(hits: dict[str, Sequence[int]], path: str | Path, title: str = "Rank-1 along the stream") -> Path:
    """Rank-1 of the probes seen so far against their position in the stream, one line per mode (label ->
    each probe's hit, 0 or 1, in stream order): where the lines part is where adaptation began to count."""
    fig = _figure(6, 4)
    ax = fig.subplots()
    for (label, values), style in zip(hits.items(), ("-", "--", ":", "-.")):
        v = np.asarray(values, dtype=float)
        seen = np.arange(1, len(v) + 1)
        ax.plot(seen, 100 * np.cumsum(v) / seen, style, label=f"{label} ({100 * v.mean():.2f}% at the end)")
    ax.set_xlabel("probes seen")
    ax.set_ylabel("rank-1 so far (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def plot_paired_differences(
    rows: dict[str, tuple[float, float]], path: str | Path, title: str, bar: float | None = None, z: float = 1.645
) -> Path:
    """One row per label: a paired difference in points with its ``z``-standard-error bounds (label ->
    (difference, standard error)), zero and an optional ``bar`` marked, so a row left of zero or the bar
    reads at a glance."""
    labels = list(rows)
    fig = _figure(7, 0.3 * len(labels) + 1.2)
    ax = fig.subplots()
    y = np.arange(len(labels))[::-1]
    diff = np.array([rows[k][0] for k in labels])
    half = z * np.array([rows[k][1] for k in labels])
    ax.errorbar(diff, y, xerr=half, fmt="o", markersize=4, capsize=2)
    ax.axvline(0, color="grey", lw=1)
    if bar is not None:
        ax.axvline(bar, color="tab:red", lw=1, ls="--", label=f"bar ({bar:+g})")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"points against off (bars: ±{z:g} standard errors)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


# Points an accuracy-speed plot labels beside themselves; more are named in a legend only.
LABELLED_POINTS = 6


def plot_accuracy_speed(
    points: dict[str, tuple[float, float]],
    path: str | Path,
    title: str = "Accuracy against speed",
    xlabel: str = "faces/s (log scale)",
    ylabel: str = "accuracy",
    min_speed: float | None = None,
    min_accuracy: float | None = None,
    min_accuracy_label: str | None = None,
) -> Path:
    """One labelled point per model (label -> (faces/s, accuracy as a fraction)) on a log speed axis;
    ``min_speed`` / ``min_accuracy`` draw dashed goal lines (the region a model should reach). Beyond
    ``LABELLED_POINTS`` points the labels would cover each other, so the points are named in a legend
    beside the axes instead."""
    if not points:
        raise ValueError("no points to plot")
    for label, (speed, acc) in points.items():
        if not (math.isfinite(speed) and speed > 0 and math.isfinite(acc)):
            raise ValueError(f"point {label!r}: faces/s must be positive and both values finite, got {(speed, acc)}")
    labelled = len(points) <= LABELLED_POINTS
    fig = _figure(6.5 if labelled else 9.5, 4.5)
    ax = fig.add_subplot()
    speeds = [p[0] for p in points.values()] + ([min_speed] if min_speed else [])
    markers = "os^vDP*Xh<>"

    order = {label: i for i, label in enumerate(points)}

    def below(label: str) -> bool:
        # Of points at about the same speed, only the most accurate (on a tie, the first given) is
        # labelled above, the rest below.
        speed, acc = points[label]
        near = [(a, -order[other]) for other, (s, a) in points.items() if abs(math.log10(s / speed)) < 0.25]
        return (acc, -order[label]) < max(near)

    for i, (label, (speed, acc)) in enumerate(points.items()):
        ax.plot(speed, 100 * acc, markers[i % len(markers)], markersize=8, label=label)
        if not labelled:
            continue
        ax.annotate(
            label,
            (speed, 100 * acc),
            textcoords="offset points",
            xytext=(6, -12 if below(label) else 5),
            fontsize="small",
        )
    # Goal lines are named in the legend, where no point's label can cover them.
    if min_speed:
        ax.axvline(min_speed, color="grey", linestyle="--", linewidth=1, label=f"{min_speed:,.0f} faces/s")
    if min_accuracy is not None:
        ax.axhline(100 * min_accuracy, color="grey", linestyle=":", linewidth=1, label=min_accuracy_label)
    ax.set_xscale("log")
    # Room on the log axis keeps the labels of the extreme points inside the frame.
    ax.set_xlim(min(speeds) / 2, max(speeds) * 3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if labelled:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    return _save(fig, path)


def plot_embedding_maps(
    panels: dict[str, tuple[np.ndarray, Sequence]],
    path: str | Path,
    title: str = "Embeddings in two dimensions",
) -> Path:
    """One panel per model (name -> ((N, 2) coordinates, N class labels)), points coloured by class,
    the classes in one shared legend (same colour for a class in every panel)."""
    if not panels:
        raise ValueError("no panels to plot")
    classes: dict = {}
    for name, (xy, labels) in panels.items():
        xy = np.asarray(xy)
        if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(labels) or not len(xy):
            raise ValueError(f"panel {name!r}: expected (N, 2) coordinates and N labels, got {xy.shape}, {len(labels)}")
        for c in labels:
            classes.setdefault(c)
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    colour = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = _figure(3.6 * cols + 1.2, 3.4 * rows)
    for i, (name, (xy, labels)) in enumerate(panels.items()):
        xy = np.asarray(xy)
        ax = fig.add_subplot(rows, cols, i + 1)
        labels = list(labels)
        for c in classes:
            mask = np.array([label == c for label in labels])
            if mask.any():
                ax.scatter(xy[mask, 0], xy[mask, 1], s=18, color=colour[c], label=str(c))
        ax.set_title(name, fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
    legend: dict = {}
    for ax in fig.axes:  # a class missing from one panel is still named once
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    fig.legend(list(legend.values()), list(legend), loc="outside right center", fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)
