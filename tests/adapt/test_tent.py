"""TENT: it may change only its own copy's batch-norm affine parameters, and it lowers prediction entropy."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from aird.adapt import Tent, make_adapter, prediction_entropy
from aird.errors import ConfigError
from aird.models.heads import CosineClassifier

SCALE = 10.0


def student(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2),
        nn.BatchNorm2d(6, affine=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 8),
        nn.BatchNorm1d(8),
    )
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return net.eval()


def head(seed: int = 0) -> CosineClassifier:
    torch.manual_seed(seed)
    return CosineClassifier(8, 5).eval()


def faces(n: int, shift: float = 0.0, scale: float = 1.0, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 9, 9, generator=g) * scale + shift


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_tent_changes_only_the_bn_affine_parameters_of_its_copy():
    net, cls = student(), head()
    net_before, head_before = snapshot(net), snapshot(cls)
    adapter = Tent(net, cls, lr=1e-2, logit_scale=SCALE)
    for seed in range(3):
        adapter(faces(6, shift=2.0, scale=2.0, seed=seed))
    assert_same(net, net_before)  # the student itself
    assert_same(cls, head_before)
    assert all(p.grad is None for p in [*net.parameters(), *cls.parameters()])
    # Its copy keeps every convolution and linear weight and every running statistic.
    assert_same(adapter.model, net_before)
    assert_same(adapter.head, head_before)
    adapted = adapter.state_dict()["default"]["params"]
    assert set(adapted) == {"1.weight", "1.bias", "9.weight", "9.bias"}  # the affine BNs; BN "4" has no affine
    assert all(not torch.equal(adapted[k], net_before[k]) for k in adapted)


def test_tent_lowers_prediction_entropy_on_a_shifted_batch():
    net, cls = student(), head()
    x = faces(16, shift=1.5, scale=3.0, seed=4)
    adapter = Tent(net, cls, lr=5e-2, logit_scale=SCALE)
    entropies = [prediction_entropy(SCALE * cls(adapter(x))).mean().item() for _ in range(8)]
    assert entropies[-1] < 0.8 * entropies[0]
    # The first output is the unadapted student normalising with batch statistics (TENT's starting point).
    with torch.no_grad():
        start = copy.deepcopy(net).train()(x)
    torch.testing.assert_close(Tent(net, cls, logit_scale=SCALE)(x), start, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_tent_handles_batch_size_one_and_inference_mode(optimizer):
    adapter = Tent(student(), head(), optimizer=optimizer, steps=2, logit_scale=SCALE)
    with torch.inference_mode():
        for seed in range(3):
            out = adapter(faces(1, shift=1.0, seed=seed))
            assert out.shape == (1, 8) and torch.isfinite(out).all()
    state = adapter.state_dict()["default"]["params"]
    assert all(torch.isfinite(t).all() for t in state.values())


def test_tent_streams_stay_apart_round_trip_and_reset(tmp_path):
    net, cls = student(), head()
    cam1, cam2 = faces(6, shift=2.0, seed=1), faces(6, shift=-1.0, scale=0.5, seed=2)
    adapter = Tent(net, cls, lr=1e-2, logit_scale=SCALE)
    only_cam2 = Tent(net, cls, lr=1e-2, logit_scale=SCALE)
    for _ in range(2):
        adapter(cam1, stream="cam-1")
        assert torch.equal(adapter(cam2, stream="cam-2"), only_cam2(cam2))

    path = tmp_path / "tent.pt"
    torch.save(adapter.state_dict(), path)
    restored = Tent(net, cls, lr=1e-2, logit_scale=SCALE)
    restored.load_state_dict(torch.load(path, weights_only=True))
    for _ in range(2):  # the optimiser's moments came back too: the next steps match
        assert torch.equal(restored(cam1, stream="cam-1"), adapter(cam1, stream="cam-1"))

    fresh = Tent(net, cls, lr=1e-2, logit_scale=SCALE)(cam1)
    adapter.reset("cam-1")
    assert set(adapter.state_dict()) == {"cam-2"}
    assert torch.equal(adapter(cam1, stream="cam-1"), fresh)
    adapter.reset()
    assert adapter.state_dict() == {}


def test_tent_registry_and_settings():
    adapter = make_adapter("tent", student(), head=head(), lr=1e-3, steps=2, logit_scale=30.0)
    assert isinstance(adapter, Tent)
    assert adapter.settings() == {
        "adapter": "tent",
        "optimizer": "adam",
        "lr": 1e-3,
        "steps": 2,
        "logit_scale": 30.0,
        "bn_layers": 3,
    }
    with pytest.raises(ConfigError, match="optimizer"):
        Tent(student(), head(), optimizer="lbfgs")
    with pytest.raises(ConfigError, match="affine"):
        Tent(nn.Sequential(nn.BatchNorm1d(8, affine=False)), head())
