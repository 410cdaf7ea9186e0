"""Every registered model: builds by name, forward and backward at its input size, no NaN, right shapes."""

import numpy as np
import pytest
import torch

from aird.errors import ConfigError
from aird.models import get_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_forward_backward(name):
    model = get_model(name)
    size = getattr(model, "input_size", 150)
    x = torch.rand(4, 3, size, size) * 255
    model.train()
    y = model(x)
    assert y.shape == (4, 128) and torch.isfinite(y).all()
    y.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        y1, y2 = model(x[:1]), model(x)[:1]
    assert torch.allclose(y1, y2, atol=1e-4)  # eval mode: a face's embedding does not depend on its batch


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_to_onnx(name, tmp_path):
    """The exported graph computes what the module computes, at any batch size (the batch axis is dynamic)."""
    from aird.models.export import export_onnx, run_onnx

    model = get_model(name).eval()
    size = getattr(model, "input_size", 150)
    path = export_onnx(model, tmp_path / f"{name}.onnx", size)
    x = torch.rand(3, 3, size, size) * 255
    with torch.no_grad():
        want = model(x).numpy()
    for batch in (x, x[:1]):
        got = run_onnx(path, batch)
        ref = want[: len(batch)]
        assert got.shape == ref.shape and np.isfinite(got).all()
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() >= 0.9999
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError, match="dlib_resnet_bn"):
        get_model("resnet9000")
