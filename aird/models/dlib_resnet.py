"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch, exactly.

The network, as dlib's dnn_face_recognition_ex.cpp defines it (input side first here):

    stem    con 32 7x7/2 -> affine -> relu -> max_pool 3x3/2
    level4  3 x ares<32>
    level3  ares_down<64>  + 3 x ares<64>
    level2  ares_down<128> + 2 x ares<128>
    level1  ares_down<256> + 2 x ares<256>
    level0  ares_down<256>
    head    avg_pool_everything -> fc_no_bias 128

    ares      = relu(block(x) + x)
    ares_down = relu(block_stride2(x) + avg_pool 2x2/2 (x))
    block     = affine(con 3x3/1 (relu(affine(con 3x3/stride (x)))))

dlib details that decide exactness: a con/pool with stride 1 pads size/2, any other stride pads 0;
``add_prev`` of tensors of different channel count or size adds them over their common top-left
region and keeps each one's values where only it exists (the output takes the larger size of
each dimension, missing values count as 0) -- at 150 px level1's first block meets a 3x3 residual
with a 4x4 shortcut, and level0's a 1x1 with a 2x2; input pixels become (p - mean_channel) / 256.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aird.errors import ModelFileError
from aird.models.dlib_format import DlibNet, LayerRecord, LayerSpec, load_dlib_net
from aird.models.registry import register_model

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
INPUT_SIZE = 150
EMBEDDING_DIM = 128
# Smallest input at which level0's stride-2 3x3 convolution still has a 3x3 input (dlib itself takes 150).
MIN_INPUT_SIZE = 103
# The side an LR face is up-sampled to for ``dlib_resnet_lr`` (16 px faces, twice): its feature maps are then
# 8 -> 4 -> 2 -> 1 px, so it runs about as fast as ``lr_resnet`` at 16 px (docs/method.md, the fast student).
LR_INPUT_SIZE = 32
LR_INPUT_SIZES = (24, 96)
# (name, channels, residual blocks, first block down-samples), input side first.
LEVELS = (
    ("level4", 32, 3, False),
    ("level3", 64, 4, True),
    ("level2", 128, 3, True),
    ("level1", 256, 3, True),
    ("level0", 256, 1, True),
)
STEM_CHANNELS = 32


