"""The user's own training pools: specs checked with the fix named, images listed, aligned chips re-cut."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_recordio import write_pack  # noqa: E402

from aird.data.align import AlignSettings, FaceAligner, align_settings_for  # noqa: E402
from aird.data.images import load_rgb  # noqa: E402
from aird.data.pools import PoolSpec, pool_items  # noqa: E402
from aird.errors import ConfigError, DataError  # noqa: E402


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # listing never opens an image
    return path


@pytest.fixture
def folders(tmp_path):
    for person, n in (("bob", 2), ("alice", 3)):
        for i in range(n):
            touch(tmp_path / "people" / person / f"{i}.jpg")
    touch(tmp_path / "faces" / "b" / "10.png")
    touch(tmp_path / "faces" / "b" / "2.png")
    touch(tmp_path / "faces" / "a.jpg")
    touch(tmp_path / "faces" / ".thumbs" / "x.jpg")
    touch(tmp_path / "faces" / "notes.txt")
    write_pack(tmp_path / "faces_emore", [(b"img-a", 4), (b"img-b", 4), (b"img-c", 9)])
    return tmp_path


def spec(kind: str, path, aligned=False, **kw) -> PoolSpec:
    return PoolSpec(kind=kind, path=str(path), aligned=aligned, **kw)


def test_checked_spec_is_absolute_and_named(folders):
    s = spec("identities", "people").checked("data.pools[1]", folders)
    assert s.path == str(folders / "people") and s.name == "people"
    assert spec("recordio", folders / "faces_emore" / "train.rec", True).checked("p", folders).name == "faces_emore"
    assert spec("unlabelled", folders / "faces", name="web").checked("p", folders).name == "web"
    again = s.checked("p", Path("/elsewhere"))  # idempotent: an absolute path stays
    assert again == s


@pytest.mark.parametrize(
    "kind, path, kw, message",
    [
        ("folders", "people", {}, r"data.pools\[1\].kind must be one of identities .* got 'folders'"),
        ("identities", "people", {"aligned": None}, r"data.pools\[1\].aligned is required: true when"),
        ("identities", "nobody", {}, r"data.pools\[1\].path: .*nobody \(under the data root .*\): folder not found"),
        ("identities", "faces/b", {}, "holds no sub-folders .* kind: unlabelled"),
        ("recordio", "people", {"aligned": True}, r"train.rec not found -- point path at the folder holding train.rec"),
        ("identities", "people", {"name": "lfw"}, r"data.pools\[1\].name 'lfw' is a built-in pool's name -- set name:"),
        ("identities", "people", {"name": "my faces"}, "'my faces' is not a plain name"),
        ("identities", "people", {"max_images": 0}, r"data.pools\[1\].max_images must be >= 1 or null"),
        ("identities", "people", {"on_bad_image": "ignore"}, r"on_bad_image must be one of \('error', 'skip'\)"),
    ],
)
def test_bad_spec_names_the_key_and_the_fix(folders, kind, path, kw, message):
    kw = {"aligned": False, **kw}
    with pytest.raises(ConfigError, match=message):
        PoolSpec(kind=kind, path=path, **kw).checked("data.pools[1]", folders)


def test_missing_index_beside_the_pack(folders):
    (folders / "faces_emore" / "train.idx").unlink()
    with pytest.raises(ConfigError, match="train.idx not found beside train.rec -- the reader needs the pack's index"):
        spec("recordio", "faces_emore", True).checked("data.pools[2]", folders)


def test_pool_items_of_each_kind(folders):
    paths, labels = pool_items(spec("identities", "people").checked("p", folders))
    assert [p.relative_to(folders / "people").as_posix() for p in paths] == [
        "alice/0.jpg",
        "alice/1.jpg",
        "alice/2.jpg",
        "bob/0.jpg",
        "bob/1.jpg",
    ]
    assert labels == ["people:alice"] * 3 + ["people:bob"] * 2
    paths, labels = pool_items(spec("unlabelled", "faces").checked("p", folders))
    # recursive, natural order, hidden folders and non-images left out
    assert [p.relative_to(folders / "faces").as_posix() for p in paths] == ["a.jpg", "b/2.png", "b/10.png"]
    assert labels == [None] * 3
    images, labels = pool_items(spec("recordio", "faces_emore", True, max_images=2).checked("p", folders))
    assert [im.read() for im in images] == [b"img-a", b"img-b"] and labels == ["faces_emore:4"] * 2
    assert len(pool_items(spec("identities", "people", max_images=4).checked("p", folders))[0]) == 4


def test_aligned_settings_keep_the_photo_cache_keys():
    # the chip cache is keyed by these: a new field must not invalidate every cached chip
    assert align_settings_for("lfw").key() == "8f5e5e7ae992"
    assert align_settings_for("celeba").key() == "f68338b2e12e"
    chips = align_settings_for("anything", aligned=True)
    assert chips.fallback_box == (0.5, 0.5, 1.0) and chips.key() not in (AlignSettings().key(), "8f5e5e7ae992")


def test_an_aligned_chip_where_no_face_is_found_is_its_own_box():
    blank = np.full((112, 90, 3), 128, np.uint8)  # the detector finds no face: the fallback box stands in
    with pytest.raises(DataError, match="no face found"):
        FaceAligner(AlignSettings(on_missing="error")).align(blank)
    chip = FaceAligner(align_settings_for("x", aligned=True)).align(blank)
    photo = FaceAligner(align_settings_for("lfw")).align(blank)
    assert not chip.detected and chip.chip.shape == (150, 150, 3)
    # the predictor places its landmarks in the box: the centred 90 px square, not LFW's 39 px face box
    spread = lambda f: np.ptp(f.landmarks, axis=0)  # noqa: E731
    assert (spread(chip) > 2 * spread(photo)).all()
    assert chip.landmarks[:, 1].min() > 11 and chip.landmarks[:, 1].max() < 101


@pytest.mark.data
def test_an_aligned_crop_recut_matches_the_photo_chip(lfw_sample):
    """A tight 112 px crop around the face, aligned as a chip, gives the teacher nearly the photo's chip."""
    from aird.models.teacher import DlibTeacher

    photo = FaceAligner(align_settings_for("lfw"))
    chip = FaceAligner(align_settings_for("lfw", aligned=True))
    refs, recut = [], []
    for path in lfw_sample[:3]:
        image = load_rgb(path)
        face = photo.align(image)
        x0, y0 = face.landmarks.min(axis=0)
        x1, y1 = face.landmarks.max(axis=0)
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2 + 0.1 * (x1 - x0), 2.0 * (x1 - x0)
        crop = image[int(cy - side / 2) : int(cy + side / 2), int(cx - side / 2) : int(cx + side / 2)]
        refs.append(face.chip)
        recut.append(chip.align(np.ascontiguousarray(crop)).chip)
    teacher = DlibTeacher("torch")
    a, b = teacher.embed(np.stack(refs)), teacher.embed(np.stack(recut))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.97, cos
