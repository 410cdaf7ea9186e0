"""Batch norm restored into the dlib port, so that it can be fine-tuned like any BN network.

dlib trained with batch norm and, at the end, folded each BN into a fixed ``affine_`` layer
y = gamma * x + beta. The running statistics are gone from the file, so they are measured again:
run real aligned faces through the exact port (eval mode) and take, at every affine layer, the
per-channel mean m and (population) variance v of its input. The BN that replaces the affine uses

    running_mean = m, running_var = v, weight = gamma * sqrt(v + eps), bias = beta + gamma * m

so that in eval mode BN(x) = weight * (x - m) / sqrt(v + eps) + bias = gamma * x + beta: the same
function, for any m and v. In train mode it normalises with batch statistics, as BN networks do.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from aird.errors import ModelFileError
from aird.io import read_npz_asset, write_npz_asset
from aird.models.dlib_resnet import Affine, DlibResNet

BN_STATS_ASSET = Path(__file__).parent / "assets" / "dlib_resnet_bn_stats.npz"
DEFAULT_EPS = 1e-5


@dataclass
class ChannelStats:
    """Per-channel statistics of one affine layer's input."""

    mean: np.ndarray  # (C,) float64
    var: np.ndarray  # (C,) float64, population variance
    count: int  # values per channel they were measured on (images x positions)


def affine_layers(model: nn.Module) -> dict[str, Affine]:
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, Affine)}


def _batches(chips: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(chips, torch.Tensor):
        yield from chips.split(batch_size)
    else:
        for batch in chips:
            yield torch.as_tensor(batch)


def measure_affine_inputs(
    model: DlibResNet, chips: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 64
) -> dict[str, ChannelStats]:
    """Mean and variance of every affine layer's input over ``chips`` ((N, 3, H, W) pixels 0..255, or batches of them)."""
    layers = affine_layers(model)
    if not layers:
        raise ValueError("the model has no affine layers to measure (is batch norm already restored?)")
    # Running (count, mean, M2) per layer, merged batch by batch (Chan et al.) in float64.
    acc: dict[str, list] = {}

    def hook(name: str):
        def pre_hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().double()
            n = x.numel() // x.shape[1]
            mean = x.mean(dim=(0, 2, 3))
            m2 = ((x - mean.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3))
            if name not in acc:
                acc[name] = [n, mean, m2]
                return
            n0, mean0, m20 = acc[name]
            delta = mean - mean0
            total = n0 + n
            acc[name] = [total, mean0 + delta * (n / total), m20 + m2 + delta**2 * (n0 * n / total)]

        return pre_hook

    handles = [mod.register_forward_pre_hook(hook(name)) for name, mod in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in _batches(chips, batch_size):
                model(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not acc:
        raise ValueError("no chips were given to measure batch-norm statistics on")
    return {name: ChannelStats(mean.numpy(), (m2 / n).numpy(), int(n)) for name, (n, mean, m2) in acc.items()}


def batchnorm_from_stats(model: DlibResNet, stats: Mapping[str, ChannelStats], eps: float = DEFAULT_EPS) -> DlibResNet:
    """A copy of ``model`` with every affine layer replaced by the equivalent ``nn.BatchNorm2d``."""
    bn_model = copy.deepcopy(model)
    layers = affine_layers(bn_model)
    missing = sorted(set(layers) - set(stats))
    if missing:
        raise ModelFileError(f"batch-norm statistics lack layers {missing[:3]}{'...' if len(missing) > 3 else ''}")
    for name, affine in layers.items():
        st = stats[name]
        gamma, beta = affine.gamma.double(), affine.beta.double()
        if st.mean.shape != gamma.shape or st.var.shape != gamma.shape:
            raise ModelFileError(
                f"batch-norm statistics of {name} have {st.mean.shape[0]} channels, the layer has {gamma.numel()}"
            )
        mean, var = torch.from_numpy(st.mean).double(), torch.from_numpy(st.var).double()
        bn = nn.BatchNorm2d(gamma.numel(), eps=eps).to(affine.gamma.device)
        with torch.no_grad():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_(gamma * torch.sqrt(var + eps))
            bn.bias.copy_(beta + gamma * mean)
        parent_name, _, child = name.rpartition(".")
        setattr(bn_model.get_submodule(parent_name), child, bn)
    return bn_model.train(model.training)


def restore_batchnorm(
    model: DlibResNet, chips: torch.Tensor | Iterable[torch.Tensor], eps: float = DEFAULT_EPS, batch_size: int = 64
) -> DlibResNet:
    """Replace every folded affine by a BatchNorm2d whose running stats are measured on ``chips`` (eval output unchanged)."""
    return batchnorm_from_stats(model, measure_affine_inputs(model, chips, batch_size), eps)


def save_bn_stats(path: str | Path, stats: Mapping[str, ChannelStats], **meta: str | int) -> None:
    """Write statistics as a small float32 ``.npz`` (``<layer>:mean``, ``<layer>:var``, ``<layer>:count``, ``meta:<key>``)."""
    arrays: dict[str, np.ndarray] = {}
    for name, st in stats.items():
        arrays[f"{name}:mean"] = st.mean.astype(np.float32)
        arrays[f"{name}:var"] = st.var.astype(np.float32)
        arrays[f"{name}:count"] = np.array(st.count, dtype=np.int64)
    write_npz_asset(path, arrays, **meta)


def load_bn_stats(path: str | Path = BN_STATS_ASSET) -> tuple[dict[str, ChannelStats], dict[str, str]]:
    """Statistics and metadata written by :func:`save_bn_stats`."""
    arrays, meta = read_npz_asset(path, "batch-norm statistics")
    stats = {}
    for key, value in arrays.items():
        name, _, field = key.rpartition(":")
        if field == "mean":
            try:
                var, count = arrays[f"{name}:var"], arrays[f"{name}:count"]
            except KeyError as err:
                raise ModelFileError(f"{path}: statistics of {name} lack {err.args[0]}") from None
            stats[name] = ChannelStats(value.astype(np.float64), var.astype(np.float64), int(count))
    if not stats:
        raise ModelFileError(f"{path}: holds no batch-norm statistics")
    return stats, meta