def inner_widths(keep: float) -> list[int]:
    """Every residual block's inner width when each keeps ``keep`` of its channels, input side first."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    return [max(1, round(channels * keep)) for _, channels, blocks, _ in LEVELS for _ in range(blocks)]


def default_dat_path() -> Path:
    """The model file shipped by the ``face_recognition_models`` package."""
    from aird.data.align import dlib_model_file

    return dlib_model_file(DAT_NAME)


class Affine(nn.Module):
    """dlib's ``affine_``: batch norm folded after training, y = gamma * x + beta per channel (fixed)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("gamma", torch.ones(channels))
        self.register_buffer("beta", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return str(self.gamma.numel())


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``tt::add(out, a, b)``: sizes may differ; each is zero-extended to the larger one."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


def _same_padding(size: int, stride: int) -> int:
    # dlib's con_ and pooling defaults: padding = stride != 1 ? 0 : size / 2
    return 0 if stride != 1 else size // 2


def _padding(size: int, stride: int, lr: bool) -> int:
    # The LR variant pads every convolution and pool by half its window, so that maps of 1-4 px survive.
    return size // 2 if lr else _same_padding(size, stride)


class ResBlock(nn.Module):
    """``ares`` / ``ares_down``: relu(block(x) + shortcut(x)), added the dlib way."""

    def __init__(
        self, in_channels: int, channels: int, downsample: bool, lr: bool = False, inner: int | None = None
    ) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        inner = inner or channels  # fewer in a pruned network (aird.models.prune)
        self.conv1 = nn.Conv2d(in_channels, inner, 3, stride, _padding(3, stride, lr))
        self.bn1 = Affine(inner)
        self.conv2 = nn.Conv2d(inner, channels, 3, 1, _same_padding(3, 1))
        self.bn2 = Affine(channels)
        # ceil_mode in the LR variant: a 1 px map stays 1 px instead of vanishing.
        self.shortcut: nn.Module = nn.AvgPool2d(2, 2, ceil_mode=lr) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(add_zero_padded(y, self.shortcut(x)))


class DlibResNet(nn.Module):
    """The port. Input (N, 3, H, W) RGB pixels 0..255 (float or uint8); output (N, 128), as dlib (not re-normalised).

    Any input of at least MIN_INPUT_SIZE (103) pixels a side works; dlib itself takes 150x150 chips.

    ``lr=True`` builds the LR variant: the same layers and weights, but every strided convolution and pool
    padded by half its window, so that a 32 px input (a 16 px face up-sampled twice) still reaches level0.
    It computes a different function from dlib's, so it is a starting point to be trained, not the teacher.

    ``inner`` gives each residual block's inner width (its first convolution's filters, input side first; see
    :func:`inner_widths`): a channel-pruned network, whose residual stream keeps dlib's widths.
    """

    def __init__(self, lr: bool = False, inner: list[int] | None = None) -> None:
        super().__init__()
        self.lr = lr
        self.register_buffer("input_mean", torch.zeros(3))
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(3, STEM_CHANNELS, 7, 2, _padding(7, 2, lr)),
                bn=Affine(STEM_CHANNELS),
                relu=nn.ReLU(),
                pool=nn.MaxPool2d(3, 2, _padding(3, 2, lr)),
            )
        )
        levels, channels = OrderedDict(), STEM_CHANNELS
        blocks_total = sum(blocks for _, _, blocks, _ in LEVELS)
        if inner is not None and len(inner) != blocks_total:
            raise ValueError(f"inner gives {len(inner)} widths, the face ResNet has {blocks_total} residual blocks")
        widths = iter(inner or inner_widths(1.0))
        for name, out, blocks, down in LEVELS:
            # In the LR variant level0 keeps its map (already 1 px at 32 px input): a strided 3x3 convolution
            # of a 1 px map gave NaN weight gradients under CPU bfloat16 autocast (torch 2.13, oneDNN).
            down = down and not (lr and name == "level0")
            levels[name] = nn.Sequential(
                *(ResBlock(channels if b == 0 else out, out, down and b == 0, lr, next(widths)) for b in range(blocks))
            )
            channels = out
        self.levels = nn.Sequential(levels)
        self.fc = nn.Linear(channels, EMBEDDING_DIM, bias=False)
        # The chip size dlib was trained on (embedders resize other chips to it).
        self.input_size = LR_INPUT_SIZE if lr else INPUT_SIZE
        # Euclidean distance below which dlib calls two descriptors the same person (from the loss layer).
        self.distance_threshold = 0.6
        self.source_sha256 = ""
        self.input_folded = False  # with_input_folded(): the stem convolution reads raw pixels

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) RGB batch, got shape {tuple(x.shape)}")
        smallest = LR_INPUT_SIZES[0] if self.lr else MIN_INPUT_SIZE
        if min(x.shape[2:]) < smallest:
            raise ValueError(
                f"input {tuple(x.shape[2:])} is too small: the face ResNet needs at least {smallest} px a side"
            )
        if x.dtype == torch.uint8:
            x = x.float()
        elif not x.is_floating_point():
            raise ValueError(f"expected uint8 or floating pixels 0..255, got {x.dtype}")
        if self.input_folded:
            return x
        return (x - self.input_mean.view(1, 3, 1, 1)) / 256.0

    def with_input_folded(self) -> "DlibResNet":
        """A copy that computes the same function with the input's normalization folded into the stem
        convolution (exact, since dlib's strided stem is not padded; the LR variant's is, so it is returned
        as it is). Exported, the graph then starts with a convolution, which lets onnxruntime run an int8
        graph channels last from its input without transposing it (docs/method.md)."""
        if self.lr or self.input_folded:
            return self
        model = copy.deepcopy(self)
        conv = model.stem.conv
        with torch.no_grad():
            conv.weight /= 256.0
            conv.bias -= (conv.weight * model.input_mean.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
        model.input_folded = True
        return model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.levels(self.stem(self.normalize_input(x)))
        return self.fc(x.mean(dim=(2, 3)))

    @classmethod
    def from_dlib_net(cls, net: DlibNet, lr: bool = False) -> "DlibResNet":
        model = cls(lr)
        model._load_records(net)
        return model.eval()

    def _load_records(self, net: DlibNet) -> None:
        src = net.source
        if net.input.version != "input_rgb_image_sized" or net.input.size != (INPUT_SIZE, INPUT_SIZE):
            raise ModelFileError(
                f"{src}: input layer is {net.input.version} {net.input.size}, expected input_rgb_image_sized 150x150"
            )
        if not net.loss.version.startswith("loss_metric_"):
            raise ModelFileError(f"{src}: loss layer is {net.loss.version}, expected loss_metric_")
        plan = list(_plan(self))
        if len(plan) != len(net.layers):
            raise ModelFileError(f"{src}: {len(net.layers)} layers read, the face ResNet has {len(plan)}")
        with torch.no_grad():
            self.input_mean.copy_(torch.tensor(net.input.mean_rgb, dtype=torch.float32))
            for i, ((spec, module, expect), rec) in enumerate(zip(plan, net.layers)):
                if (rec.kind, rec.tag) != (spec.kind, spec.tag):
                    raise ModelFileError(
                        f"{src}: layer {i} is {rec.kind}{rec.tag or ''}, expected {spec.kind}{spec.tag or ''}"
                    )
                for key, value in expect.items():
                    if rec.attrs.get(key) != value:
                        raise ModelFileError(
                            f"{src}: layer {i} ({rec.version}) has {key}={rec.attrs.get(key)!r}, the face ResNet expects {value!r}"
                        )
                if module is not None:
                    _load_params(module, rec, f"{src}: layer {i} ({rec.version})")
        self.distance_threshold = float(net.loss.dist_thresh)
        self.source_sha256 = net.sha256


def _pool(size: int, stride: int) -> dict[str, Any]:
    pad = _same_padding(size, stride)
    return dict(nr=size, nc=size, stride_y=stride, stride_x=stride, padding_y=pad, padding_x=pad)


def _conv(filters: int, size: int, stride: int) -> dict[str, Any]:
    return dict(num_filters=filters, use_bias=True, use_relu=False, **_pool(size, stride))


_AFFINE = dict(mode=0, disabled=False)


def _plan(model: DlibResNet | None) -> Iterator[tuple[LayerSpec, nn.Module | None, dict[str, Any]]]:
    """The layer sequence of the file, input side first: (spec, module that takes the weights, expected settings)."""

    def m(get):  # the layout alone needs no modules
        return None if model is None else get(model)

    yield LayerSpec("con"), m(lambda x: x.stem.conv), _conv(STEM_CHANNELS, 7, 2)
    yield LayerSpec("affine"), m(lambda x: x.stem.bn), _AFFINE
    yield LayerSpec("relu"), None, {}
    yield LayerSpec("max_pool"), None, _pool(3, 2)
    for name, channels, blocks, down in LEVELS:
        for b in range(blocks):
            block = m(lambda x, name=name, b=b: getattr(x.levels, name)[b])
            stride = 2 if down and b == 0 else 1
            yield LayerSpec("tag", 1), None, {}
            yield LayerSpec("con"), block and block.conv1, _conv(channels, 3, stride)
            yield LayerSpec("affine"), block and block.bn1, _AFFINE
            yield LayerSpec("relu"), None, {}
            yield LayerSpec("con"), block and block.conv2, _conv(channels, 3, 1)
            yield LayerSpec("affine"), block and block.bn2, _AFFINE
            if stride == 2:
                yield LayerSpec("tag", 2), None, {}
                yield LayerSpec("skip", 1), None, {}
                yield LayerSpec("avg_pool"), None, _pool(2, 2)
                yield LayerSpec("add_prev", 2), None, {}
            else:
                yield LayerSpec("add_prev", 1), None, {}
            yield LayerSpec("relu"), None, {}
    # avg_pool_everything is avg_pool_<0,0,1,1>: a 0 window means the whole plane.
    yield LayerSpec("avg_pool"), None, dict(nr=0, nc=0, stride_y=1, stride_x=1, padding_y=0, padding_x=0)
    yield LayerSpec("fc"), m(lambda x: x.fc), dict(num_outputs=EMBEDDING_DIM, bias_mode=1)


def face_resnet_layout() -> tuple[LayerSpec, ...]:
    """The expected layer sequence of ``dlib_face_recognition_resnet_model_v1.dat``, input side first."""
    return tuple(spec for spec, _, _ in _plan(None))


def _load_params(module: nn.Module, rec: LayerRecord, where: str) -> None:
    def put(target: torch.Tensor, value: np.ndarray, name: str) -> None:
        if tuple(target.shape) != value.shape:
            raise ModelFileError(
                f"{where}: {name} has shape {value.shape}, the face ResNet expects {tuple(target.shape)}"
            )
        target.copy_(torch.from_numpy(value))

    if isinstance(module, nn.Conv2d):
        put(module.weight, rec.params["weight"], "filters")
        put(module.bias, rec.params["bias"], "biases")
    elif isinstance(module, Affine):
        put(module.gamma, rec.params["gamma"], "gamma")
        put(module.beta, rec.params["beta"], "beta")
    elif isinstance(module, nn.Linear):
        # dlib stores (num_inputs, num_outputs) and computes x @ W; torch stores W transposed.
        put(module.weight, np.ascontiguousarray(rec.params["weight"].T), "weights")
    else:
        raise TypeError(f"no weights to load into {type(module).__name__}")


def load_dlib_resnet(path: str | Path | None = None, cache: bool = True, lr: bool = False) -> DlibResNet:
    """The exact port of a dlib face ResNet file (default: the one face_recognition_models ships), in eval mode;
    ``lr=True``: its weights in the LR variant (see :class:`DlibResNet`)."""
    path = Path(path) if path is not None else default_dat_path()
    return DlibResNet.from_dlib_net(load_dlib_net(path, face_resnet_layout(), cache=cache), lr)


def chips_to_tensor(chips: np.ndarray) -> torch.Tensor:
    """Aligned chips as stored ((N, H, W, 3) or (H, W, 3) uint8 RGB) to the model's (N, 3, H, W) uint8 input."""
    arr = np.asarray(chips)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB chips, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


# From the smallest side its pooling leaves a pixel of to twice the 150 px chips dlib was trained on.
DLIB_INPUT_SIZES = (MIN_INPUT_SIZE, 2 * INPUT_SIZE)


@register_model("dlib_resnet", DLIB_INPUT_SIZES, trained=True)
def _dlib_resnet(path: str | Path | None = None) -> nn.Module:
    return load_dlib_resnet(path)


@register_model("dlib_resnet_bn", DLIB_INPUT_SIZES, trained=True)
def _dlib_resnet_bn(path: str | Path | None = None, stats: str | Path | None = None) -> nn.Module:
    """The port with batch norm restored from shipped statistics (measured on LFW faces; see docs/teacher_port.md)."""
    from aird.models.bn_restore import BN_STATS_ASSET, batchnorm_from_stats, load_bn_stats

    bn_stats, _ = load_bn_stats(stats or BN_STATS_ASSET)
    return batchnorm_from_stats(load_dlib_resnet(path), bn_stats)


@register_model("dlib_resnet_lr", LR_INPUT_SIZES)
def _dlib_resnet_lr(path: str | Path | None = None, stats: str | Path | None = None) -> nn.Module:
    """``dlib_resnet_bn``'s weights in the LR variant (32 px input): a teacher-initialised fast student. Not
    registered as trained: at this input size it must be distilled before it embeds faces."""
    from aird.models.bn_restore import BN_STATS_ASSET, batchnorm_from_stats, load_bn_stats

    bn_stats, _ = load_bn_stats(stats or BN_STATS_ASSET)
    return batchnorm_from_stats(load_dlib_resnet(path, lr=True), bn_stats)
