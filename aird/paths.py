"""Where aird finds data and keeps caches.

Data is read-only (CI mounts it so); everything aird computes goes to a cache directory of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from aird.errors import DataError, OutputError

LFW_HELP = (
    "set AIRD_DATA (or pass --data-root) to a folder holding lfw/lfw-deepfunneled/<Name>/<Name>_<NNNN>.jpg "
    "and lfw/pairs.txt; LFW deep-funneled and pairs.txt are distributed by UMass Amherst "
    "(vis-www.cs.umass.edu/lfw)"
)


def default_data_root() -> Path:
    """AIRD_DATA if set, else ``../shared/data`` beside the project checkout or the working directory."""
    env = os.environ.get("AIRD_DATA")
    if env:
        return Path(env).expanduser()
    candidates = [
        Path.cwd() / "../shared/data",
        Path(__file__).resolve().parents[1] / "../shared/data",
    ]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return candidates[0]


def data_root(root: str | Path | None = None) -> Path:
    """Resolve and check a data root; raise with instructions when it does not exist."""
    path = Path(root).expanduser() if root is not None else default_data_root()
    if not path.is_dir():
        raise DataError("data root does not exist", path, LFW_HELP)
    return path


CACHE_FIX = "set AIRD_CACHE to a writable folder (default ~/.cache/aird)"


def cache_dir(sub: str | None = None) -> Path:
    """AIRD_CACHE if set, else ``~/.cache/aird``; created on demand. OutputError when it cannot be written."""
    env = os.environ.get("AIRD_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "aird"
    where = f"cache folder (AIRD_CACHE={env})" if env else "cache folder"
    path = base / sub if sub else base
    if base.exists() and not base.is_dir():
        raise OutputError(f"{where} is a file, not a folder", base, CACHE_FIX)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{where} cannot be created ({exc.strerror or exc})", path, CACHE_FIX) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{where} is read-only", path, CACHE_FIX)
    return path
