"""``aird distill`` end to end on the tiny synthetic training set, with no face data and no teacher network.

Only the training set, the teacher and the test-fold evaluation are stubbed; the run directory, seeding,
head cache, checkpoints, signal handling and exit codes are the real ones. As a script (the process a
test sends a real signal to): ``python distill_stub.py CONFIG.yaml [aird distill options]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distill"))
from tiny import synthetic_set  # noqa: E402

import aird.distill.run as run  # noqa: E402


def stub(setattr_: Callable[[Any, str, Any], None] = setattr, on_data: Callable[[], None] | None = None) -> None:
    """Stub the face data (``setattr_`` is ``setattr`` or pytest's ``monkeypatch.setattr``);
    ``on_data`` is called when the training set is built (a test can fail there: 'no data work yet')."""

    def training_set(cfg, teacher, progress):
        if on_data:
            on_data()
        return synthetic_set(n=32, classes=4)

    setattr_(run, "training_set", training_set)
    setattr_(run, "DlibTeacher", lambda backend: None)
    setattr_(run, "evaluate_student", lambda cfg, student, teacher, progress: [])


if __name__ == "__main__":
    from aird import cli

    stub()
    sys.exit(cli.main(["distill", "--quiet", "--config", *sys.argv[1:]]))
