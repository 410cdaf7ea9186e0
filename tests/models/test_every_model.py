"""Every registered model (timm-style, parametrized over ``list_models()``, so a newly registered student is
tested without a line here): forward at its smallest and its default input size, backward, (N, 128)
embeddings with no NaN, a face's embedding independent of its batch in eval mode, and an ONNX export that
onnxruntime runs to the same embeddings at any batch size.

dlib's models load the real weights (converted once, then read from the cache: well under a second); every
other name builds its network randomly initialised, as the registry does.
"""

import numpy as np
import pytest
import torch

from aird.models import get_model, list_models
from aird.models.registry import INPUT_SIZES

EMBEDDING_DIM = 128
SIZES = ("smallest", "default")


def default_size(model: torch.nn.Module) -> int:
    # The rule aird.models.export.export_model applies: the network's own input_size, else dlib's 150 px chip.
    return int(getattr(model, "input_size", 150))


def input_side(name: str, model: torch.nn.Module, which: str) -> int:
    return INPUT_SIZES[name][0] if which == "smallest" else default_size(model)


@pytest.fixture(scope="module")
def built():
    """One instance per name for the whole module: dlib's weights are read once."""
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            torch.manual_seed(0)  # random-init networks: the same weights in every run
            cache[name] = get_model(name)
        return cache[name]

    return get


def faces(n: int, side: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=g) * 255


@pytest.mark.parametrize("name", list_models())
def test_default_input_size_is_within_the_declared_range(name, built):
    low, high = INPUT_SIZES[name]
    assert low <= default_size(built(name)) <= high


@pytest.mark.parametrize("which", SIZES)
@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name, which, built):
    model = built(name)
    side = input_side(name, model, which)
    x = faces(4, side)
    model.train()
    try:
        y = model(x)
        assert y.shape == (4, EMBEDDING_DIM) and torch.isfinite(y).all()
        model.zero_grad()
        y.pow(2).mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)  # the loss reaches the weights
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    with torch.no_grad():
        one, batch = model(x[:1]), model(x)
    assert torch.isfinite(batch).all() and batch.abs().sum() > 0
    assert torch.allclose(one, batch[:1], atol=1e-4)  # eval mode: a face's embedding does not depend on its batch


@pytest.mark.parametrize("which", SIZES)
@pytest.mark.parametrize("name", list_models())
def test_onnx_export_parity(name, which, built, tmp_path):
    """The exported graph computes what the module computes, at any batch size (the batch axis is dynamic)."""
    from aird.models.export import export_onnx, run_onnx

    model = built(name).eval()
    side = input_side(name, model, which)
    path = export_onnx(model, tmp_path / f"{name}-{side}.onnx", side)
    x = faces(3, side, seed=1)
    with torch.no_grad():
        want = model(x).numpy()
    for batch in (x, x[:1]):
        got = run_onnx(path, batch)
        ref = want[: len(batch)]
        assert got.shape == ref.shape == (len(batch), EMBEDDING_DIM) and np.isfinite(got).all()
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() >= 0.9999
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))
