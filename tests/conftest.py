"""Shared fixtures: the real face data root and a per-session cache directory.

Real faces are read from AIRD_DATA (default ../shared/data), read-only; everything computed goes
to AIRD_CACHE (default: a folder under pytest's temp dir, kept for the session), never to the data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aird.paths import default_data_root


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "AIRD_CACHE" not in os.environ:
        os.environ["AIRD_CACHE"] = str(tmp_path_factory.mktemp("aird-cache"))
    return Path(os.environ["AIRD_CACHE"])


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = default_data_root()
    if not (root / "lfw" / "pairs.txt").is_file():
        pytest.skip(f"real face data not found at {root}: set AIRD_DATA to a folder holding lfw/ and orl/")
    return root


@pytest.fixture(scope="session")
def lfw_sample(data_root: Path) -> list[Path]:
    """A handful of real LFW images (first images of pairs in fold 1)."""
    from aird.data.lfw import LFW

    return LFW(data_root).pairs([1]).images()[:8]
