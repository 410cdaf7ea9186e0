"""A student file for the recognizer and gallery tests, until the shipped one exists.

The teacher-initialised student (``dlib_resnet_bn``: dlib's ResNet with its batch norm restored, the
starting point of every distillation) saved as a student file with a model card. Its thresholds were
measured on ORL (40 people x 3 images, HR chips and 16 px crops: the cosine similarity that 1% and
0.1% of impostor pairs reach); they are plausible, not a calibration to publish.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CARD = {
    "name": "test-student",
    "architecture": "dlib_resnet_bn",
    "input_size": 150,
    "colour": "RGB",
    "input": "uint8 RGB face, resized to input_size (bicubic), values 0..255",
    "trained_resolutions": [8, 12, 16, 20],
    "method": "none",
    "held_out": "test fixture: the teacher-initialised student, not trained",
    "thresholds": {
        "lr-lr": {"1e-2": 0.944, "1e-3": 0.957},
        "hr-lr": {"1e-2": 0.912, "1e-3": 0.927},
        "hr-hr": {"1e-2": 0.917, "1e-3": 0.935},
    },
    "threshold_res": 16,
    "gallery_model": "dlib_resnet",
    "weights_dtype": "float32",
}


def write_student(path: Path, card: dict | None = CARD, model: str = "dlib_resnet_bn") -> Path:
    from aird.models import get_model
    from aird.models.student import save_student

    meta = {"card": json.dumps(card)} if card is not None else {}
    save_student(path, get_model(model), model, 150 if model.startswith("dlib") else 16, **meta)
    return path


def orl_paths(root: Path, people: range, images: range) -> dict[str, list[Path]]:
    return {f"s{k}": [root / "orl" / f"s{k}" / f"{n}.pgm" for n in images] for k in people}


def lr_crop(chip: np.ndarray, res: int, key: str) -> np.ndarray:
    """A chip made small as the benchmarks make it (area down-sampling, no up-sampling)."""
    from aird.data.degrade import Degradation

    return Degradation(res=res, up=None)(chip, key)


class StubRecognizer:
    """What a Gallery needs of a recognizer to store and search embeddings (no model: fast tests)."""

    def __init__(self, fingerprint: str = "stub-fp", name: str = "stub", threshold: float = 0.5):
        self.fingerprint = fingerprint
        self.name = name
        self._threshold = threshold

    def threshold(self, mode: str, far: float = 1e-3) -> float:
        return self._threshold


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def face(
    vector: np.ndarray, source: str = "photo.jpg", route: str = "hr", face_px: int = 100, image: int = 0, index: int = 0
):
    """A represented face, as Recognizer.represent returns it."""
    from aird.results import Box, FaceResult

    return FaceResult(
        source, image, True, index, 1, unit(np.asarray(vector, np.float32)), route, face_px, Box(0, 0, face_px, face_px)
    )


# ---------------------------------------------------------------------------- fixtures (imported by the conftests)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def student_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_student(tmp_path_factory.mktemp("student") / "test_student.safetensors")


@pytest.fixture(scope="session")
def recognizer(student_file: Path):
    import aird

    return aird.load(student_file)


@pytest.fixture(scope="session")
def orl_chips(data_root: Path) -> dict[str, list]:
    """Aligned 150 px chips of ORL people s1-s5, images 1-5 (image 1 is each one's enrolment photo)."""
    from aird.data.align import FaceAligner
    from aird.data.inputs import read_image

    aligner = FaceAligner()
    return {
        name: [aligner.align(read_image(p), p).chip for p in paths]
        for name, paths in orl_paths(data_root, range(1, 6), range(1, 6)).items()
    }
