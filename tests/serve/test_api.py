"""Every endpoint over TestClient, and every bad input the service must answer with a clear JSON error.

Faces here are random crops taken with ``cropped=true`` (any crop is a face then), so these tests need
no face data; tests/serve/test_faces.py runs the same endpoints on real ORL faces."""

import struct
import threading
import time
import zlib

import numpy as np
import pytest
from serving import files, noise, png

from aird.adapt.streams import DEFAULT_STREAM_ADAPT
from aird.gallery import GalleryStore
from aird.serve.keys import add_key

CROP = {"cropped": "true"}


def error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["reason"]
    return body["error"]["reason"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header promises width x height pixels, with almost no pixel data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_health_docs_and_page(make_client):
    client = make_client()
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "test-student" and health["auth"] == "off"
    assert health["adapt"] == DEFAULT_STREAM_ADAPT  # the recognizer's default, the safest measured mode
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/represent",
        "/v1/verify",
        "/v1/galleries/{gallery}/people",
        "/v1/galleries/{gallery}/people/{name}",
        "/v1/galleries/{gallery}/identify",
        "/v1/streams/{camera}",
        "/healthz",
    ):
        assert path in paths, path
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "app.js" in page.text
    assert "identify" in client.get("/static/app.js").text
    info = client.get("/v1/info").json()
    assert info["recognizer"]["card"]["thresholds"]["hr-lr"]["1e-3"] == 0.927 and info["limits"]["max_faces"] == 32


def test_represent_and_verify_crops(make_client):
    client = make_client()
    a, b = png(noise(16, 1)), png(noise(150, 2))
    r = client.post("/v1/represent", files=files("images", a, b), data=CROP)
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert [f["source"] for f in faces] == ["img0.png", "img1.png"]
    assert [f["route"] for f in faces] == ["lr", "hr"] and [f["face_px"] for f in faces] == [16, 150]
    assert abs(np.linalg.norm(faces[0]["embedding"]) - 1) < 1e-5
    lean = client.post("/v1/represent", files=files("images", a), data={**CROP, "embeddings": "false"}).json()
    assert "embedding" not in lean["faces"][0]
    same = client.post(
        "/v1/verify",
        files=[("a", ("a.png", a, "image/png")), ("b", ("b.png", a, "image/png"))],
        data={"cropped_a": "true", "cropped_b": "true"},
    ).json()
    assert (
        same["verified"] and same["mode"] == "lr-lr" and same["similarity"] > 0.999 and same["a"]["source"] == "a.png"
    )
    assert same["threshold"] == 0.957 and same["far"] == 1e-3


def test_gallery_endpoints(make_client):
    client = make_client()
    alice, bob = png(noise(150, 3)), png(noise(150, 4))
    r = client.post("/v1/galleries/staff/people", data={"name": "alice", **CROP}, files=files("images", alice))
    assert r.status_code == 201 and r.json()["added"] == 1 and r.json()["gallery"] == "staff"
    client.post("/v1/galleries/staff/people", data={"name": "bob", **CROP}, files=files("images", bob, bob))
    people = client.get("/v1/galleries/staff/people").json()["people"]
    assert [(p["name"], p["embeddings"]) for p in people] == [("alice", 1), ("bob", 2)]
    assert client.get("/v1/galleries").json() == {"galleries": ["staff"]}
    r = client.post("/v1/galleries/staff/identify", data={**CROP, "top_k": "2"}, files=files("probes", alice))
    [result] = r.json()["results"]
    assert result["status"] == "match" and result["name"] == "alice" and result["score"] > 0.999
    assert [c["name"] for c in result["candidates"]] == ["alice", "bob"] and result["probe"]["source"] == "img0.png"
    r = client.delete("/v1/galleries/staff/people/alice")
    assert r.json() == {"gallery": "staff", "removed": "alice", "embeddings": 1}
    error(client.delete("/v1/galleries/staff/people/alice"), 404, "unknown_person")
    [result] = client.post("/v1/galleries/staff/identify", data=CROP, files=files("probes", alice)).json()["results"]
    assert [c["name"] for c in result["candidates"]] == ["bob"]


