"""measure_speed: every model timed in each repeat, figures in the record shape, threads restored."""

import cv2
import numpy as np
import pytest
import torch

from aird.eval.records import make_record
from aird.eval.speed import measure_speed
from aird.models import get_model
from aird.models.embedder import TorchEmbedder


class Counting:
    """An embedder that counts the faces it is asked for, by batch size."""

    name = "counting"

    def __init__(self):
        self.calls: list[int] = []

    def fingerprint(self):
        return None

    def embed(self, faces):
        self.calls.append(len(faces))
        return np.zeros((len(faces), 128), np.float32)


def test_measure_speed_figures_and_settings():
    faces = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    counting = Counting()
    light = TorchEmbedder(get_model("lr_light"), "light", 16)
    saved = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    try:
        out = measure_speed(
            {"a": counting, "b": light}, faces, batch_size=16, repeats=3, warmup=1, latency_faces=5, threads=1
        )
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)  # the caller's settings come back
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])
    # warm-up: one batch; 3 repeats of 40 faces in batches of 16; 5 single faces
    assert counting.calls == [16] + [16, 16, 8] * 3 + [1] * 5
    for name in ("a", "b"):
        m, s = out[name]["metrics"], out[name]["settings"]
        assert set(m) == {"faces_per_s", "p50_ms", "p99_ms"} and m["faces_per_s"] > 0 and m["p99_ms"] >= m["p50_ms"]
        assert len(s["faces_per_s_runs"]) == 3 and s["threads"] == 1 and s["batch_size"] == 16
        assert s["faces"] == 40 and s["face_px"] == 16 and s["latency_faces"] == 5
        # the figures fit a result record as they are
        make_record(
            benchmark="lfw", task="verification", model=name, method="none", adapt="off", res=16,
            pairs="lr-lr", split="all", n=1, metrics=m, settings=s,
        )  # fmt: skip
    no_latency = measure_speed({"a": Counting()}, faces, repeats=1, latency_faces=0)["a"]["metrics"]
    assert set(no_latency) == {"faces_per_s"}  # a figure not measured is absent, never zero


def test_measure_speed_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        measure_speed({"a": Counting()}, np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        measure_speed({"a": Counting()}, np.zeros((0, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="repeats"):
        measure_speed({"a": Counting()}, np.zeros((4, 16, 16, 3), np.uint8), repeats=0)
