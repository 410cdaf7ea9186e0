"""Images as users hand them over: every kind reads to the same pixels, every bad one is a clear error."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from aird.data.images import MAX_PIXELS_ENV
from aird.data.inputs import expand_paths, read_image
from aird.errors import DataError


@pytest.fixture
def rgb() -> np.ndarray:
    y, x = np.mgrid[0:60, 0:50]
    return np.stack([x * 5, y * 4, (x + y) * 2], axis=2).astype(np.uint8)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_every_kind_reads_to_the_same_pixels(tmp_path, rgb):
    path = tmp_path / "face.png"
    Image.fromarray(rgb).save(path)
    for image in (path, str(path), path.read_bytes(), bytearray(path.read_bytes()), Image.fromarray(rgb), rgb):
        out = read_image(image)
        assert out.dtype == np.uint8 and out.shape == (60, 50, 3)
        assert (out == rgb).all(), type(image)


def test_grey_and_single_channel_arrays_become_rgb(rgb):
    grey = rgb[..., 0]
    for image in (grey, grey[..., None], Image.fromarray(grey)):
        out = read_image(image)
        assert out.shape == (60, 50, 3) and (out == grey[..., None]).all()


def test_alpha_is_composited_over_white_not_dropped(rgb):
    rgba = np.concatenate([rgb, np.full((60, 50, 1), 255, np.uint8)], axis=2)
    rgba[:30, :, 3] = 0  # the top half fully transparent
    rgba[30:, :25, 3] = 128  # half transparent
    for image in (rgba, Image.fromarray(rgba, "RGBA"), png_bytes(Image.fromarray(rgba, "RGBA"))):
        out = read_image(image).astype(int)
        assert (out[:30] == 255).all()  # dropping alpha would show the colours underneath
        assert (out[30:, 25:] == rgb[30:, 25:]).all()
        expected = np.round(rgb[30:, :25] * (128 / 255) + 255 * (127 / 255))
        assert np.abs(out[30:, :25] - expected).max() <= 1


def test_sixteen_bit_grey_is_scaled_not_clipped(rgb):
    grey16 = rgb[..., 0].astype(np.uint16) * 257  # the same image at 16 bits
    img = Image.fromarray(grey16)
    assert img.mode.startswith("I")
    for image in (img, png_bytes(img)):
        out = read_image(image)
        # Clipping at 255 would turn almost everything white.
        assert np.abs(out[..., 0].astype(int) - rgb[..., 0]).max() <= 1


def test_cmyk_jpeg_is_converted(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG", quality=95)
    out = read_image(buf.getvalue())
    assert out.shape == (60, 50, 3)
    assert np.abs(out.astype(int) - rgb).mean() < 6


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header promises width x height pixels (its data is a few bytes: never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is not an image at all"), "not a readable image"),
        (lambda p: p.write_bytes(png_bytes(Image.new("RGB", (80, 80), "red"))[:60]), "corrupt or truncated"),
        (lambda p: Image.new("RGB", (1, 1)).save(p, format="PNG"), "too small"),
        (lambda p: p.write_bytes(huge_png_header(20000, 20000)), "over the 32 MP limit"),
    ],
    ids=["zero-byte", "non-image", "truncated", "1x1", "20000x20000"],
)
def test_bad_files_are_clear_errors_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(DataError, match=message) as err:
        read_image(path)
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match=message):
        read_image(path.read_bytes() if path.stat().st_size else b"")


def test_one_pixel_budget_for_every_kind(tmp_path, monkeypatch, rgb):
    """AIRD_MAX_IMAGE_PIXELS, the datasets' setting, also bounds paths, bytes, PIL images and arrays."""
    path = tmp_path / "face.png"
    Image.fromarray(rgb).save(path)
    kinds = (path, path.read_bytes(), Image.fromarray(rgb), rgb)
    for image in kinds:
        assert read_image(image).shape == (60, 50, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(50 * 60 - 1))
    for image in kinds:
        with pytest.raises(DataError, match=f"50x60 .*{MAX_PIXELS_ENV}"):
            read_image(image)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(50 * 60))
    assert all(read_image(image).shape == (60, 50, 3) for image in kinds)


def test_bad_arrays_and_types(rgb):
    with pytest.raises(DataError, match="expected uint8"):
        read_image(rgb.astype(np.float32))
    with pytest.raises(DataError, match="got shape"):
        read_image(np.zeros((2, 20, 20, 3), np.uint8)[..., :2])
    with pytest.raises(DataError, match="cannot read an image from a int"):
        read_image(42)
    with pytest.raises(DataError, match="not found"):
        read_image("/no/such/face.jpg")


def test_expand_paths_walks_folders_in_natural_order(tmp_path):
    for name in ("b/10.png", "b/2.png", "a/1.png", "a/.hidden.png", ".git/x.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    got = [p.relative_to(tmp_path).as_posix() for p in expand_paths([tmp_path])]
    assert got == ["a/1.png", "b/2.png", "b/10.png"]
    assert expand_paths([tmp_path / "missing.jpg"]) == [tmp_path / "missing.jpg"]
