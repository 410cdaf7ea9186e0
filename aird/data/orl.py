"""AT&T / ORL faces: ``<root>/orl/s<k>/<n>.pgm``, 40 people x 10 grayscale images."""

from __future__ import annotations

from pathlib import Path

from aird.data.folders import FaceFolder
from aird.errors import DataError

ORL_DIR = "orl"


def load_orl(root: str | Path) -> FaceFolder:
    path = Path(root) / ORL_DIR
    if not path.is_dir():
        raise DataError("ORL folder not found", path, "set the data root to a folder holding orl/s<k>/<n>.pgm")
    return FaceFolder.scan(path)
