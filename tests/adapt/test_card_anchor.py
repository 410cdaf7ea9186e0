"""A student's own facebn-safe anchor, carried on its model card: read, written, and used by aird.load()."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aird.adapt.safe import CARD_ANCHOR, card_anchor
from aird.errors import ModelFileError
from aird.models.shipped import read_card, write_card
from aird.models.student import file_fingerprint

sys.path[:0] = [str(Path(__file__).parents[1] / "eval"), str(Path(__file__).parents[1] / "recognizer")]
from small_run import load_benchmark  # noqa: E402
from students import CARD, write_student  # noqa: E402


def anchored(vector) -> dict:
    return {**CARD, CARD_ANCHOR: {"vector": list(vector), "what": "test"}}


def test_a_card_without_an_anchor_has_none_and_a_valid_one_reads_back():
    assert card_anchor(CARD, "x.safetensors") is None
    v = np.linspace(-1, 1, 128)
    assert np.allclose(card_anchor(anchored(v), "x.safetensors"), v)


@pytest.mark.parametrize(
    "entry",
    [{"vector": [0.0] * 8}, {"vector": [1.0, float("nan")]}, {"vector": []}, {"vector": "abc"}, {"no": 1}, [1, 2]],
)
def test_a_malformed_card_anchor_is_a_clear_error_naming_the_file(entry):
    with pytest.raises(ModelFileError, match=r"student\.safetensors.*adapt_anchor.*make_student_anchor"):
        card_anchor({CARD_ANCHOR: entry}, "student.safetensors")


def test_rewriting_the_card_keeps_the_weights_byte_for_byte(tmp_path):
    path = write_student(tmp_path / "s.safetensors", model="lr_resnet")
    before = file_fingerprint(path)
    write_card(path, anchored(np.ones(128)))
    assert file_fingerprint(path) == before
    assert read_card(path)[CARD_ANCHOR]["vector"] == [1.0] * 128
    from aird.models.student import load_student

    _, meta = load_student(path)
    assert meta["model"] == "lr_resnet" and meta["input_size"] == "16"
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]  # no temporary file left behind


def test_load_adapts_towards_the_cards_anchor_and_an_explicit_one_wins(tmp_path):
    import aird

    v = torch.randn(128, generator=torch.Generator().manual_seed(0))
    with_anchor = write_student(tmp_path / "a.safetensors", card=anchored(v.tolist()), model="lr_resnet")
    without = write_student(tmp_path / "b.safetensors", model="lr_resnet")

    rec = aird.load(with_anchor, adapt="facebn-safe")
    assert torch.allclose(rec.streams.adapter.anchor, F.normalize(v, dim=0), atol=1e-6)
    assert rec.streams.adapter.settings()["anchor"] == "model card"
    assert aird.load(without, adapt="facebn-safe").streams.adapter.settings()["anchor"] == "teacher"
    mine = torch.ones(128)
    explicit = aird.load(with_anchor, adapt="facebn-safe", anchor=mine).streams.adapter
    assert torch.allclose(explicit.anchor, F.normalize(mine, dim=0)) and explicit.settings()["anchor"] == "custom"
    assert aird.load(with_anchor).streams.adapter is None  # off by default: the anchor is never needed


def test_the_own_anchor_is_the_mean_direction_of_the_models_unit_embeddings():
    anchor_script = load_benchmark("make_student_anchor")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 8)).eval()
    faces = np.random.default_rng(0).integers(0, 256, (70, 16, 16, 3), dtype=np.uint8)
    anchor, cos = anchor_script.own_anchor(model, faces, 16, batch=32)
    with torch.no_grad():
        unit = F.normalize(model(torch.from_numpy(faces).permute(0, 3, 1, 2).float()).double(), dim=1)
    expected = F.normalize(unit.mean(0), dim=0)
    assert np.allclose(anchor, expected.numpy(), atol=1e-6)
    assert np.allclose(cos, (unit @ expected).numpy(), atol=1e-6) and cos.shape == (70,)
