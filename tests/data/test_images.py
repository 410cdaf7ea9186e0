import numpy as np
import pytest
from PIL import Image

from aird.data.folders import FaceFolder
from aird.data.images import load_rgb
from aird.data.orl import load_orl
from aird.errors import DataError


def test_grayscale_pgm_becomes_rgb(orl_root):
    img = load_rgb(orl_root / "orl" / "s1" / "1.pgm")
    assert img.shape == (112, 92, 3) and img.dtype == np.uint8
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_png_and_jpeg(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert (load_rgb(tmp_path / "a.png") == arr).all()
    Image.fromarray(arr).save(tmp_path / "a.jpg")
    assert load_rgb(tmp_path / "a.jpg").shape == (40, 30, 3)


def test_corrupt_jpeg_names_file(tmp_path, lfw_sample):
    data = lfw_sample[0].read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        load_rgb(bad)
    assert "truncated.jpg" in str(err.value)


@pytest.mark.parametrize(
    "name, content, message",
    [("empty.jpg", b"", "empty"), ("notes.jpg", b"this is not an image at all", "not a readable image")],
)
def test_bad_files_name_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        load_rgb(tmp_path / name)
    assert name in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_rgb(tmp_path / "ghost.jpg")


def test_face_folder_scan_and_empty_identity(tmp_path):
    arr = np.zeros((20, 20, 3), np.uint8)
    for person in ("a", "b"):
        (tmp_path / person).mkdir()
        Image.fromarray(arr).save(tmp_path / person / "1.png")
    folder = FaceFolder.scan(tmp_path)
    assert folder.identities == ["a", "b"] and len(folder) == 2
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match="identity folder has no images") as err:
        FaceFolder.scan(tmp_path)
    assert str(tmp_path / "c") in str(err.value)
    assert len(FaceFolder.scan(tmp_path, allow_empty_identities=True)) == 2


def test_empty_root_and_missing_root(tmp_path):
    with pytest.raises(DataError, match="no face images"):
        FaceFolder.scan(tmp_path)
    with pytest.raises(DataError, match="not found"):
        FaceFolder.scan(tmp_path / "nope")


def test_orl_layout(orl_root):
    orl = load_orl(orl_root)
    assert len(orl) == 400 and len(orl.identities) == 40
    s1 = orl.by_identity()["s1"]
    assert [p.path.name for p in s1][:3] == ["1.pgm", "2.pgm", "3.pgm"] and s1[-1].path.name == "10.pgm"
