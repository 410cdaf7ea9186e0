"""One LR input path: a face made small by Degradation and the same LR face handed over as a crop reach
the network as the same tensor (OpenCV's resampling, the one the students were trained with)."""

import numpy as np
import pytest
import torch

from aird.data.degrade import Degradation, to_network_input
from aird.models.embedder import faces_to_tensor


@pytest.fixture
def chip() -> np.ndarray:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:150, 0:150]
    base = 128 + 70 * np.sin(x / 13.0)[..., None] * np.cos(y / 17.0)[..., None]
    return np.clip(base + rng.normal(0, 12, (150, 150, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("res, size", [(16, 150), (8, 150), (12, 150), (20, 16), (16, 16), (12, 16)])
def test_degraded_chip_and_lr_crop_give_the_same_tensor(chip, res, size):
    """Training and evaluation up-sample inside Degradation; inference resizes a crop in faces_to_tensor."""
    trained_on = Degradation(res=res, out_size=size)(chip, "face")
    crop = Degradation(res=res, up=None)(chip, "face")  # the same face as a detector would crop it
    assert crop.shape == (res, res, 3)
    assert torch.equal(faces_to_tensor(crop[None], size), faces_to_tensor(trained_on[None]))
    assert (to_network_input(crop, size) == trained_on).all()


def test_a_face_at_network_size_is_passed_through(chip):
    assert to_network_input(chip, 150) is chip
    assert faces_to_tensor(np.zeros((0, 14, 14, 3), np.uint8), 150).shape == (0, 3, 150, 150)


def test_recognizer_embeds_a_crop_as_the_student_embeds_the_degraded_chip(recognizer, chip):
    """Through the public verb: a 16 px crop's embedding is the student's on the training-style input."""
    crop = Degradation(res=16, up=None)(chip, "k")
    face = recognizer.represent(crop, cropped=True)[0]
    assert face.route == "lr" and face.face_px == 16
    with torch.inference_mode():
        expected = recognizer._student.module(faces_to_tensor(Degradation(res=16, out_size=150)(chip, "k")[None]))
    expected = (expected / expected.norm()).numpy()[0]
    assert np.abs(face.embedding - expected).max() < 1e-5


@pytest.mark.parametrize("side", [150, 32, 20])
def test_a_face_larger_than_the_input_is_shrunk_by_area_averaging(chip, side):
    """Bicubic shrinking aliases (OpenCV filters nothing first); area averaging is the one way down."""
    import cv2

    face = cv2.resize(chip, (side, side), interpolation=cv2.INTER_AREA)
    for how in ("bicubic", "bilinear", "area"):
        assert (to_network_input(face, 16, how) == cv2.resize(face, (16, 16), interpolation=cv2.INTER_AREA)).all()
    # enlarging keeps the interpolation asked for
    small = face[:12, :12].copy()
    assert (to_network_input(small, 16) == cv2.resize(small, (16, 16), interpolation=cv2.INTER_CUBIC)).all()
