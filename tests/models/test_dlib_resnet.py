import numpy as np
import pytest
import torch
from torch import nn

from aird.errors import ModelFileError
from aird.models.bn_restore import (
    BN_STATS_ASSET,
    ChannelStats,
    affine_layers,
    batchnorm_from_stats,
    load_bn_stats,
    restore_batchnorm,
    save_bn_stats,
)
from aird.models.dlib_resnet import (
    MIN_INPUT_SIZE,
    Affine,
    DlibResNet,
    add_zero_padded,
    chips_to_tensor,
    default_dat_path,
    load_dlib_resnet,
)
from aird.models.export import export_onnx, onnx_max_abs_diff
from aird.models.registry import get_model, list_models


@pytest.fixture(scope="module")
def port() -> DlibResNet:
    torch.set_num_threads(2)
    return load_dlib_resnet()


@pytest.fixture(scope="module")
def chips(lfw_sample) -> np.ndarray:
    """Five real LFW faces aligned as dlib aligns them: (5, 150, 150, 3) uint8."""
    from aird.data.align import FaceAligner
    from aird.data.images import load_rgb

    aligner = FaceAligner()
    return np.stack([aligner.align(load_rgb(p), p).chip for p in lfw_sample[:5]])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_parity_with_dlib_on_real_faces(port, chips):
    import dlib

    reference = dlib.face_recognition_model_v1(str(default_dat_path()))
    want = np.stack([np.array(reference.compute_face_descriptor(chip)) for chip in chips])
    with torch.no_grad():
        got = port(chips_to_tensor(chips)).numpy()
    assert got.shape == (5, 128) and got.dtype == np.float32
    assert cosine(got, want).min() >= 0.9999
    # Not re-normalised: dlib's descriptors have norms around 1.4, and so do the port's.
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.slow
def test_uint8_float_and_batch_agree(port, chips):
    x = chips_to_tensor(chips)
    with torch.no_grad():
        batched = port(x)
        as_float = port(x.float())
        single = torch.cat([port(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, as_float, rtol=0, atol=0)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_other_input_sizes(port):
    with torch.no_grad():
        for size in (MIN_INPUT_SIZE, 112, 224):
            assert port(torch.full((2, 3, size, size), 128.0)).shape == (2, 128)
    with pytest.raises(ValueError, match="too small"):
        port(torch.zeros(1, 3, MIN_INPUT_SIZE - 1, 150))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        port(torch.zeros(1, 150, 150, 3))


def test_add_zero_padded_is_dlibs_add():
    a = torch.arange(1 * 2 * 3 * 3, dtype=torch.float32).view(1, 2, 3, 3)
    b = torch.ones(1, 1, 4, 4)
    out = add_zero_padded(a, b)
    assert out.shape == (1, 2, 4, 4)
    torch.testing.assert_close(out[:, :1, :3, :3], a[:, :1] + 1)  # both present: summed
    torch.testing.assert_close(out[:, 1:, :3, :3], a[:, 1:])  # only a: kept
    assert (out[:, :1, 3, :] == 1).all() and (out[:, :1, :, 3] == 1).all()  # only b: kept
    assert (out[:, 1:, 3, :] == 0).all()  # neither: zero


def test_loaded_structure(port):
    assert len(affine_layers(port)) == 29
    assert sum(isinstance(m, nn.Conv2d) for m in port.modules()) == 29
    assert port.distance_threshold == pytest.approx(0.6)
    assert port.input_mean.tolist() == pytest.approx([122.782, 117.001, 104.298], abs=1e-3)
    assert [len(level) for level in port.levels] == [3, 4, 3, 3, 1]


def test_batchnorm_restored_equals_port_in_eval_and_trains(port, chips):
    x = chips_to_tensor(chips)
    bn = restore_batchnorm(port, x)
    assert not affine_layers(bn) and len(affine_layers(port)) == 29  # a copy; the port is untouched
    norms = [m for m in bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 29
    # running stats are what the faces gave the stem's affine layer
    stem_in = port.stem.conv(port.normalize_input(x)).detach()
    torch.testing.assert_close(bn.stem.bn.running_mean, stem_in.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    bn.eval()
    with torch.no_grad():
        diff = (bn(x) - port(x)).abs().max().item()
    assert diff < 1e-5

    bn.train()
    optimizer = torch.optim.SGD([p for p in bn.parameters() if p.requires_grad], lr=1e-3)
    target = torch.nn.functional.normalize(port(x).detach(), dim=1)
    out = bn(x.float())
    loss = (1 - (torch.nn.functional.normalize(out, dim=1) * target).sum(1)).mean()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in bn.parameters())
    assert all(torch.isfinite(m.running_var).all() for m in norms)
    assert all(p.grad is not None for p in bn.parameters())


def test_bn_stats_file_round_trip(tmp_path):
    stats = {"stem.bn": ChannelStats(np.arange(3.0), np.ones(3), 10)}
    save_bn_stats(tmp_path / "s.npz", stats, n_images=2, faces="test")
    back, meta = load_bn_stats(tmp_path / "s.npz")
    np.testing.assert_array_equal(back["stem.bn"].mean, [0, 1, 2])
    assert back["stem.bn"].count == 10 and meta == {"n_images": "2", "faces": "test"}
    with pytest.raises(ModelFileError, match="lack layers"):
        batchnorm_from_stats(DlibResNet(), back)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ModelFileError, match="bad.npz"):
        load_bn_stats(tmp_path / "bad.npz")


def test_shipped_stats_and_registry(port):
    assert {"dlib_resnet", "dlib_resnet_bn"} <= set(list_models())
    assert isinstance(get_model("dlib_resnet"), DlibResNet)
    stats, meta = load_bn_stats(BN_STATS_ASSET)
    assert len(stats) == 29 and int(meta["n_images"]) >= 500
    assert BN_STATS_ASSET.stat().st_size < 100_000
    assert all(st.mean.dtype == np.float64 and (st.var > 0).all() for st in stats.values())
    bn = get_model("dlib_resnet_bn").eval()
    assert not any(isinstance(m, Affine) for m in bn.modules())
    x = torch.rand(2, 3, 150, 150) * 255
    with torch.no_grad():
        assert (bn(x) - port(x)).abs().max().item() < 1e-5


def test_onnx_export_matches_onnxruntime(port, tmp_path):
    path = export_onnx(port, tmp_path / "dlib_resnet.onnx")
    x = torch.rand(3, 3, 150, 150) * 255
    assert onnx_max_abs_diff(port, path, x) < 1e-4
    assert onnx_max_abs_diff(port, path, x[:1]) < 1e-4  # batch axis is dynamic
    assert not port.training


def test_lr_variant_carries_dlibs_weights_and_reaches_level0_at_32px():
    """dlib_resnet_lr: the same tensors as dlib_resnet_bn (a teacher-initialised start), padded so that a
    32 px input keeps a map at every level; its level0 does not down-sample a 1 px map."""
    lr, bn = get_model("dlib_resnet_lr"), get_model("dlib_resnet_bn")
    mine, theirs = lr.state_dict(), bn.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert lr.input_size == 32 and bn.input_size == 150
    sides = []
    for level in lr.levels:
        level.register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
    with torch.no_grad():
        y = lr.eval()(torch.rand(2, 3, 32, 32) * 255)
    assert sides == [8, 4, 2, 1, 1] and y.shape == (2, 128) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="at least 24 px"):
        lr(torch.zeros(1, 3, 20, 20))
