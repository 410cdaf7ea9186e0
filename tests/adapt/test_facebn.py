"""FaceBN: every mode's statistics against hand-computed ones, and what it must never touch."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from aird.adapt import ADAPTERS, MODE_NAMES, FaceBN, embed_two_pass, make_adapter
from aird.errors import ConfigError

MODES = list(MODE_NAMES)
EPS = 1e-5


class FaceNet(nn.Module):
    """A tiny face embedder: conv + BN2d (affine and not), a BN1d over (N, C, L), an embedding head ending in BN1d."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2), nn.BatchNorm2d(6, affine=False), nn.ReLU())
        self.seq_bn = nn.BatchNorm1d(6)  # over (N, 6, L): the feature map's rows as a sequence
        self.fc = nn.Linear(6, 5)
        self.head_bn = nn.BatchNorm1d(5)  # the embedding head's BN over (N, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.block(self.stem(x))
        f = self.seq_bn(f.flatten(2)).mean(dim=2)
        return self.head_bn(self.fc(f))


def trained_net(seed: int = 0) -> FaceNet:
    """Random weights and non-trivial training statistics, in eval mode."""
    torch.manual_seed(seed)
    net = FaceNet()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                if mod.affine:
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.3, 0.3)
    return net.eval()


def faces(n: int, shift: float = 0.0, scale: float = 1.0, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 9, 9, generator=g) * scale + shift


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def single_bn(mean, var, weight=None, bias=None) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(len(mean), eps=EPS, affine=weight is not None)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(mean))
        bn.running_var.copy_(torch.tensor(var))
        if weight is not None:
            bn.weight.copy_(torch.tensor(weight))
            bn.bias.copy_(torch.tensor(bias))
    return bn.eval()


def as_rows(inputs: list[torch.Tensor]) -> torch.Tensor:
    """BN inputs ((N, C), (N, C, L) or (N, C, H, W)) as one (values, C) matrix."""
    return torch.cat([s.transpose(0, 1).reshape(s.shape[1], -1) for s in inputs], dim=1).T


def bn_inputs(model: nn.Module, layer: str, batches: list[torch.Tensor]) -> torch.Tensor:
    """All inputs a layer of ``model`` receives over ``batches``, as (values, C)."""
    seen = []
    handle = model.get_submodule(layer).register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            for b in batches:
                model(b)
    finally:
        handle.remove()
    return as_rows(seen)


@pytest.mark.parametrize("mode", MODES)
def test_learned_parameters_and_the_original_model_are_untouched(mode):
    net = trained_net()
    before = snapshot(net)
    adapter = FaceBN(net, mode=mode, momentum=0.3, alpha=0.4)
    batches = [faces(4, shift=2.0, scale=3.0, seed=s) for s in range(3)] + [faces(1, seed=9)]
    if mode == "adabn":
        adapter.fit(batches)
    with torch.inference_mode():
        for b in batches:
            adapter(b)
    assert_same(net, before)  # the original (e.g. the teacher): every parameter and buffer
    # The adapter's own copy: learned weights bit-identical, and its buffers (training stats) too.
    assert_same(adapter.model, before)
    assert not net.training


def test_off_is_the_plain_model_in_eval_mode_exactly():
    net = trained_net()
    x = faces(5, shift=1.0)
    with torch.no_grad():
        expected = net(x)
    assert torch.equal(FaceBN(net, mode="off")(x), expected)


def test_batch_mode_normalises_each_batch_by_itself_and_keeps_nothing():
    net = trained_net()
    in_train_mode = copy.deepcopy(net).train()
    adapter = FaceBN(net, mode="batch")
    for seed in range(2):
        x = faces(6, shift=1.5, scale=2.0, seed=seed)
        with torch.no_grad():
            expected = in_train_mode(x)
        torch.testing.assert_close(adapter(x), expected, rtol=1e-5, atol=1e-5)
    assert adapter.state_dict() == {}


