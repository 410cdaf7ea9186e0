"""Every image mode Pillow opens is read correctly or refused clearly; a pixel budget stops decompression
bombs before decoding; ``on_bad_image="skip"`` leaves unreadable images out and lists them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile

from aird.data.chips import SkippedImage, align_images
from aird.data.images import DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, load_rgb, max_image_pixels
from aird.errors import ConfigError, DataError

RAMP16 = (np.arange(64 * 48, dtype=np.int64).reshape(64, 48) * 21).astype(np.uint16)  # 0 .. 64491


def _gray(img: np.ndarray) -> np.ndarray:
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    return img[..., 0]


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(RAMP16).save(path)
    assert Image.open(path).mode == "I;16"
    expected = np.round(RAMP16 / 257.0).astype(np.uint8)
    assert (_gray(load_rgb(path)) == expected).all()


def test_16bit_pgm_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "g16.pgm"
    path.write_bytes(b"P5\n48 64\n65535\n" + RAMP16.astype(">u2").tobytes())
    assert Image.open(path).mode == "I"
    assert (_gray(load_rgb(path)) == np.round(RAMP16 / 257.0).astype(np.uint8)).all()


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 200  # a red that only shows where the pixel is opaque
    rgba[:, :10, 3] = 0  # left half transparent
    rgba[:, 10:, 3] = 255
    rgba[0, 10, 3] = 128  # half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_rgb(tmp_path / "a.png")
    assert (img[:, :10] == 255).all()
    assert (img[1:, 10:] == [200, 0, 0]).all()
    assert np.abs(img[0, 10].astype(int) - [228, 127, 127]).max() <= 1  # 128/255 red over white

    la = np.zeros((20, 20, 2), np.uint8)
    la[..., 0] = 40
    la[:5, :, 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    gray = _gray(load_rgb(tmp_path / "la.png"))
    assert (gray[:5] == 40).all() and (gray[5:] == 255).all()


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (20, 20), 1)
    pal.putpalette([0, 0, 255, 10, 200, 30] + [0] * 762)
    pal.paste(0, (0, 0, 20, 10))
    pal.save(tmp_path / "p.png")
    img = load_rgb(tmp_path / "p.png")
    assert (img[:10] == [0, 0, 255]).all() and (img[10:] == [10, 200, 30]).all()
    pal.save(tmp_path / "pt.png", transparency=0)  # index 0 transparent
    img = load_rgb(tmp_path / "pt.png")
    assert (img[:10] == 255).all() and (img[10:] == [10, 200, 30]).all()


def test_one_bit_and_cmyk(tmp_path):
    bits = np.zeros((16, 16), bool)
    bits[:, 8:] = True
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert (_gray(load_rgb(tmp_path / "b.png")) == np.where(bits, 255, 0)).all()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    red = load_rgb(tmp_path / "c.jpg")
    assert red[..., 0].min() > 230 and red[..., 1:].max() < 25


@pytest.mark.parametrize(
    "mode, values, message",
    [
        ("F", np.full((16, 16), 0.5, np.float32), "floating-point"),
        ("I", np.full((16, 16), 70000, np.int32), "beyond 16 bits"),
    ],
)
def test_modes_without_a_defined_8bit_meaning_are_refused(tmp_path, mode, values, message):
    path = tmp_path / f"{mode}.tiff"
    Image.fromarray(values, mode).save(path)
    with pytest.raises(DataError, match=message) as err:
        load_rgb(path)
    assert str(path) in str(err.value)


def test_pixel_budget_is_checked_before_decoding(tmp_path, monkeypatch):
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS
    path = tmp_path / "big.png"
    Image.new("L", (6000, 6000)).save(path)  # a few kB on disk, 36 MP decoded
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded the pixels"))
    with pytest.raises(DataError) as err:
        load_rgb(path)
    text = str(err.value)
    assert str(path) in text and "6000x6000" in text and MAX_PIXELS_ENV in text


def test_pixel_budget_setting(tmp_path, monkeypatch):
    Image.new("RGB", (200, 100)).save(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "19_999")
    with pytest.raises(DataError, match="200x100"):
        load_rgb(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "20000")
    assert load_rgb(tmp_path / "small.png").shape == (100, 200, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=MAX_PIXELS_ENV):
        load_rgb(tmp_path / "small.png")


def _images(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image")
    return [good, truncated, notes, tmp_path / "gone.jpg"]


def test_skip_leaves_unreadable_images_out_with_their_reasons(tmp_path, cache):
    paths = _images(tmp_path)
    chips = align_images(paths, progress=False, workers=1, on_bad_image="skip")
    assert chips.paths == paths[:1] and chips.chips.shape == (1, 150, 150, 3) and chips.digests[0]
    assert [s.path for s in chips.skipped] == paths[1:] and all(isinstance(s, SkippedImage) for s in chips.skipped)
    reasons = [s.reason for s in chips.skipped]
    assert "corrupt or truncated" in reasons[0] and "not a readable image" in reasons[1] and "not found" in reasons[2]
    assert chips.skipped[0].as_dict() == {"path": str(paths[1]), "reason": reasons[0]}
    assert "skipped 3" in chips.report()
    # The default stops at the first bad image, naming it.
    with pytest.raises(DataError, match="truncated.png"):
        align_images(paths, progress=False, workers=1)
    with pytest.raises(ConfigError, match="on_bad_image"):
        align_images(paths, progress=False, on_bad_image="ignore")


@pytest.mark.slow
def test_skip_works_in_worker_processes(tmp_path, cache):
    paths = _images(tmp_path)
    chips = align_images(paths, progress=False, workers=2, on_bad_image="skip")
    assert chips.paths == paths[:1] and [s.path for s in chips.skipped] == paths[1:]
