"""Fixtures of the fault suite: a tiny synthetic LFW-shaped data root and an isolated cache.

The synthetic root holds noise images (no face is detected, so the fallback box is used) and a
two-fold pairs.txt, enough to run ``aird eval`` end to end in a second without the real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PEOPLE = [f"P{k:02d}" for k in range(8)]


def write_pairs(path: Path, folds: int = 2) -> Path:
    """``folds`` folds of 2 same-person + 2 different-person pairs over PEOPLE (2 images each)."""
    lines = [f"{folds}\t2"]
    for f in range(folds):
        a, b, c, d = (PEOPLE[(4 * f + i) % len(PEOPLE)] for i in range(4))
        lines += [f"{a}\t1\t2", f"{b}\t1\t2", f"{a}\t1\t{c}\t1", f"{b}\t2\t{d}\t1"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def fake_lfw(tmp_path: Path) -> Path:
    """A data root ``<tmp>/data`` with lfw/lfw-deepfunneled/<P>/<P>_000k.jpg and lfw/pairs.txt (2 folds)."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for person in PEOPLE:
        folder = root / "lfw" / "lfw-deepfunneled" / person
        folder.mkdir(parents=True)
        for k in (1, 2):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{person}_{k:04d}.jpg", quality=95)
    write_pairs(root / "lfw" / "pairs.txt")
    return root


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """AIRD_CACHE pointed at a fresh folder for this test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("AIRD_CACHE", str(path))
    return path


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("aird: error: "), err
    return lines[0]


@pytest.fixture
def one_error_line():
    """Check that stderr holds the single ``aird: error: ...`` line of a user-caused failure; return it."""
    return _one_error_line


@pytest.fixture
def pairs_file():
    """``pairs_file(path, folds)`` writes a pairs.txt over the fake LFW's people."""
    return write_pairs
