"""A light student that reads the LR face at its native size (16 px by default), trained from scratch.

Four stages of two 3x3 conv-BN-ReLU (16-32-64-128 channels, stride 2 from the second stage), global
average pooling, a 128-D linear embedding and a BatchNorm1d: about 0.3 M parameters, about 3 M multiply-adds per
16 px face, so thousands of faces per second on two CPU cores.
"""

from __future__ import annotations

import torch
from torch import nn

from aird.models.registry import register_model


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LightLRNet(nn.Module):
    def __init__(self, input_size: int = 16, embedding_dim: int = 128, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.input_size = input_size
        layers, cin = [], 3
        for i, w in enumerate(widths):
            layers += [_conv_bn(cin, w, 1 if i == 0 else 2), _conv_bn(w, w, 1)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed = nn.Linear(cin, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in 0..255 -> (N, embedding_dim)."""
        x = (x.float() - 127.5) / 128.0
        return self.bn(self.embed(self.pool(self.features(x)).flatten(1)))


# Built for LR faces at their native size: the smallest LR face up to 4x its default 16 px.
@register_model("lr_light", (8, 64))
def _lr_light(input_size: int = 16) -> nn.Module:
    return LightLRNet(input_size)


class _BasicBlock(nn.Module):
    """ResNet's basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        )
        self.shortcut: nn.Module = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResLRNet(nn.Module):
    """The fast student: a small ResNet that reads the LR face at its native side (16 px by default).

    A 3x3 stem at full resolution, four stages of basic blocks (32-64-128-256 channels, blocks 1-2-2-1,
    stride 2 from the second stage: 16 -> 8 -> 4 -> 2 px at 16 px input), and a flattened linear embedding
    rather than global pooling, since where a feature sits on a face matters (``strides`` gives each
    stage's first block; ``lr_resnet_4x4`` keeps the last stage at 4x4). About 1.7 M parameters and
    60 M multiply-adds per 16 px face: the widths and depths were chosen by measured speed (at least
    2,000 faces/s at batch 64 on 2 cores, docs/results/students.json), and it is trained by bridge
    distillation from the main student (configs/fast.yaml).
    """

    def __init__(
        self,
        input_size: int = 16,
        embedding_dim: int = 128,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        blocks: tuple[int, ...] = (1, 2, 2, 1),
        strides: tuple[int, ...] = (1, 2, 2, 2),
    ):
        super().__init__()
        self.input_size = input_size
        layers: list[nn.Module] = [_conv_bn(3, widths[0], 1)]
        cin = widths[0]
        side = input_size
        for w, n, s in zip(widths, blocks, strides, strict=True):
            for b in range(n):
                layers.append(_BasicBlock(cin, w, s if b == 0 else 1))
                cin = w
            side = (side - 1) // s + 1  # a 3x3 conv with padding 1
        self.features = nn.Sequential(*layers)
        self.embed = nn.Linear(cin * side * side, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, input_size, input_size) RGB in 0..255 -> (N, embedding_dim)."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"lr_resnet reads {self.input_size}x{self.input_size} faces, got {tuple(x.shape[-2:])}: "
                "resize with aird.data.degrade.to_network_input"
            )
        x = (x.float() - 127.5) / 128.0
        return self.bn(self.embed(self.features(x).flatten(1)))


# Its flattened embedding fixes the input side, so it reads 16 px faces only (others are resized to 16).
@register_model("lr_resnet", (16, 16))
def _lr_resnet(input_size: int = 16) -> nn.Module:
    return ResLRNet(input_size)


# Two larger fast-student candidates: capacity where the face is 4x4 and 2x2 px, in width or in depth. Neither
# gained accuracy (docs/results/fast-ablation.md); timed as trained students the wide one falls below the
# 2,000 faces/s bar (docs/results/fast-candidates/students.md).
@register_model("lr_resnet_wide", (16, 16))
def _lr_resnet_wide(input_size: int = 16) -> nn.Module:
    return ResLRNet(input_size, widths=(32, 64, 192, 384))


@register_model("lr_resnet_deep", (16, 16))
def _lr_resnet_deep(input_size: int = 16) -> nn.Module:
    return ResLRNet(input_size, blocks=(1, 2, 3, 2))


# A third candidate: the last stage keeps the 4x4 map instead of halving it to 2x2 (about 0.76x the speed of
# lr_resnet). Trained with the fast recipe it lost 1.5 points at 16 px LR-LR (docs/results/fast-ablation.md).
@register_model("lr_resnet_4x4", (16, 16))
def _lr_resnet_4x4(input_size: int = 16) -> nn.Module:
    return ResLRNet(input_size, strides=(1, 2, 2, 1))
