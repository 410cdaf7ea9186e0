import numpy as np
import pytest
from PIL import Image

from aird.data.align import AlignSettings, FaceAligner, align_settings_for
from aird.data.chips import ChipCache, align_images
from aird.data.images import load_rgb
from aird.errors import DataError


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner()


def test_real_lfw_faces_align(aligner, lfw_sample):
    for path in lfw_sample[:4]:
        face = aligner.align(load_rgb(path), path)
        assert face.chip.shape == (150, 150, 3) and face.chip.dtype == np.uint8
        assert face.detected, path
        # 5-point model: two points per eye, one under the nose; eyes lie above the nose.
        assert face.landmarks.shape == (5, 2)
        assert face.landmarks[:4, 1].max() < face.landmarks[4, 1]
        # the chip is face, not background: well-exposed centre
        assert 40 < face.chip[50:100, 50:100].mean() < 230


def test_real_orl_faces_align(orl_root):
    orl = FaceAligner(align_settings_for("orl"))
    paths = [orl_root / "orl" / f"s{k}" / "1.pgm" for k in (1, 2, 3)]
    faces = [orl.align(load_rgb(p), p) for p in paths]
    assert all(f.chip.shape == (150, 150, 3) for f in faces)
    assert sum(f.detected for f in faces) >= 2


def test_non_face_uses_fallback_or_errors(aligner, tmp_path):
    blank = np.full((200, 200, 3), 127, np.uint8)
    face = aligner.align(blank)
    assert not face.detected and face.chip.shape == (150, 150, 3)
    strict = FaceAligner(AlignSettings(on_missing="error"))
    with pytest.raises(DataError, match="no face found") as err:
        strict.align(blank, source=tmp_path / "wall.jpg")
    assert "wall.jpg" in str(err.value)


def test_align_images_caches_and_reports(tmp_path, lfw_sample):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((250, 250, 3), 90, np.uint8)).save(blank)
    paths = lfw_sample[:3] + [blank]
    cache = ChipCache(AlignSettings(), root=tmp_path / "cache")
    first = align_images(paths, cache=cache, progress=False, workers=1)
    assert first.chips.shape == (4, 150, 150, 3)
    assert first.n_fallback == 1 and first.fallback_paths() == [blank]
    assert "no face detected in 1" in first.report()
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 4
    # A second run reads the cache: prove it by breaking the aligner.
    import aird.data.chips as chips_mod

    original = chips_mod._align_one
    chips_mod._align_one = lambda path: (_ for _ in ()).throw(AssertionError("re-aligned a cached image"))
    try:
        again = align_images(paths, cache=cache, progress=False, workers=1)
    finally:
        chips_mod._align_one = original
    assert (again.chips == first.chips).all() and (again.detected == first.detected).all()
    # Different alignment settings are a different cache.
    assert ChipCache(AlignSettings(size=112), root=tmp_path / "cache").root != cache.root


def test_align_images_names_a_corrupt_file(tmp_path, lfw_sample):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(lfw_sample[0].read_bytes()[:500])
    with pytest.raises(DataError, match="broken.jpg"):
        align_images([lfw_sample[0], bad], cache=False, progress=False, workers=1)