def test_streams_endpoints(make_client):
    client = make_client()
    client.post("/v1/galleries/g/people", data={"name": "a", **CROP}, files=files("images", png(noise(150))))
    r = client.post(
        "/v1/galleries/g/identify",
        data={**CROP, "stream": "cam-1"},
        files=files("probes", png(noise(16)), png(noise(12))),
    )
    assert r.json()["stream"]["faces"] == 2 and r.json()["results"][0]["probe"]["stream"] == "cam-1"
    shown = client.get("/v1/streams/cam-1").json()
    assert shown["stream"] == "cam-1" and shown["faces"] == 2 and shown["batches"] == 1
    assert shown["adapter"]["adapter"] == DEFAULT_STREAM_ADAPT
    assert [s["stream"] for s in client.get("/v1/streams").json()["streams"]] == ["cam-1"]
    assert client.delete("/v1/streams/cam-1").json()["faces"] == 0
    assert client.get("/v1/streams/never-seen").json()["faces"] == 0
    error(client.get("/v1/streams/" + "x" * 300), 422, "bad_request")


@pytest.mark.parametrize(
    "data, code, words",
    [
        (b"", "bad_image", "empty (0 bytes)"),
        (png(noise(64))[:200], "bad_image", "truncated"),
        (b"%PDF-1.4 not an image at all", "bad_image", "not a readable image"),
        (png(noise(1)), "bad_image", "too small"),
    ],
    ids=["zero-byte", "truncated", "non-image", "1x1"],
)
def test_bad_images_are_named_and_refused(make_client, data, code, words):
    client = make_client()
    reason = error(client.post("/v1/represent", files=[("images", ("upload.jpg", data, "image/jpeg"))]), 422, code)
    assert "upload.jpg" in reason and words in reason


def test_huge_images_are_refused_before_decoding(make_client):
    client = make_client(max_pixels=100_000)
    bomb = png_header_only(20_000, 20_000)
    assert len(bomb) < 200  # 400 megapixels promised by a tiny file
    reason = error(
        client.post("/v1/represent", files=[("images", ("bomb.png", bomb, "image/png"))]), 413, "image_too_large"
    )
    assert "bomb.png" in reason
    reason = error(client.post("/v1/represent", files=files("images", png(noise(400)))), 413, "image_too_large")
    assert "400x400" in reason and "100,000" in reason


def test_photo_without_a_face(make_client):
    client = make_client()
    blank = png(np.full((200, 200, 3), 128, np.uint8))
    [face] = client.post("/v1/represent", files=files("images", blank)).json()["faces"]
    assert not face["found"] and "no face found" in face["message"] and "cropped" in face["message"]
    reason = error(
        client.post("/v1/verify", files=[("a", ("a.png", blank, "image/png")), ("b", ("b.png", blank, "image/png"))]),
        422,
        "no_face",
    )
    assert "no face found" in reason
    reason = error(
        client.post("/v1/galleries/g/people", data={"name": "x"}, files=files("images", blank)), 422, "no_face"
    )
    assert (
        not (client.app.state.service.galleries_dir / "g.db").exists()
        or client.get("/v1/galleries/g/people").json()["people"] == []
    )


def test_unknown_and_badly_named_galleries(make_client):
    client = make_client()
    for r in (
        client.get("/v1/galleries/nobody/people"),
        client.post("/v1/galleries/nobody/identify", data=CROP, files=files("probes", png(noise(16)))),
        client.delete("/v1/galleries/nobody/people/x"),
    ):
        assert "nobody" in error(r, 404, "unknown_gallery")
    assert not (client.app.state.service.galleries_dir / "nobody.db").exists()
    error(client.get("/v1/galleries/..hidden/people"), 422, "bad_request")


def test_gallery_of_another_model(make_client, tmp_path):
    client = make_client()
    path = client.app.state.service.galleries_dir / "old.db"
    vector = np.ones((1, 128), np.float32) / np.sqrt(128)
    GalleryStore(path).add("x", vector, ["hr"], ["x.jpg"], [100], "0123456789abcdef", "older-student")
    for r in (
        client.post("/v1/galleries/old/identify", data=CROP, files=files("probes", png(noise(16)))),
        client.post("/v1/galleries/old/people", data={"name": "y", **CROP}, files=files("images", png(noise(150)))),
    ):
        reason = error(r, 409, "model_mismatch")
        assert "older-student" in reason and "test-student" in reason and str(path) not in reason
    assert [p.name for p in GalleryStore(path).people()] == ["x"]  # nothing was added