def test_ema_follows_the_formula_on_a_hand_checked_case():
    bn = single_bn([0.0, 1.0], [1.0, 4.0], weight=[2.0, 1.0], bias=[0.5, -1.0])
    adapter = FaceBN(bn, mode="ema", momentum=0.25)
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # batch mean (2, 4), unbiased variance (2, 8)
    out = adapter(x)
    state = adapter.state_dict()["default"]
    # mean: 0.75 * (0, 1) + 0.25 * (2, 4) = (0.5, 1.75); var: 0.75 * (1, 4) + 0.25 * (2, 8) = (1.25, 5)
    torch.testing.assert_close(state[".running_mean"], torch.tensor([0.5, 1.75]))
    torch.testing.assert_close(state[".running_var"], torch.tensor([1.25, 5.0]))
    # The batch is normalised with the statistics its own update produced.
    mean, var = torch.tensor([0.5, 1.75]), torch.tensor([1.25, 5.0])
    torch.testing.assert_close(
        out, (x - mean) / torch.sqrt(var + EPS) * torch.tensor([2.0, 1.0]) + torch.tensor([0.5, -1.0])
    )
    # They persist: a second batch updates from them, not from the training statistics.
    adapter(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))  # mean (1, 1), variance (2, 2)
    state = adapter.state_dict()["default"]
    torch.testing.assert_close(state[".running_mean"], 0.75 * mean + 0.25 * torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(state[".running_var"], 0.75 * var + 0.25 * torch.tensor([2.0, 2.0]))


def test_ema_statistics_move_toward_a_shifted_input():
    net = trained_net()
    batches = [faces(8, shift=3.0, scale=2.5, seed=s) for s in range(6)]
    # The first BN's input does not depend on any normalisation: its target statistics are known exactly.
    target = bn_inputs(net, "stem.1", batches)
    target_mean, target_var = target.mean(0), target.var(0)
    train_mean = net.stem[1].running_mean
    adapter = FaceBN(net, mode="ema", momentum=0.3)
    gaps = [(train_mean - target_mean).abs().max()]
    for b in batches:
        adapter(b)
        gaps.append((adapter.state_dict()["default"]["stem.1.running_mean"] - target_mean).abs().max())
    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:]))
    assert gaps[-1] < 0.15 * gaps[0]
    # Momentum 1 takes each batch's statistics as they are.
    full = FaceBN(net, mode="ema", momentum=1.0)
    full(batches[0])
    first = bn_inputs(net, "stem.1", batches[:1])
    torch.testing.assert_close(full.state_dict()["default"]["stem.1.running_mean"], first.mean(0))
    torch.testing.assert_close(full.state_dict()["default"]["stem.1.running_var"], first.var(0))
    assert (target_var - net.stem[1].running_var).abs().max() > 1.0  # the shift did change the variance


