"""Streams as a camera sends them: orders, bursts, timed shifts, and embeddings put back in file order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aird.adapt.stream import StreamEmbedder, StreamSpec, night_shift
from aird.errors import ConfigError
from aird.models.embedder import TorchEmbedder

LABELS = ["ann"] * 3 + ["bob"] * 12 + ["cy"] + ["dee"] * 5


def test_file_and_shuffled_orders_show_every_face_once():
    assert StreamSpec(order="file").frames(LABELS).tolist() == list(range(len(LABELS)))
    shuffled = StreamSpec(order="shuffled", seed=3).frames(LABELS)
    assert sorted(shuffled.tolist()) == list(range(len(LABELS))) and shuffled.tolist() != list(range(len(LABELS)))
    assert np.array_equal(shuffled, StreamSpec(order="shuffled", seed=3).frames(LABELS))  # seeded
    assert not np.array_equal(shuffled, StreamSpec(order="shuffled", seed=4).frames(LABELS))


def test_grouped_order_is_bursts_of_k_frames_of_one_person():
    k = 5
    frames = StreamSpec(order="grouped", burst=k, seed=1).frames(LABELS)
    labels = np.array(LABELS)[frames]
    bursts = labels.reshape(-1, k)
    assert all(len(set(b)) == 1 for b in bursts)  # each burst is one person
    # ann (3 faces) and cy (1) are cycled to fill a burst; bob's 12 faces make 3 bursts, dee's 5 one.
    assert sorted(b[0] for b in bursts) == ["ann", "bob", "bob", "bob", "cy", "dee"]
    assert set(frames.tolist()) == set(range(len(LABELS)))  # nobody is left out
    assert (labels == "cy").sum() == k


def test_timed_shifts_grow_or_jump_along_the_stream():
    drift, jump = StreamSpec(order="drifting"), StreamSpec(order="day-night")
    assert [drift.shift_strength(i, 5) for i in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [jump.shift_strength(i, 6) for i in range(6)] == [0, 0, 0, 1, 1, 1]
    assert StreamSpec(order="grouped").shift_strength(9, 10) == 0.0
    face = np.full((48, 48, 3), 128, np.uint8)
    face[::2] = 200
    assert night_shift(face, 0.0, 16, key=1) is face
    night = night_shift(face, 1.0, 16, key=1)
    assert night.shape == face.shape and night.mean() < 0.6 * face.mean()  # darker
    assert np.array_equal(night, night_shift(face, 1.0, 16, key=1))  # the same frame shifts the same way
    assert not np.array_equal(night, night_shift(face, 1.0, 16, key=2))  # sensor noise differs by frame


def test_bad_specs_are_refused():
    with pytest.raises(ConfigError, match="order"):
        StreamSpec(order="random")
    with pytest.raises(ConfigError, match="batch"):
        StreamSpec(batch_size=0)
    with pytest.raises(ConfigError, match="burst"):
        StreamSpec(burst=0)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6)
    ).eval()


@pytest.mark.parametrize("order", ["shuffled", "grouped"])
def test_off_through_any_stream_is_the_plain_model_in_file_order(order):
    net = tiny()
    faces = np.random.default_rng(0).integers(0, 256, (len(LABELS), 10, 10, 3), dtype=np.uint8)
    spec = StreamSpec(order=order, batch_size=4, burst=5)
    stream = StreamEmbedder(net, "tiny", "off", LABELS, spec)
    got = stream.embed(faces)
    np.testing.assert_allclose(got, TorchEmbedder(net, "tiny").embed(faces), rtol=1e-5, atol=1e-5)
    settings = stream.settings()
    assert settings["order"] == order and settings["test_batch_size"] == 4
    assert settings["stream_length"] == len(spec.frames(LABELS))
    if order == "grouped":
        assert settings["burst"] == 5 and settings["stream_length"] == 30
    with pytest.raises(ValueError, match="21 faces"):
        stream.embed(faces[:3])


def test_adapted_streams_differ_by_order_and_adabn_gets_its_first_pass():
    net = tiny()
    faces = np.random.default_rng(1).integers(0, 256, (len(LABELS), 10, 10, 3), dtype=np.uint8)
    ema = [
        StreamEmbedder(net, "tiny", "facebn-ema", LABELS, StreamSpec(order=o, batch_size=2), momentum=0.5).embed(faces)
        for o in ("file", "shuffled")
    ]
    assert not np.allclose(ema[0], ema[1])  # adaptation makes a face's embedding depend on what came before
    drifting = StreamEmbedder(net, "tiny", "adabn", LABELS, StreamSpec(order="drifting", batch_size=4, res=None))
    out = drifting.embed(faces)
    assert out.shape == (len(LABELS), 6) and np.isfinite(out).all()
    assert drifting.settings()["timed_shift"]["schedule"] == "drifting"
