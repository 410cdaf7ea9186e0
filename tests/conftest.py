"""Shared fixtures: the real face data pools and a per-session cache directory.

Real faces are read from AIRD_DATA (default ../shared/data), read-only; everything computed goes
to AIRD_CACHE (default: a folder under pytest's temp dir, kept for the session), never to the data.
A test that needs a pool asks for its fixture (``data_root`` for LFW, ``orl_root``, ``lfw_view2``,
or ``data_pool("celeba")``): it is skipped, with the reason, where that pool is absent, and marked
``data`` so that ``pytest -m "not data"`` runs without any data at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aird.paths import default_data_root

# pool -> (path under the data root that must exist, what it is)
POOLS = {
    "lfw": ("lfw/pairs.txt", "LFW deep-funneled and its pairs.txt"),
    "orl": ("orl", "AT&T / ORL faces (orl/s<k>/<n>.pgm)"),
    "celeba": ("celeba-aligned/identity.txt", "CelebA aligned with identity.txt"),
    "utkface": ("utkface/crop_part1", "UTKFace crop_part1"),
}
DATA_FIXTURES = {"data_root", "lfw_sample", "lfw_view2", "orl_root", "data_pool"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


def pool_root(pool: str) -> Path:
    """The data root when it holds ``pool``; otherwise the test is skipped, saying what is missing."""
    root = default_data_root()
    relative, what = POOLS[pool]
    if not (root / relative).exists():
        pytest.skip(f"{what} not found at {root / relative}: set AIRD_DATA to a data root holding it")
    return root


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "AIRD_CACHE" not in os.environ:
        os.environ["AIRD_CACHE"] = str(tmp_path_factory.mktemp("aird-cache"))
    return Path(os.environ["AIRD_CACHE"])


@pytest.fixture(scope="session")
def data_pool():
    """``data_pool("celeba")``: the data root holding that pool, or a skip with the reason."""
    return pool_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root, holding LFW (images and pairs.txt)."""
    return pool_root("lfw")


@pytest.fixture(scope="session")
def lfw_view2(data_root: Path) -> Path:
    """A data root whose pairs.txt is LFW View 2 (10 folds of 300 + 300 pairs): counts below assume it."""
    header = (data_root / "lfw" / "pairs.txt").read_text().split("\n", 1)[0].split()
    if header != ["10", "300"]:
        pytest.skip(f"{data_root / 'lfw/pairs.txt'} is not LFW View 2 (header {' '.join(header)!r}, not '10 300')")
    return data_root


@pytest.fixture(scope="session")
def orl_root() -> Path:
    """A data root holding the standard ORL set (40 people x 10 images): counts below assume it."""
    root = pool_root("orl")
    people = [p for p in (root / "orl").iterdir() if p.is_dir()]
    images = sum(len(list(p.glob("*.pgm"))) for p in people)
    if (len(people), images) != (40, 400):
        pytest.skip(f"{root / 'orl'} holds {len(people)} people and {images} images, not ORL's 40 x 10")
    return root


@pytest.fixture(scope="session")
def lfw_sample(data_root: Path) -> list[Path]:
    """A handful of real LFW images (first images of pairs in fold 1)."""
    from aird.data.lfw import LFW

    return LFW(data_root).pairs([1]).images()[:8]