def test_adabn_estimates_the_exact_statistics_of_the_whole_target_set():
    net = trained_net()
    batches = [faces(n, shift=2.0, scale=1.5, seed=s) for s, n in enumerate([5, 3, 1, 7])]
    adapter = FaceBN(net, mode="adabn")
    with pytest.raises(ConfigError, match="fit"):
        adapter(batches[0])
    seen: dict[str, list[torch.Tensor]] = {layer: [] for layer in adapter.layers}
    handles = [
        bn.register_forward_pre_hook(lambda _m, args, layer=layer: seen[layer].append(args[0].clone()))
        for layer, bn in adapter.layers.items()
    ]
    adapter.fit(batches)
    for h in handles:
        h.remove()
    state = adapter.state_dict()["default"]
    # Every layer, the BN1d head included: pooled over all its first-pass inputs, as if concatenated.
    for layer, inputs in seen.items():
        values = as_rows(inputs)
        torch.testing.assert_close(state[f"{layer}.running_mean"], values.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(state[f"{layer}.running_var"], values.var(0), rtol=1e-5, atol=1e-6)
    # The first layer's inputs need no adaptation upstream: exactly the concatenated set's statistics.
    first = bn_inputs(net, "stem.1", [torch.cat(batches)])
    torch.testing.assert_close(state["stem.1.running_mean"], first.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state["stem.1.running_var"], first.var(0), rtol=1e-5, atol=1e-6)
    # Second pass: fixed statistics, so a batch embeds the same whatever came before.
    a = adapter(batches[1])
    adapter(batches[3])
    assert torch.equal(adapter(batches[1]), a)
    with pytest.raises(RuntimeError, match="call the adapter"):
        adapter.model(batches[0])


def test_embed_two_pass_fits_then_embeds_in_order():
    net = trained_net()
    batches = [faces(4, shift=1.0, seed=s) for s in range(3)]
    two_pass = embed_two_pass(FaceBN(net, mode="adabn"), batches)
    manual = FaceBN(net, mode="adabn")
    manual.fit(batches)
    assert torch.equal(two_pass, torch.cat([manual(b) for b in batches]))
    with pytest.raises(TypeError, match="iterator"):
        embed_two_pass(FaceBN(net, mode="adabn"), iter(batches))
    with pytest.raises(ConfigError, match="adabn"):
        FaceBN(net, mode="ema").fit(batches)


def test_alpha_mixes_training_and_batch_statistics_exactly():
    bn = single_bn([1.0, -1.0], [2.0, 0.5], weight=[1.0, 3.0], bias=[0.0, 0.25])
    x = torch.tensor([[0.0, 1.0], [4.0, 3.0], [2.0, 5.0]])  # mean (2, 3), unbiased variance (4, 4)
    adapter = FaceBN(bn, mode="alpha", alpha=0.25)
    mean = 0.75 * torch.tensor([1.0, -1.0]) + 0.25 * torch.tensor([2.0, 3.0])
    var = 0.75 * torch.tensor([2.0, 0.5]) + 0.25 * torch.tensor([4.0, 4.0])
    expected = (x - mean) / torch.sqrt(var + EPS) * torch.tensor([1.0, 3.0]) + torch.tensor([0.0, 0.25])
    torch.testing.assert_close(adapter(x), expected)
    torch.testing.assert_close(adapter(x), expected)  # a fixed mix: nothing carries over
    assert adapter.state_dict() == {}
    net = trained_net()
    assert torch.equal(FaceBN(net, mode="alpha", alpha=0.0)(faces(4)), FaceBN(net, mode="off")(faces(4)))


@pytest.mark.parametrize("mode", MODES)
def test_batch_size_one_gives_finite_embeddings_in_every_mode(mode):
    net = trained_net()
    adapter = FaceBN(net, mode=mode)
    one = faces(1, shift=2.0, seed=3)
    if mode == "adabn":
        adapter.fit([one])
    for _ in range(3):
        out = adapter(one)
        assert out.shape == (1, 5) and torch.isfinite(out).all()
    for tensors in adapter.state_dict().values():
        assert all(torch.isfinite(t).all() for t in tensors.values())


def test_single_vector_rules_for_a_bn1d_layer():
    train_mean, train_var = [0.5, -0.5], [2.0, 3.0]
    x = torch.tensor([[1.5, 1.0]])
    # batch: one value per channel has no variance, so the layer falls back to its training statistics.
    plain = single_bn(train_mean, train_var, weight=[1.0, 2.0], bias=[0.1, 0.2])
    with torch.no_grad():
        expected = plain(x)
    assert torch.equal(FaceBN(plain, mode="batch")(x), expected)
    # ema: the mean moves, the variance keeps its stored value.
    ema = FaceBN(single_bn(train_mean, train_var), mode="ema", momentum=0.5)
    ema(x)
    state = ema.state_dict()["default"]
    torch.testing.assert_close(state[".running_mean"], torch.tensor([1.0, 0.25]))
    assert torch.equal(state[".running_var"], torch.tensor(train_var))
    # alpha: the mean mixes, the variance is the training one.
    alpha = FaceBN(single_bn(train_mean, train_var), mode="alpha", alpha=0.5)
    torch.testing.assert_close(alpha(x), (x - torch.tensor([1.0, 0.25])) / torch.sqrt(torch.tensor(train_var) + EPS))
    # adabn on a one-vector target set: its mean, the training variance.
    adabn = FaceBN(single_bn(train_mean, train_var), mode="adabn")
    adabn.fit([x])
    state = adabn.state_dict()["default"]
    torch.testing.assert_close(state[".running_mean"], x[0])
    assert torch.equal(state[".running_var"], torch.tensor(train_var))


def test_bn1d_over_sequences_is_adapted():
    bn = nn.BatchNorm1d(3).eval()
    x = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0)) * 2 + 4
    values = x.transpose(0, 1).reshape(3, -1)
    ema = FaceBN(bn, mode="ema", momentum=1.0)
    ema(x)
    torch.testing.assert_close(ema.state_dict()["default"][".running_mean"], values.mean(1))
    torch.testing.assert_close(ema.state_dict()["default"][".running_var"], values.var(1))
    with torch.no_grad():
        expected = copy.deepcopy(bn).train()(x)
    torch.testing.assert_close(FaceBN(bn, mode="batch")(x), expected)
    # A single sequence still has L values per channel: batch statistics, not the fallback.
    with torch.no_grad():
        expected = copy.deepcopy(bn).train()(x[:1])
    torch.testing.assert_close(FaceBN(bn, mode="batch")(x[:1]), expected)


def test_the_embedding_head_bn1d_is_adapted():
    net = trained_net()
    adapter = FaceBN(net, mode="ema", momentum=0.5)
    adapter(faces(8, shift=3.0, scale=2.0))
    state = adapter.state_dict()["default"]
    assert "head_bn.running_mean" in state
    assert not torch.allclose(state["head_bn.running_mean"], net.head_bn.running_mean)
    assert not torch.allclose(state["head_bn.running_var"], net.head_bn.running_var)


