"""Channel pruning of the main student's architecture (aird.models.prune)."""

import pytest
import torch

from aird.config import from_dict
from aird.distill.config import ExperimentConfig
from aird.distill.run import load_init, run_experiment
from aird.errors import ConfigError
from aird.models.dlib_resnet import LEVELS, ResBlock, inner_widths
from aird.models.prune import SLIM_KEEP, inner_scores, prune_block, prune_inner, slim_resnet
from aird.models.student import load_student, save_student

SIDE = 112


def trained_like(seed: int = 0) -> torch.nn.Module:
    """A full network (keep 1) with random weights and batch norm statistics away from their defaults, in eval mode."""
    torch.manual_seed(seed)
    model = slim_resnet(1.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        model.input_mean.copy_(torch.tensor([120.0, 110.0, 100.0]))
    return model.eval()


def faces(n: int = 4, side: int = SIDE) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(1)) * 255


def test_inner_widths_keep_a_share_of_every_block():
    assert inner_widths(1.0) == [c for _, c, blocks, _ in LEVELS for _ in range(blocks)]
    assert inner_widths(0.25)[:3] == [8, 8, 8] and inner_widths(0.25)[-1] == 64
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="keep"):
            inner_widths(bad)


def test_keeping_every_channel_is_the_same_function():
    full = trained_like()
    x = faces()
    with torch.no_grad():
        torch.testing.assert_close(prune_inner(full, 1.0).eval()(x), full(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(SLIM_KEEP))
def test_pruned_network_loads_into_its_registered_architecture(name, tmp_path):
    slim = prune_inner(trained_like(), SLIM_KEEP[name])
    blocks = [m for m in slim.modules() if isinstance(m, ResBlock)]
    assert [b.conv1.out_channels for b in blocks] == inner_widths(SLIM_KEEP[name])
    path = tmp_path / "slim.safetensors"
    save_student(path, slim, name, SIDE)
    loaded, meta = load_student(path)
    x = faces()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), slim.eval()(x))
    assert meta["model"] == name


def test_half_the_channels_stay_close_to_the_full_network():
    full = trained_like()
    x = faces(8)
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(prune_inner(full, 0.5).eval()(x), full(x))
    assert cos.min() > 0.8


def block_pair(scale: list[float], shift: list[float]) -> tuple[ResBlock, ResBlock]:
    """A 4-channel block with the given bn1 weight / bias, and an empty 2-channel block to prune into."""
    torch.manual_seed(0)
    src = ResBlock(32, 32, False, inner=4)
    dst = ResBlock(32, 32, False, inner=2)
    for block in (src, dst):
        for k in ("bn1", "bn2"):
            setattr(block, k, torch.nn.BatchNorm2d(getattr(block, k).gamma.numel()))
    with torch.no_grad():
        src.bn1.weight.copy_(torch.tensor(scale))
        src.bn1.bias.copy_(torch.tensor(shift))
    return src.eval(), dst.eval()


def test_the_highest_scoring_channels_stay_and_the_dropped_ones_mean_goes_into_the_bias():
    # Channels 0 and 2 are constant (bn1 weight 0): relu(0.1), scored far below channels 1 and 3.
    src, dst = block_pair([0.0, 1.0, 0.0, 2.0], [0.1, 0.0, 0.1, 0.0])
    scores = inner_scores(src)
    assert scores[[1, 3]].min() > scores[[0, 2]].max()
    prune_block(src, dst)
    torch.testing.assert_close(dst.conv1.weight, src.conv1.weight[[1, 3]])
    x = torch.randn(2, 32, 9, 9)
    with torch.no_grad():
        # Away from the zero-padded border a constant channel's contribution is a constant: the bias holds it.
        torch.testing.assert_close(dst(x)[..., 1:-1, 1:-1], src(x)[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_pruning_needs_batch_norm():
    block = ResBlock(32, 32, False)
    with pytest.raises(TypeError, match="batch norm"):
        inner_scores(block)


def experiment(tmp_path, **student) -> ExperimentConfig:
    settings = {"name": "t", "out_dir": str(tmp_path / "run"), "student": {"input_size": SIDE, **student}}
    return from_dict(ExperimentConfig, settings)


def test_a_full_student_given_to_a_slim_config_is_pruned_into_it(tmp_path):
    full = trained_like()
    path = tmp_path / "full.safetensors"
    save_student(path, full, "dlib_resnet_bn", 150)
    cfg = experiment(tmp_path, model="dlib_resnet_slim50", init=str(path))
    assert cfg.student.init_path() == path
    student = load_init(path, cfg)
    x = faces()
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(x), prune_inner(full, 0.5).eval()(x))


def test_an_init_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "slim.safetensors"
    save_student(path, slim_resnet(0.25), "dlib_resnet_slim25", SIDE)
    with pytest.raises(ConfigError, match="dlib_resnet_slim25"):
        load_init(path, experiment(tmp_path, model="dlib_resnet_slim50"))


def test_a_student_init_of_another_form_is_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match="student.init.*safetensors"):
        experiment(tmp_path, model="dlib_resnet_slim50", init=str(tmp_path / "weights.pt"))


def test_a_missing_student_init_is_named_before_any_work(tmp_path):
    # An init may be another config's run, so the config loads; looking for the file is the run's first step.
    cfg = experiment(tmp_path, model="dlib_resnet_slim50", init=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ConfigError, match="student.init: .*missing.safetensors not found; train it first"):
        run_experiment(cfg)
    assert not (tmp_path / "run").exists()
