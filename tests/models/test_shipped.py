"""The shipped student's path and the model card of any student file."""

import json

import pytest

from aird.errors import ModelFileError
from aird.models import get_model, shipped
from aird.models.shipped import default_student_path, read_card
from aird.models.student import save_student


def test_default_student_path_names_the_build_command_when_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "SHIPPED_PATH", tmp_path / "assets" / "aird_shipped.safetensors")
    with pytest.raises(ModelFileError, match="configs/shipped.yaml.*benchmarks/shipped.py"):
        default_student_path()
    save_student(shipped.SHIPPED_PATH, get_model("lr_light"), "lr_light", 16)
    assert default_student_path() == shipped.SHIPPED_PATH


def test_students_that_ship_are_found_by_name(tmp_path, monkeypatch):
    from aird.models.load import load_embedder
    from aird.models.shipped import shipped_student_path

    monkeypatch.setattr(shipped, "FAST_PATH", tmp_path / "assets" / "aird_fast.safetensors")
    with pytest.raises(ModelFileError, match="fast student is not in this checkout.*configs/fast.yaml"):
        shipped_student_path("fast")
    save_student(shipped.FAST_PATH, get_model("lr_resnet"), "lr_resnet", 16, method="aird", run="aird-fast-all")
    assert shipped_student_path("fast") == shipped.FAST_PATH
    embedder = load_embedder("fast")
    assert embedder.input_size == 16 and embedder.name.startswith("aird-fast-all@")
    with pytest.raises(ModelFileError, match="no shipped student named 'quick'.*shipped, fast"):
        shipped_student_path("quick")


def test_shipped_path_is_package_data():
    assert shipped.SHIPPED_PATH.parent.name == "assets" and shipped.SHIPPED_PATH.suffix == ".safetensors"
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"assets/*.safetensors"' in pyproject


def test_read_card(tmp_path):
    model = get_model("lr_light")
    plain, carded, broken = (tmp_path / f"{k}.safetensors" for k in ("plain", "carded", "broken"))
    save_student(plain, model, "lr_light", 16)
    assert read_card(plain) == {}
    card = {"name": "tiny", "thresholds": {"lr-lr": {"1e-3": 0.5}}, "fingerprint": "abc"}
    save_student(carded, model, "lr_light", 16, card=json.dumps(card))
    assert read_card(carded) == card
    save_student(broken, model, "lr_light", 16, card="{not json")
    with pytest.raises(ModelFileError, match="model card .* not valid JSON"):
        read_card(broken)
    with pytest.raises(ModelFileError, match="not found"):
        read_card(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        read_card(junk)


@pytest.mark.parametrize("which", shipped.SHIPPED_STUDENTS)
def test_every_shipped_file_carries_its_card_and_embeds(which):
    """The files in the package: each card names the weights it was packaged with, calibrated thresholds
    and a registered architecture, and the file embeds faces at its input size by its name."""
    import numpy as np

    from aird.models.load import load_embedder
    from aird.models.registry import list_models
    from aird.models.shipped import shipped_student_path
    from aird.models.student import file_fingerprint

    path = shipped_student_path(which)
    card = read_card(path)
    assert card["fingerprint"] == file_fingerprint(path) and card["architecture"] in list_models()
    assert card["weights_dtype"] == "float16" and card["name"].startswith("aird-")
    assert all(0 < t < 1 for mode in ("lr-lr", "hr-lr") for t in card["thresholds"][mode].values())
    embedder = load_embedder(which)
    assert embedder.input_size == card["input_size"]
    faces = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    emb = embedder.embed(faces)
    assert emb.shape == (2, 128) and np.isfinite(emb).all()
