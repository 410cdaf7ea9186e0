"""Box jitter: seeded per sample (same in every process), within its configured range, validated."""

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aird.data.degrade import Degradation
from aird.data.jitter import Box, Jitter, JitterDraw, cut, jitter_chip
from aird.errors import ConfigError

JITTER = Jitter(shift=0.1, scale=(0.9, 1.1), rotate=10.0)


@pytest.fixture
def chip():
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:150, 0:150]
    base = 128 + 60 * np.sin(x / 13.0)[..., None] * np.cos(y / 17.0)[..., None]
    return np.clip(base + rng.normal(0, 8, (150, 150, 3)), 0, 255).astype(np.uint8)


def _dot(size: int = 150, at: tuple[float, float] = (74.5, 74.5)) -> np.ndarray:
    """A smooth bright blob on black, centred at ``at`` (x, y): its centroid is where it is."""
    y, x = np.mgrid[0:size, 0:size]
    blob = 255 * np.exp(-((x - at[0]) ** 2 + (y - at[1]) ** 2) / (2 * 4.0**2))
    return np.repeat(blob.round().astype(np.uint8)[..., None], 3, axis=2)


def _centroid(image: np.ndarray) -> np.ndarray:
    w = image[..., 0].astype(float)
    y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return np.array([(w * x).sum() / w.sum(), (w * y).sum() / w.sum()])


# Keys of degradations made before jitter existed (computed by the code of that time): caches made then
# must stay valid while jitter is off.
KEYS_BEFORE_JITTER = [
    ({}, "656cbff17b58"),
    (
        # configs/aird.yaml's training degradation
        {
            "res": (8, 12, 16, 20),
            "down": ("area", "bicubic", "bilinear"),
            "out_size": 150,
            "blur_sigma": (0.0, 0.0),
            "noise_std": (0.0, 0.0),
        },
        "4a0fcfca5e82",
    ),
    ({"res": 16, "noise_std": (0, 6), "jpeg_quality": (40, 95), "seed": 3}, "d36ab0e1d679"),
]


@pytest.mark.parametrize("kwargs, key", KEYS_BEFORE_JITTER)
def test_key_unchanged_while_jitter_is_off(kwargs, key):
    assert Degradation(**kwargs).key() == key
    assert Degradation(**kwargs, jitter=None).key() == key
    # A jitter that moves nothing is no jitter.
    assert Degradation(**kwargs, jitter=Jitter()).key() == key
    assert Degradation(**kwargs, jitter={"shift": 0.0, "scale": [1, 1], "rotate": 0}).jitter is None
    assert Degradation(**kwargs, jitter=JITTER).key() != key


def test_same_key_same_jitter_other_key_other_jitter(chip):
    d = Degradation(res=32, up=None, jitter=JITTER)
    a = d(chip, "face-1:0")
    assert (a == d(chip, "face-1:0")).all()
    assert (a == Degradation(**d.settings())(chip, "face-1:0")).all()  # rebuilt from its record settings
    assert (a != d(chip, "face-1:1")).any()  # another epoch of the same face: another box
    assert len({d(chip, f"face-{i}").tobytes() for i in range(8)}) == 8
    assert (a != Degradation(**{**d.settings(), "seed": 1})(chip, "face-1:0")).any()
    assert (a != Degradation(res=32, up=None)(chip, "face-1:0")).any()  # the jitter does move the face


SUBPROCESS = """
import hashlib, sys
import numpy as np
from aird.data.degrade import Degradation
from aird.data.jitter import Jitter
rng = np.random.default_rng(3)
chip = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
d = Degradation(res=(12, 16), noise_std=(0, 6), jitter=Jitter(0.1, (0.9, 1.1), 10.0), seed=7)
print(hashlib.sha1(d.batch(np.stack([chip, chip]), ["a:0", "b:3"]).tobytes()).hexdigest())
"""


def test_jitter_is_the_same_in_another_process():
    rng = np.random.default_rng(3)
    chip = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    d = Degradation(res=(12, 16), noise_std=(0, 6), jitter=Jitter(0.1, (0.9, 1.1), 10.0), seed=7)
    here = hashlib.sha1(d.batch(np.stack([chip, chip]), ["a:0", "b:3"]).tobytes()).hexdigest()
    # Another interpreter, with another hash seed: only stable_seed may decide the draws.
    env = {"PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1", "PATH": ""}
    repo = Path(__file__).resolve().parents[2]  # so the child imports this checkout's aird
    out = subprocess.run(
        [sys.executable, "-c", SUBPROCESS], capture_output=True, text=True, env=env, cwd=repo, check=True
    )
    assert out.stdout.strip() == here


