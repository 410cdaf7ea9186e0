import numpy as np
import pytest

from aird.data.degrade import RESOLUTIONS, Degradation, upsample
from aird.errors import ConfigError


@pytest.fixture
def chip():
    rng = np.random.default_rng(1)
    # A smooth face-like image plus texture: area down-sampling must average it away.
    y, x = np.mgrid[0:150, 0:150]
    base = 128 + 60 * np.sin(x / 20.0)[..., None] * np.cos(y / 25.0)[..., None]
    return np.clip(base + rng.normal(0, 10, (150, 150, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("down", ["area", "bicubic", "bilinear"])
def test_shapes_and_dtype(chip, res, down):
    lr = Degradation(res=res, down=down, up=None)(chip, "k")
    assert lr.shape == (res, res, 3) and lr.dtype == np.uint8
    up = Degradation(res=res, down=down)(chip, "k")
    assert up.shape == chip.shape and up.dtype == np.uint8
    assert Degradation(res=res, down=down, out_size=112)(chip, "k").shape == (112, 112, 3)


def test_deterministic_by_seed_and_key(chip):
    d = Degradation(
        res=(8, 12, 16), down=("area", "bicubic"), blur_sigma=(0, 1.5), noise_std=(0, 8), jpeg_quality=(20, 90)
    )
    a = d(chip, "face-1")
    assert (a == d(chip, "face-1")).all()
    assert (a == Degradation(**d.settings())(chip, "face-1")).all()  # rebuilt from its record settings
    outs = {d(chip, f"face-{i}").tobytes() for i in range(10)}
    assert len(outs) > 1  # different samples draw different degradations
    other_seed = Degradation(**{**d.settings(), "seed": 1})
    assert any((other_seed(chip, f"face-{i}") != d(chip, f"face-{i}")).any() for i in range(5))


def test_batch_equals_single(chip):
    d = Degradation(res=12, noise_std=3)
    chips = np.stack([chip, chip[::-1].copy()])
    out = d.batch(chips, ["a", "b"])
    assert (out[0] == d(chips[0], "a")).all() and (out[1] == d(chips[1], "b")).all()


@pytest.mark.parametrize("res", [8, 16])
def test_output_carries_no_more_than_r_by_r_information(chip, res):
    """The up-sampled face is a function of the R x R face alone: detail invisible at R x R changes nothing."""
    d = Degradation(res=res, down="area")
    lr = Degradation(res=res, down="area", up=None)(chip, "k")
    assert (d(chip, "k") == upsample(lr, 150)).all()
    # Add zero-mean detail inside every area cell (150 / R need not be an integer, so use R*k sized chips).
    k = 10
    big = np.kron(lr.astype(np.int16), np.ones((k, k, 1), np.int16))
    pattern = np.where((np.indices((res * k, res * k)).sum(0) % 2) == 0, 6, -6)[..., None]
    detailed = np.clip(big + pattern, 0, 255).astype(np.uint8)
    plain = big.astype(np.uint8)
    assert (d(detailed, "k") == d(plain, "k")).all()
    assert len(np.unique(lr.reshape(-1, 3), axis=0)) <= res * res


def test_noise_and_jpeg_change_the_face(chip):
    clean = Degradation(res=32, up=None)(chip, "k")
    assert (Degradation(res=32, up=None, noise_std=10)(chip, "k") != clean).any()
    assert (Degradation(res=32, up=None, jpeg_quality=10)(chip, "k") != clean).any()
    blurred = Degradation(res=32, up=None, blur_sigma=3)(chip, "k")
    assert blurred.astype(float).std() < clean.astype(float).std()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"res": 15}, "unknown resolution 15"),
        ({"res": 150}, "unknown resolution 150"),
        ({"down": "lanczos"}, "unknown interpolation"),
        ({"up": "nearest"}, "unknown interpolation"),
        ({"blur_sigma": -1}, "blur_sigma"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"noise_std": (5, 1)}, "noise_std"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Degradation(**kwargs)


def test_capture_shifts(chip):
    gray = Degradation(res=16, up=None, grayscale=True)(chip, "k")
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    plain = Degradation(res=16, up=None)(chip, "k").astype(float)
    dark = Degradation(res=16, up=None, gamma=2.2)(chip, "k").astype(float)
    assert dark.mean() < plain.mean() and (dark <= plain + 1e-9).all()
    with pytest.raises(ConfigError, match="gamma"):
        Degradation(gamma=0)


def is_grey(face: np.ndarray) -> bool:
    return bool((face[..., 0] == face[..., 1]).all() and (face[..., 1] == face[..., 2]).all())


def test_a_share_of_grey_samples_is_seeded_per_sample_and_moves_no_other_draw(chip):
    colour = Degradation(res=(8, 12, 16), down=("area", "bicubic"), blur_sigma=(0, 1), up=None, seed=3)
    some = Degradation(res=(8, 12, 16), down=("area", "bicubic"), blur_sigma=(0, 1), up=None, seed=3, grayscale=0.3)
    keys = [f"face-{i}" for i in range(200)]
    grey = [is_grey(some(chip, k)) for k in keys]
    assert 40 <= sum(grey) <= 80  # about 30% of 200
    assert grey == [is_grey(some(chip, k)) for k in keys]  # the same faces in every process and epoch
    for k, g in zip(keys, grey):
        a, b = colour(chip, k), some(chip, k)
        assert a.shape == b.shape  # the resolution drawn is the same with or without the grey draw
        if not g:
            assert np.array_equal(a, b)  # a colour sample is exactly the sample without the setting
    assert Degradation(grayscale=0.0).key() == Degradation().key()  # no share, no new cache key
    assert Degradation(grayscale=0.3).key() != Degradation().key()


@pytest.mark.parametrize("share", [-0.1, 1.5, "yes", None])
def test_a_grey_share_outside_0_1_is_an_error(share):
    with pytest.raises(ConfigError, match="grayscale"):
        Degradation(grayscale=share)
