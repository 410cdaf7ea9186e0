"""The endpoints on real faces (ORL): enrol from photos, identify 16 px crops, verify, several faces in one
photo and the per-request face limit; each answer equals the Python verb's on the same images."""

import numpy as np
import pytest
from serving import files, png
from students import lr_crop

pytestmark = pytest.mark.data


@pytest.fixture
def client(make_client):
    return make_client(max_faces=3)


def test_enrol_photos_identify_crops_as_the_python_verbs_do(client, orl_chips, data_root, serve_recognizer, tmp_path):
    photos = {name: (data_root / "orl" / name / "1.pgm").read_bytes() for name in orl_chips}
    for name, photo in photos.items():
        r = client.post(
            "/v1/galleries/orl/people", data={"name": name}, files=[("images", (f"{name}.pgm", photo, "image/x-pgm"))]
        )
        assert r.status_code == 201, r.text
        [face] = r.json()["faces"]
        assert face["route"] == "hr" and face["source"] == f"{name}.pgm" and not face["cropped"]
    crops = [lr_crop(chips[k], 16, f"{name}-{k}") for name, chips in orl_chips.items() for k in (1, 2)]
    truth = [name for name in orl_chips for _ in (1, 2)]
    results = []
    for i in range(0, len(crops), 3):
        r = client.post(
            "/v1/galleries/orl/identify",
            data={"cropped": "true", "top_k": "3"},
            files=files("probes", *(png(c) for c in crops[i : i + 3])),
        )
        assert r.status_code == 200, r.text
        results += r.json()["results"]
    rank1 = np.mean([r["candidates"][0]["name"] == t for r, t in zip(results, truth)])
    assert rank1 >= 0.6, rank1  # chance is 0.2
    assert all(c["mode"] == "hr-lr" and r["probe"]["face_px"] == 16 for r in results for c in r["candidates"])
    # The same verbs in Python on the same images give the same answers.
    gallery = serve_recognizer.gallery(tmp_path / "same.db")
    for name, photo in photos.items():
        gallery.enrol(name, photo)
    direct = gallery.identify(crops, top_k=3, cropped=True)
    for over_http, here in zip(results, direct):
        assert [c["name"] for c in over_http["candidates"]] == [c.name for c in here.candidates]
        assert abs(over_http["score"] - here.score) < 1e-5 and over_http["status"] == here.status


def test_verify_real_faces_as_the_python_verb_does(client, orl_chips, serve_recognizer):
    crops = {"cropped_a": "true", "cropped_b": "true"}  # aligned chips: the detector may miss a face cut so tight
    for a, b in ((orl_chips["s1"][0], orl_chips["s1"][2]), (orl_chips["s1"][0], orl_chips["s2"][0])):
        r = client.post("/v1/verify", files={"a": ("a.png", png(a)), "b": ("b.png", png(b))}, data=crops).json()
        here = serve_recognizer.verify(a, b, cropped=True)
        assert r["mode"] == here.mode == "hr-hr" and r["verified"] == here.verified
        assert abs(r["similarity"] - here.similarity) < 1e-5 and r["threshold"] == here.threshold


def test_several_faces_and_the_face_limit(make_client, orl_chips):
    two = png(np.concatenate([orl_chips["s1"][0], orl_chips["s2"][0]], axis=1))  # two people in one photo
    faces = make_client(max_faces=2).post("/v1/represent", files=files("images", two)).json()["faces"]
    assert len(faces) == 2 and all(f["found"] and f["faces_in_image"] == 2 for f in faces)
    r = make_client(max_faces=3).post("/v1/represent", files=files("images", two, two))
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_faces"
    assert "4 faces" in r.json()["error"]["reason"] and "at most 3" in r.json()["error"]["reason"]