def test_streams_stay_apart_and_round_trip_through_save_and_load(tmp_path):
    net = trained_net()
    cam1 = [faces(4, shift=3.0, seed=s) for s in range(3)]
    cam2 = [faces(4, shift=-2.0, scale=0.5, seed=10 + s) for s in range(3)]
    adapter = FaceBN(net, mode="ema", momentum=0.2)
    only_cam2 = FaceBN(net, mode="ema", momentum=0.2)
    for a, b in zip(cam1, cam2):  # interleaved, one camera at a time
        adapter(a, stream="cam-1")
        out = adapter(b, stream="cam-2")
        assert torch.equal(out, only_cam2(b))
    state = adapter.state_dict()
    assert set(state) == {"cam-1", "cam-2"}
    assert not torch.equal(state["cam-1"]["stem.1.running_mean"], state["cam-2"]["stem.1.running_mean"])

    path = tmp_path / "facebn.pt"
    torch.save(state, path)
    restored = FaceBN(net, mode="ema", momentum=0.2)
    restored.load_state_dict(torch.load(path, weights_only=True))
    nxt = faces(4, shift=3.0, seed=99)
    assert torch.equal(restored(nxt, stream="cam-1"), adapter(nxt, stream="cam-1"))
    assert torch.equal(restored(nxt, stream="cam-2"), adapter(nxt, stream="cam-2"))

    with pytest.raises(ValueError, match="batch-norm layers"):
        FaceBN(nn.Sequential(nn.BatchNorm1d(5)), mode="ema").load_state_dict(state)
    with pytest.raises(ConfigError, match="keeps no statistics"):
        FaceBN(net, mode="batch").load_state_dict(state)


def test_state_made_under_inference_mode_can_be_saved_and_updated(tmp_path):
    net = trained_net()
    adapter = FaceBN(net, mode="ema")
    with torch.inference_mode():
        adapter(faces(4, shift=1.0))
    adapter(faces(4, shift=1.0, seed=2))
    torch.save(adapter.state_dict(), tmp_path / "s.pt")


def test_reset_restores_training_statistics():
    net = trained_net()
    x, y = faces(4, shift=2.0, seed=1), faces(4, shift=-1.0, seed=2)
    adapter = FaceBN(net, mode="ema", momentum=0.5)
    first = adapter(x, stream="a")
    adapter(y, stream="b")
    assert not torch.equal(adapter(x, stream="a"), first)
    adapter.reset("a")
    assert set(adapter.state_dict()) == {"b"}
    assert torch.equal(adapter(x, stream="a"), first)  # from training statistics again
    adapter.reset()
    assert adapter.state_dict() == {}
    assert torch.equal(adapter(x, stream="b"), first)


def test_empty_batch_changes_nothing():
    net = trained_net()
    adapter = FaceBN(net, mode="ema")
    adapter(faces(4, shift=1.0))
    before = adapter.state_dict()
    assert adapter(faces(4)[:0]).shape == (0, 5)
    after = adapter.state_dict()
    assert all(torch.equal(after["default"][k], v) for k, v in before["default"].items())


def test_registry_settings_and_bad_settings():
    net = trained_net()
    assert set(ADAPTERS.names()) == {
        "off",
        "facebn-batch",
        "facebn-ema",
        "adabn",
        "facebn-alpha",
        "tent",
        "facebn-safe",
    }
    for mode, name in MODE_NAMES.items():
        adapter = make_adapter(name, net)
        assert isinstance(adapter, FaceBN) and adapter.mode == mode
        assert adapter.settings()["adapter"] == name
    assert make_adapter("facebn-ema", net, momentum=0.05).settings() == {
        "adapter": "facebn-ema",
        "mode": "ema",
        "bn_layers": 4,
        "momentum": 0.05,
    }
    assert make_adapter("facebn-alpha", net, alpha=0.3).settings()["alpha"] == 0.3
    with pytest.raises(TypeError):
        make_adapter("facebn-ema", net, mode="batch")  # a record's name must be the mode that ran
    with pytest.raises(ConfigError, match="unknown adapter"):
        make_adapter("facebn-median", net)
    with pytest.raises(ConfigError, match="mode"):
        FaceBN(net, mode="online")
    with pytest.raises(ConfigError, match="momentum"):
        FaceBN(net, momentum=0.0)
    with pytest.raises(ConfigError, match="no batch-norm"):
        FaceBN(nn.Linear(3, 3))
    with pytest.raises(ConfigError, match="running statistics"):
        FaceBN(nn.BatchNorm1d(3, track_running_stats=False))


def test_dlib_resnet_bn_adapts_without_touching_the_teacher():
    try:
        import aird.models.dlib_resnet  # noqa: F401  (registers the model)
        from aird.models.registry import get_model

        teacher = get_model("dlib_resnet_bn")
    except Exception as err:  # absent port, model file or statistics asset
        pytest.skip(f"dlib_resnet_bn unavailable: {err}")
    before = snapshot(teacher)
    adapter = FaceBN(teacher, mode="ema")
    x = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0)) * 255
    with torch.inference_mode():
        out = adapter(x)
    assert out.shape == (2, 128) and torch.isfinite(out).all()
    assert_same(teacher, before)
    assert_same(adapter.model, before)
    assert len(adapter.layers) == sum(isinstance(m, nn.BatchNorm2d) for m in teacher.modules())