def test_jitter_leaves_the_other_draws_alone(chip):
    """Switching jitter on changes the framing only: each sample keeps its resolution and noise draw."""
    plain = Degradation(res=(8, 12, 16, 20), up=None, noise_std=(0, 10))
    jittered = Degradation(res=(8, 12, 16, 20), up=None, noise_std=(0, 10), jitter=JITTER)
    flat = np.full_like(chip, 128)  # jitter cannot change a flat chip: what differs is the noise draw
    for i in range(12):
        a, b = plain(flat, f"k{i}"), jittered(flat, f"k{i}")
        assert a.shape == b.shape and (a == b).all()


def test_draws_stay_within_the_configured_range():
    rng = np.random.default_rng(0)
    draws = [JITTER.draw(rng) for _ in range(2000)]
    dx, dy, scale, angle = (np.array([getattr(d, k) for d in draws]) for k in ("dx", "dy", "scale", "angle"))
    assert np.abs(dx).max() <= 0.1 and np.abs(dy).max() <= 0.1
    assert 0.9 <= scale.min() and scale.max() <= 1.1
    assert np.abs(angle).max() <= 10.0
    # ... and fill it: uniform draws reach near both ends
    assert dx.min() < -0.095 and dx.max() > 0.095 and scale.min() < 0.905 and angle.max() > 9.5


def test_cut_of_the_whole_image_is_the_image(chip):
    assert (cut(chip, Box.of_image(150, 150), 150) == chip).all()
    assert (jitter_chip(chip, Jitter(), np.random.default_rng(0)) == chip).all()


@pytest.mark.parametrize(
    "draw, expect",
    [
        # The box moves right by 0.1 of its side: the face moves left by 15 px.
        (JitterDraw(0.1, 0.0, 1.0, 0.0), (74.5 - 15, 74.5)),
        (JitterDraw(0.0, -0.06, 1.0, 0.0), (74.5, 74.5 + 9)),
        # A turn about the centre leaves a centred face where it is.
        (JitterDraw(0.0, 0.0, 1.0, 10.0), (74.5, 74.5)),
    ],
)
def test_the_face_moves_as_the_draw_says(draw, expect):
    out = cut(_dot(), draw.apply(Box.of_image(150, 150)), 150)
    assert np.allclose(_centroid(out), expect, atol=0.3)


def test_scale_and_turn_move_an_off_centre_face_as_configured():
    offset = np.array([30.0, 0.0])
    dot = _dot(at=tuple(74.5 + offset))
    # Box 1.2x larger: the face is 1.2x closer to the centre.
    out = cut(dot, JitterDraw(0, 0, 1.2, 0).apply(Box.of_image(150, 150)), 150)
    assert np.allclose(_centroid(out) - 74.5, offset / 1.2, atol=0.3)
    # Box turned by 10 degrees: the face, 30 px off centre, turns by 10 degrees the other way round it.
    out = cut(dot, JitterDraw(0, 0, 1, 10).apply(Box.of_image(150, 150)), 150)
    got = _centroid(out) - 74.5
    assert math.isclose(np.linalg.norm(got), 30.0, abs_tol=0.4)
    assert math.isclose(abs(math.degrees(math.atan2(got[1], got[0]))), 10.0, abs_tol=1.0)


def test_jitter_moves_the_face_no_further_than_configured():
    """Over many samples the centred face stays within shift x side of the centre (a 10 deg turn and a
    10% scale move a centred face by nothing more)."""
    d = Degradation(res=32, up="bicubic", jitter=JITTER)
    dot = _dot()
    shifts = np.array([_centroid(d(dot, f"s{i}")) - 74.5 for i in range(60)])
    # the box moves by dx * side, and the scale maps that to dx * side / s in the output
    limit = 0.1 * 150 / 0.9 + 1.0  # + resampling to 32 px and back
    assert np.abs(shifts).max() <= limit
    assert np.abs(shifts).max() > 5  # it does move


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shift": -0.1}, "jitter.shift must be in"),
        ({"shift": 0.6}, "jitter.shift must be in"),
        ({"shift": float("nan")}, "jitter.shift must be in"),
        ({"scale": (1.1, 0.9)}, "jitter.scale must be a range"),
        ({"scale": (0.2, 1.0)}, "jitter.scale must be a range"),
        ({"scale": (1.0, 3.0)}, "jitter.scale must be a range"),
        ({"scale": (0.9,)}, "jitter.scale must be a range"),
        ({"scale": (0.9, float("nan"))}, "jitter.scale must be a range"),
        ({"rotate": -5}, "jitter.rotate must be in"),
        ({"rotate": 90}, "jitter.rotate must be in"),
    ],
)
def test_bad_jitter_is_a_config_error_naming_the_setting(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Jitter(**kwargs)
    with pytest.raises(ConfigError, match=message):
        Degradation(jitter=kwargs)


def test_degradation_refuses_a_jitter_of_another_type():
    with pytest.raises(ConfigError, match="jitter must be a Jitter"):
        Degradation(jitter=0.1)