def test_limits_on_body_and_images_per_request(make_client):
    client = make_client(max_body_mb=0.01, max_faces=2)
    big = png(noise(100))  # ~30 kB of noise: over 10 kB
    assert len(big) > 0.01 * 1024 * 1024
    reason = error(client.post("/v1/represent", files=files("images", big), data=CROP), 413, "body_too_large")
    assert "request body (3" in reason and "limit of 10 kB" in reason  # ~30 kB of image and form

    def chunks():  # no Content-Length: the limit is checked while the body streams in
        yield b"x" * 8000
        yield b"x" * 8000

    r = client.post("/v1/represent", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    error(r, 413, "body_too_large")
    small = png(noise(16))
    reason = error(
        client.post("/v1/represent", files=files("images", small, small, small), data=CROP), 422, "too_many_images"
    )
    assert "at most 2" in reason
    assert client.post("/v1/represent", files=files("images", small, small), data=CROP).status_code == 200


def test_bad_fields_and_routes(make_client):
    client = make_client()
    crop = files("probes", png(noise(16)))
    client.post("/v1/galleries/g/people", data={"name": "a", **CROP}, files=files("images", png(noise(150))))
    assert "top_k" in error(
        client.post("/v1/galleries/g/identify", data={"top_k": "0"}, files=crop), 422, "bad_request"
    )
    assert "far" in error(client.post("/v1/galleries/g/identify", data={"far": "2"}, files=crop), 422, "bad_request")
    assert "1e-05" in error(
        client.post("/v1/galleries/g/identify", data={**CROP, "far": "1e-5"}, files=crop), 422, "bad_request"
    )  # not calibrated in the card: says which are
    assert "probes" in error(client.post("/v1/galleries/g/identify", data=CROP), 422, "bad_request")
    blank_name = client.post(
        "/v1/galleries/g/people", data={"name": " ", **CROP}, files=files("images", png(noise(150)))
    )
    assert "name" in error(blank_name, 422, "bad_request")
    error(client.get("/v1/nothing-here"), 404, "not_found")
    error(client.put("/v1/represent"), 405, "method_not_allowed")


def test_api_keys(make_client, tmp_path):
    data = tmp_path / "data"
    staff = add_key(data / "keys.json", "staff-only", ["staff"])
    admin = add_key(data / "keys.json", "admin", ["*"])
    client = make_client(data_dir=data)
    assert client.get("/healthz").json()["auth"] == "keys"  # health needs no key
    enrol = {"data": {"name": "a", **CROP}, "files": files("images", png(noise(150)))}
    r = client.post("/v1/galleries/staff/people", **enrol)
    assert "Bearer" in error(r, 401, "unauthorized") and r.headers["www-authenticate"] == "Bearer"
    error(
        client.post("/v1/galleries/staff/people", headers={"Authorization": "Bearer aird_wrong"}, **enrol),
        401,
        "unauthorized",
    )
    error(client.get("/v1/streams/cam", headers={"Authorization": "Basic eDp5"}), 401, "unauthorized")
    ok = client.post("/v1/galleries/staff/people", headers={"Authorization": f"Bearer {staff}"}, **enrol)
    assert ok.status_code == 201
    reason = error(
        client.get("/v1/galleries/vip/people", headers={"Authorization": f"Bearer {staff}"}), 403, "forbidden"
    )
    assert "staff-only" in reason and "vip" in reason
    assert client.get("/v1/galleries/staff/people", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    assert client.get("/v1/galleries", headers={"Authorization": f"Bearer {staff}"}).json() == {"galleries": ["staff"]}
    error(client.post("/v1/represent", files=files("images", png(noise(16))), data=CROP), 401, "unauthorized")


def test_a_full_pool_answers_503_at_once(make_client):
    client = make_client(workers=1, queue=0)
    pool = client.app.state.service.pool
    release = threading.Event()
    blocker = pool.try_submit(release.wait)
    try:
        r = client.post("/v1/represent", files=files("images", png(noise(16))), data=CROP)
        assert "busy" in error(r, 503, "busy") and r.headers["retry-after"] == "2"
        assert client.get("/healthz").json()["in_flight"] == 1
    finally:
        release.set()
        blocker.result(timeout=30)
    deadline = time.monotonic() + 10
    while pool.in_flight and time.monotonic() < deadline:  # the slot is freed just after the job's result is set
        time.sleep(0.01)
    assert client.post("/v1/represent", files=files("images", png(noise(16))), data=CROP).status_code == 200


def test_the_face_limit_is_checked_before_embedding(serve_recognizer, monkeypatch):
    from aird.results import TooManyFacesError

    monkeypatch.setattr(serve_recognizer, "_embed", lambda *a: pytest.fail("embedded faces over the limit"))
    with pytest.raises(TooManyFacesError, match="3 faces found in 3 image"):
        serve_recognizer.represent([noise(16)] * 3, cropped=True, max_faces=2)
