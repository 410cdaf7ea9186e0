"""Every registered loss: golden values on fixed inputs, finite gradients, and the cases known by hand."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from aird.distill.losses import LOSSES, DistillOutputs, WeightedLosses
from aird.distill.methods import METHODS, method_terms
from aird.errors import ConfigError

GOLDEN = Path(__file__).with_name("golden_losses.json")


def fixed_outputs(requires_grad: bool = False) -> DistillOutputs:
    g = torch.Generator().manual_seed(0)
    n, d, c, q = 6, 8, 5, 4
    f_t = torch.randn(n, d, generator=g)
    f_s = (f_t + 0.5 * torch.randn(n, d, generator=g)).requires_grad_(requires_grad)
    w = F.normalize(torch.randn(c, d, generator=g), dim=1)
    return DistillOutputs(
        f_s=f_s,
        f_t=f_t,
        cos_s=F.normalize(f_s, dim=1) @ w.T,
        cos_t=F.normalize(f_t, dim=1) @ w.T,
        labels=torch.tensor([0, 1, 2, 3, 4, -1]),
        queue_t=torch.randn(q, d, generator=g),
    )


def test_golden_values():
    golden = json.loads(GOLDEN.read_text())
    assert sorted(golden) == LOSSES.names(), "a loss was added or removed: regenerate golden_losses.json"
    out = fixed_outputs()
    for name in LOSSES.names():
        assert float(LOSSES.get(name)(out)) == pytest.approx(golden[name], rel=1e-5, abs=1e-7), name


@pytest.mark.parametrize("name", LOSSES.names())
def test_gradients_finite_and_nonzero(name):
    out = fixed_outputs(requires_grad=True)
    loss = LOSSES.get(name)(out)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(out.f_s.grad).all()
    assert out.f_s.grad.abs().sum() > 0
    assert loss.item() >= 0


@pytest.mark.parametrize("name", ["cosine", "feature-l2", "rkd", "ild", "kd", "rld"])
def test_student_equal_to_teacher_gives_zero(name):
    out = fixed_outputs()
    same = DistillOutputs(out.f_t.clone(), out.f_t, out.cos_t.clone(), out.cos_t, out.labels, out.queue_t)
    assert float(LOSSES.get(name)(same)) == pytest.approx(0.0, abs=1e-6)


def test_hand_computed_cases():
    # cosine: orthogonal unit vectors -> 1 - 0 = 1; opposite -> 2.
    out = DistillOutputs(f_s=torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), f_t=torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert float(LOSSES.get("cosine")(out)) == pytest.approx(1.5)
    assert float(LOSSES.get("feature-l2")(out)) == pytest.approx((2 + 4) / 2)
    # margin softmax with two classes: CE of logits s*(cos - m) vs s*cos.
    cls = LOSSES.get("cls", scale=10.0, margin=0.1)
    o = DistillOutputs(
        f_s=torch.zeros(1, 2), f_t=torch.zeros(1, 2), cos_s=torch.tensor([[0.5, 0.2]]), labels=torch.tensor([0])
    )
    expected = -math.log(math.exp(4.0) / (math.exp(4.0) + math.exp(2.0)))
    assert float(cls(o)) == pytest.approx(expected, rel=1e-6)
    # unlabelled faces do not enter the classification loss
    o.labels = torch.tensor([-1])
    assert float(cls(o)) == 0.0


def test_rld_queue_widens_the_relation():
    out = fixed_outputs()
    with_queue = float(LOSSES.get("rld")(out))
    out.queue_t = None
    assert with_queue != pytest.approx(float(LOSSES.get("rld")(out)))


def test_weighted_total_and_methods():
    out = fixed_outputs()
    total, parts = WeightedLosses(method_terms("aird", {"rld": {"weight": 2.0}}))(out)
    assert set(parts) == {"cls", "ild", "rld"}
    assert float(total) == pytest.approx(parts["cls"] + parts["ild"] + 2.0 * parts["rld"], rel=1e-6)
    for method in METHODS:
        WeightedLosses(method_terms(method))(out)
    with pytest.raises(ConfigError, match="unknown method"):
        method_terms("magic")
    with pytest.raises(ConfigError, match="no loss term 'rld'"):
        method_terms("kd", {"rld": {"weight": 1.0}})
    with pytest.raises(ConfigError, match="unknown loss"):
        WeightedLosses({"nope": {}})


@pytest.mark.parametrize("name", ["cosine", "ild", "rld"])
def test_centred_terms_read_features_minus_the_mean_teacher_feature(name):
    out = fixed_outputs()
    mu = torch.randn(out.f_t.shape[1], generator=torch.Generator().manual_seed(1))
    shifted = DistillOutputs(
        f_s=out.f_s + mu,
        f_t=out.f_t + mu,
        cos_s=out.cos_s,
        cos_t=out.cos_t,
        labels=out.labels,
        queue_t=out.queue_t + mu,
        center=mu,
    )
    kw = {"b": 0.0} if name == "ild" else {}  # the feature part only: the KD part reads the heads
    centred, raw = LOSSES.get(name, center=True, **kw), LOSSES.get(name, **kw)
    assert float(centred(shifted)) == pytest.approx(float(raw(out)), rel=1e-5)
    # the shared component changes the raw term, which is what centring removes
    assert float(raw(shifted)) != pytest.approx(float(raw(out)), rel=1e-3)
    with pytest.raises(ValueError, match="mean teacher feature"):
        centred(out)
