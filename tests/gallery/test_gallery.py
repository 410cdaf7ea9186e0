"""The gallery verbs on real faces: enrol ORL people from one HR photo each, identify tiny crops of them."""

import shutil

import numpy as np
import pytest
from PIL import Image
from students import lr_crop, orl_paths, write_student

import aird
from aird.gallery import GalleryError
from aird.results import NoFaceError

pytestmark = pytest.mark.data


@pytest.fixture
def watchlist(recognizer, data_root, tmp_path):
    gallery = recognizer.gallery(tmp_path / "watchlist.db")
    for name, [photo] in orl_paths(data_root, range(1, 6), range(1, 2)).items():
        result = gallery.enrol(name, photo)
        assert result.added == 1 and result.faces[0].route == "hr" and not result.skipped
    return gallery


def test_enrol_hr_photos_identify_16px_crops(watchlist, orl_chips):
    probes, truth = [], []
    for name, chips in orl_chips.items():
        for k in range(1, 5):  # images 2-5: never enrolled
            probes.append(lr_crop(chips[k], 16, f"{name}-{k}"))
            truth.append(name)
    results = watchlist.identify(probes, top_k=3, cropped=True)
    assert len(results) == len(probes)
    assert all(r.probe.route == "lr" and r.probe.face_px == 16 and len(r.candidates) == 3 for r in results)
    assert all(c.mode == "hr-lr" for r in results for c in r.candidates)
    rank1 = np.mean([r.candidates[0].name == t for r, t in zip(results, truth)])
    assert rank1 >= 0.6, rank1  # chance is 0.2
    for r in results:
        assert (r.status == "match") == (r.candidates[0].score >= r.candidates[0].threshold)
        assert r.status in ("match", "unknown") and (r.name is None) == (r.status == "unknown")


def test_identify_photos_and_a_photo_without_a_face(watchlist, data_root):
    photos = [data_root / "orl" / "s3" / "7.pgm", np.full((150, 150, 3), 90, np.uint8)]
    hit, nothing = watchlist.identify(photos, far=1e-2)
    assert hit.status == "match" and hit.name == "s3" and hit.probe.route == "hr" and hit.far == 1e-2
    assert nothing.status == "no_face" and "cropped=True" in nothing.probe.message
    assert [p.name for p in watchlist.list()] == ["s1", "s2", "s3", "s4", "s5"]
    assert watchlist.remove("s3") == 1
    again = watchlist.identify(data_root / "orl" / "s3" / "7.pgm")[0]
    assert "s3" not in [c.name for c in again.candidates]


def test_a_gallery_of_another_model(watchlist, tmp_path, orl_chips):
    other = aird.load(write_student(tmp_path / "light.safetensors", model="lr_light"))
    crop = lr_crop(orl_chips["s1"][1], 16, "k")
    with pytest.raises(GalleryError, match="made by model 'test-student'") as err:
        other.gallery(watchlist.path).identify(crop, cropped=True)
    assert other.fingerprint in str(err.value)
    with pytest.raises(GalleryError, match="made by model"):
        other.gallery(watchlist.path).enrol("s9", orl_chips["s1"][0], cropped=True)


def test_unknown_gallery_for_identify(recognizer, tmp_path, orl_chips):
    with pytest.raises(GalleryError, match="no such gallery"):
        recognizer.gallery(tmp_path / "typo.db").identify(orl_chips["s1"][0], cropped=True)
    assert not (tmp_path / "typo.db").exists()


def test_enrol_errors_lose_nothing(watchlist, tmp_path, orl_chips):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(aird.DataError, match="bad.jpg"):
        watchlist.enrol("s6", [orl_chips["s1"][0], bad])
    with pytest.raises(NoFaceError, match="no face to enrol"):
        watchlist.enrol("s6", np.full((200, 200, 3), 90, np.uint8))
    assert "s6" not in [p.name for p in watchlist.list()]


def test_enrol_a_folder_with_bad_files(recognizer, data_root, tmp_path):
    known = tmp_path / "known"
    for k in (1, 2):
        (known / f"person{k}").mkdir(parents=True)
        for n in (1, 2):
            shutil.copy(data_root / "orl" / f"s{k}" / f"{n}.pgm", known / f"person{k}" / f"{n}.pgm")
    (known / "person1" / "broken.jpg").write_bytes(b"")
    (known / "person2" / "notes.txt").write_text("hello")
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(known / "person2" / "wall.png")
    (known / "loose.jpg").write_bytes(b"x")
    (known / "empty").mkdir()
    gallery = recognizer.gallery(tmp_path / "g.db")
    results, skipped = gallery.enrol_folder(known)
    assert {r.name: r.added for r in results} == {"empty": 0, "person1": 2, "person2": 2}
    reasons = {s.source.split("/")[-1]: s.reason for s in skipped}
    assert set(reasons) == {"loose.jpg", "broken.jpg", "notes.txt", "wall.png", "empty"}
    assert "empty" in reasons["broken.jpg"] and "not a readable image" in reasons["notes.txt"]
    assert "no face found" in reasons["wall.png"] and "sub-folder" in reasons["loose.jpg"]
    assert [(p.name, p.embeddings) for p in gallery.list()] == [("person1", 2), ("person2", 2)]
