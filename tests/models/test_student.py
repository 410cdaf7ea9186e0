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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_files_load_as_float32_eval_modules(tmp_path, dtype):
    from safetensors import safe_open

    model = get_model("lr_light")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    save_student(full, model, "lr_light", 16)
    save_student(half, model, "lr_light", 16, dtype=dtype)
    with safe_open(str(half), framework="pt") as fh:
        stored = {k: fh.get_tensor(k) for k in fh.keys()}
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {dtype}
    assert stored["features.0.1.num_batches_tracked"].dtype == torch.int64  # integer buffers keep their type
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, meta = load_student(half)
    assert not loaded.training and meta["model"] == "lr_light"
    assert all(t.dtype == torch.float32 for t in loaded.state_dict().values() if t.is_floating_point())
    for k, v in model.state_dict().items():
        want = v.to(dtype).float() if v.is_floating_point() else v
        assert torch.equal(loaded.state_dict()[k], want), k
    x = torch.rand(2, 3, 16, 16) * 255
    with torch.no_grad():
        y = loaded(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_weights_fingerprint_names_the_stored_weights(tmp_path):
    from aird.models.student import file_fingerprint

    model = get_model("lr_light")
    a, b, c, d = (tmp_path / f"{k}.safetensors" for k in "abcd")
    save_student(a, model, "lr_light", 16, note="one")
    save_student(b, model, "lr_light", 16, note="another")  # metadata is not hashed
    save_student(c, model, "lr_light", 16, dtype=torch.float16)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    save_student(d, model, "lr_light", 16)
    fa, fb, fc, fd = (file_fingerprint(p) for p in (a, b, c, d))
    assert fa == fb and len({fa, fc, fd}) == 3
