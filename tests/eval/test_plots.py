"""Plots write a real PNG, atomically, from scores and labels."""

from __future__ import annotations

import numpy as np
import pytest

from aird.eval.plots import plot_roc, plot_score_distributions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def scores(seed: int, n: int = 400, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    return rng.normal(size=n) + shift * labels, labels


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_plot_roc_writes_png(tmp_path):
    path = tmp_path / "figs" / "roc.png"
    # The separable curve has FAR = 0 points, which a log axis cannot show unless clipped.
    separable = (np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))
    out = plot_roc({"HR": scores(0, shift=3.0), "LR 8px": scores(1), "separable": separable}, path, title="LFW")
    assert out == path
    assert_png(path)


def test_plot_score_distributions_writes_png(tmp_path):
    path = tmp_path / "dist.png"
    groups = {f"res {r}": scores(r, shift=r / 16) for r in (8, 16, 32, 64)}
    groups["genuine only"] = (np.array([0.5, 0.6]), np.array([1, 1]))
    plot_score_distributions(groups, path, thresholds={"res 8": 0.2, "res 32": 0.9})
    assert_png(path)


def test_plot_errors(tmp_path):
    with pytest.raises(ValueError, match="no curves"):
        plot_roc({}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="not plotted"):
        plot_score_distributions({"a": scores(0)}, tmp_path / "b.png", thresholds={"b": 0.1})
    assert list(tmp_path.iterdir()) == []


def test_plot_accuracy_speed_writes_png(tmp_path):
    from aird.eval.plots import plot_accuracy_speed

    path = tmp_path / "students.png"
    points = {"teacher": (110.0, 0.87), "main": (105.0, 0.93), "fast": (5200.0, 0.92), "fast-onnx": (9000.0, 0.92)}
    plot_accuracy_speed(points, path, min_speed=2000, min_accuracy=0.91, min_accuracy_label="main - 2 points")
    assert_png(path)


def png_width(path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def test_plot_accuracy_speed_names_many_points_in_a_legend_beside_the_axes(tmp_path):
    from aird.eval.plots import LABELLED_POINTS, plot_accuracy_speed

    for name in ("few", "many"):
        (tmp_path / name).mkdir()
    few, many = tmp_path / "few" / "p.png", tmp_path / "many" / "p.png"
    points = {f"m{i}": (1000.0 + 10 * i, 0.9) for i in range(LABELLED_POINTS + 2)}
    plot_accuracy_speed(dict(list(points.items())[:LABELLED_POINTS]), few)
    plot_accuracy_speed(points, many)
    assert_png(many)
    # points at one spot would hide each other's labels: the legend goes beside the axes, on a wider figure
    assert png_width(many) > png_width(few)


def test_plot_embedding_maps_writes_png(tmp_path):
    from aird.eval.plots import plot_embedding_maps

    rng = np.random.default_rng(0)
    labels = [f"s{k}" for k in range(1, 11) for _ in range(10)]
    panels = {name: (rng.normal(size=(100, 2)), labels) for name in ("teacher", "main", "fast")}
    panels["part"] = (rng.normal(size=(3, 2)), ["s1", "s2", "s11"])  # a class only this panel has
    path = tmp_path / "tsne.png"
    plot_embedding_maps(panels, path, title="t-SNE")
    assert_png(path)


def test_accuracy_speed_and_map_errors(tmp_path):
    from aird.eval.plots import plot_accuracy_speed, plot_embedding_maps

    with pytest.raises(ValueError, match="no points"):
        plot_accuracy_speed({}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="'slow'.*positive"):
        plot_accuracy_speed({"slow": (0.0, 0.9)}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="no panels"):
        plot_embedding_maps({}, tmp_path / "b.png")
    with pytest.raises(ValueError, match="'x'.*N labels"):
        plot_embedding_maps({"x": (np.zeros((4, 2)), ["a"] * 3)}, tmp_path / "b.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_paired_differences_and_stream_check_write_png(tmp_path):
    from aird.eval.plots import plot_paired_differences, plot_stream_check

    rows = {"orl-16px, name": (5.0, 1.3), "orl-12px-noise, name": (-0.8, 1.7)}
    assert_png(plot_paired_differences(rows, tmp_path / "a" / "forest.png", title="t", bar=-0.3))
    assert_png(plot_stream_check({"facebn-safe": [1, 0, 1, 1], "off": [1, 0, 0, 1]}, tmp_path / "b" / "s.png"))
