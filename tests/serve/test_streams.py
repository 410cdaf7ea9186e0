"""Per-camera FaceBN over HTTP: a named stream adapts its own statistics only, never another camera's or
the plain path (enrolment), its state shows and resets, and it is on disk after every request, so an app
started later on the same data dir (after a crash too) continues where the last one stopped."""

import numpy as np
import pytest
from serving import files, noise, png

import aird
from aird.errors import ConfigError

CROPS = [png(noise(16, seed)) for seed in range(6)]


@pytest.fixture
def adaptive(student_file):
    """A stateful adapter (facebn-ema): each app of these tests gets its own, as a restarted server would."""
    return lambda: aird.load(student_file, adapt="facebn-ema", momentum=0.5)


def represent(client, stream=None, crops=CROPS):
    data = {"cropped": "true", **({"stream": stream} if stream else {})}
    r = client.post("/v1/represent", data=data, files=files("images", *crops))
    assert r.status_code == 200, r.text
    return r.json(), np.array([f["embedding"] for f in r.json()["faces"]])


def test_streams_are_isolated_and_persist_across_a_restart(make_client, adaptive, tmp_path):
    first = make_client(adaptive())
    _, plain = represent(first)
    for _ in range(3):
        body, adapted = represent(first, "cam-a")
    assert {f["adapt"] for f in body["faces"]} == {"facebn-ema"} and body["stream"]["faces"] == 3 * len(CROPS)
    assert np.abs(adapted - plain).max() > 1e-3  # camera a's statistics moved
    assert np.array_equal(represent(first)[1], plain)  # the plain path (enrolment) did not
    cam_b = first.get("/v1/streams/cam-b").json()
    assert cam_b["faces"] == 0 and cam_b["shift"] == 0.0  # nor did camera b
    cam_a = first.get("/v1/streams/cam-a").json()
    assert cam_a["shift"] > 0 and cam_a["batches"] == 3 and cam_a["adapter"]["adapter"] == "facebn-ema"

    # A second app on the same data dir, the first still running (as after a kill -9: no shutdown hook ran).
    second = make_client(adaptive())
    again = second.get("/v1/streams/cam-a").json()
    assert {k: again[k] for k in ("faces", "batches", "shift")} == {k: cam_a[k] for k in ("faces", "batches", "shift")}
    # Same state, same next step: both apps embed camera a's next batch alike.
    assert np.abs(represent(second, "cam-a")[1] - represent(first, "cam-a")[1]).max() < 1e-5
    # A camera met first on the second app starts from the training statistics, as on a fresh adapter.
    fresh = make_client(adaptive(), data_dir=tmp_path / "other")
    assert np.abs(represent(second, "cam-c")[1] - represent(fresh, "cam-c")[1]).max() < 1e-5

    reset = second.delete("/v1/streams/cam-a").json()
    assert reset["faces"] == 0 and reset["shift"] == 0.0
    third = make_client(adaptive())
    assert third.get("/v1/streams/cam-a").json()["faces"] == 0  # the reset is on disk too
    assert third.get("/v1/streams/cam-c").json()["faces"] == len(CROPS)


def test_state_of_another_model_or_mode_is_kept_apart(make_client, adaptive, serve_recognizer):
    adapting = make_client(adaptive())
    represent(adapting, "cam-a")
    # The default recognizer (another adaptation mode) starts its own streams, and leaves these alone.
    plain = make_client(serve_recognizer)
    assert plain.get("/v1/streams/cam-a").json()["faces"] == 0
    represent(plain, "cam-a")
    assert make_client(adaptive()).get("/v1/streams/cam-a").json()["faces"] == len(CROPS)


def test_adapt_setting_must_match_a_given_recognizer(tmp_path, serve_recognizer):
    from aird.serve import ServeSettings, create_app

    with pytest.raises(ConfigError, match="facebn-ema"):
        create_app(ServeSettings(data_dir=tmp_path, adapt="facebn-ema"), serve_recognizer)


def test_only_the_cleared_cameras_adapt(make_client, student_file):
    client = make_client(aird.load(student_file, adapt="facebn-ema", momentum=0.5, adapt_streams=["cam-a"]))
    _, plain = represent(client)
    body, adapted = represent(client, "cam-a")
    assert {f["adapt"] for f in body["faces"]} == {"facebn-ema"} and np.abs(adapted - plain).max() > 1e-3
    body, other = represent(client, "cam-b")  # not cleared: the plain model, counted
    assert {f["adapt"] for f in body["faces"]} == {"off"} and np.array_equal(other, plain)
    assert body["stream"]["faces"] == len(CROPS) and body["stream"]["adapt"] == "off"
    assert client.get("/healthz").json()["adapt_streams"] == ["cam-a"]


def test_a_given_recognizer_must_limit_the_same_cameras(make_client, student_file):
    limited = aird.load(student_file, adapt="facebn-ema", adapt_streams=["cam-a"])
    with pytest.raises(ConfigError, match="adapt_streams"):
        make_client(limited, adapt="facebn-ema", adapt_streams=["cam-b"])
