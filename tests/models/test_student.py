"""Student weights files: round trip, safe loading, clear errors; the eval CLI accepts them."""

import pytest
import torch

from aird.errors import ModelFileError
from aird.models import get_model
from aird.models.load import load_embedder
from aird.models.student import load_student, save_student


def test_round_trip_and_embedder(tmp_path):
    model = get_model("lr_light")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    path = tmp_path / "student.safetensors"
    save_student(path, model, "lr_light", 16, note="test")
    loaded, meta = load_student(path)
    assert meta["model"] == "lr_light" and meta["input_size"] == "16" and meta["note"] == "test"
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    emb = load_embedder(str(path))
    # Named by its folder (no run metadata) and weights, never by the file stem shared by every run.
    assert emb.input_size == 16 and emb.name.startswith(f"{tmp_path.name}@") and emb.method == "unknown"
    faces = torch.randint(0, 255, (3, 16, 16, 3), dtype=torch.uint8).numpy()
    assert emb.embed(faces).shape == (3, 128)


def test_bad_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_student(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        load_student(bad)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="no aird metadata"):
        load_student(plain)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"w": torch.zeros(2)}, str(wrong), metadata={"model": "lr_light", "input_size": "16"})
    with pytest.raises(ModelFileError, match="do not fit model 'lr_light'"):
        load_student(wrong)


def test_flip_fused_embedder_is_mirror_invariant():
    from aird.models.embedder import FlipFused, TorchEmbedder

    fused = FlipFused(TorchEmbedder(get_model("lr_light").eval(), "light", 16))
    faces = torch.randint(0, 255, (2, 16, 16, 3), dtype=torch.uint8).numpy()
    a = fused.embed(faces)
    b = fused.embed(faces[:, :, ::-1].copy())
    assert a.shape == (2, 128) and abs(a - b).max() < 1e-5
    assert fused.fingerprint().endswith("-flipfuse") and fused.name == "light+flip"
