"""Channel pruning of the main student: the 150 px network with fewer inner channels, for speed.

Each residual block of dlib's ResNet computes ``relu(bn2(conv2(relu(bn1(conv1(x))))) + x)``. Its inner
channels (conv1's filters, bn1, conv2's input channels) can be removed without touching the residual
stream, so every block keeps its shape on the outside and the pruned network is an exact sub-network: a
block that keeps ``keep`` of its inner channels costs about ``keep`` of its multiply-adds.

Which channels stay (data-free, from the trained weights alone): in eval mode bn1 gives each inner channel
j the running statistics it was trained on, so for faces like the training ones its pre-ReLU value is
about N(b_j, w_j^2) (bn1's bias and weight). Its activation a_j = relu(.) then has the closed-form second
moment E[a_j^2] = (b^2 + w^2) Phi(b/|w|) + b |w| phi(b/|w|), and the channel's share of the block's output
is scored as sqrt(E[a_j^2]) times the norm of conv2's filters that read it. Each block keeps its
highest-scoring channels. What a dropped channel contributed on average (conv2's filter sums times
E[a_j]) is folded into conv2's bias, so the pruned network starts close to the full one; fine-tuning by
bridge distillation from the full network then recovers the rest (``configs/ablations/prune-*.yaml``,
``docs/method.md``).

Registered architectures: ``dlib_resnet_slim50``, ``dlib_resnet_slim25`` and ``dlib_resnet_slim12`` keep a
half, a quarter and an eighth of every block's inner channels. ``aird distill --init`` (or ``student.init``) with a full
``dlib_resnet_bn`` student and a slim ``student.model`` prunes the one into the other.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aird.models.dlib_resnet import DLIB_INPUT_SIZES, Affine, DlibResNet, ResBlock, inner_widths
from aird.models.registry import register_model

# Registered slim architectures: name -> share of each block's inner channels kept.
SLIM_KEEP = {"dlib_resnet_slim50": 0.5, "dlib_resnet_slim25": 0.25, "dlib_resnet_slim12": 0.125}
# The full architecture every slim one is pruned from (the main student's).
FULL_MODEL = "dlib_resnet_bn"


def _with_batchnorm(model: DlibResNet) -> DlibResNet:
    """Every folded affine of ``model`` replaced by a fresh BatchNorm2d, named as in ``dlib_resnet_bn``."""
    for name, module in list(model.named_modules()):
        if isinstance(module, Affine):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, nn.BatchNorm2d(module.gamma.numel()))
    return model


def slim_resnet(keep: float) -> DlibResNet:
    """dlib's ResNet with batch norm and ``keep`` of every block's inner channels, randomly initialised
    (:func:`prune_inner` fills it from a trained full network)."""
    return _with_batchnorm(DlibResNet(inner=inner_widths(keep)))


def _relu_moments(mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E[relu(Z)] and E[relu(Z)^2] for Z ~ N(mean, std^2), elementwise."""
    std = std.clamp_min(1e-12)
    z = mean / std
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    first = mean * cdf + std * pdf
    second = (mean * mean + std * std) * cdf + mean * std * pdf
    return first, second


def inner_scores(block: ResBlock) -> torch.Tensor:
    """Each inner channel's score: RMS of its activation (from bn1's parameters) times the norm of conv2's
    filters that read it."""
    bn = block.bn1
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"pruning needs batch norm in the blocks (a {FULL_MODEL} student), got {type(bn).__name__}")
    _, second = _relu_moments(bn.bias.detach().double(), bn.weight.detach().double().abs())
    reads = block.conv2.weight.detach().double().pow(2).sum(dim=(0, 2, 3)).sqrt()
    return second.sqrt() * reads


@torch.no_grad()
def prune_inner(full: DlibResNet, keep: float) -> DlibResNet:
    """A copy of ``full`` (a ``dlib_resnet_bn`` network, e.g. a trained main student) keeping ``keep`` of
    every block's inner channels, the highest-scoring ones (:func:`inner_scores`); dropped channels' mean
    contribution goes into conv2's bias. Returns the slim network in ``full``'s train/eval mode."""
    slim = slim_resnet(keep)
    full_blocks = [m for m in full.modules() if isinstance(m, ResBlock)]
    slim_blocks = [m for m in slim.modules() if isinstance(m, ResBlock)]
    if len(full_blocks) != len(slim_blocks):
        raise ValueError(f"{len(full_blocks)} residual blocks to prune, the slim network has {len(slim_blocks)}")
    # Everything of the same shape is copied as it is (all but the blocks' inner channels, filled next).
    slim_state = slim.state_dict()
    for key, value in full.state_dict().items():
        if slim_state[key].shape == value.shape:
            slim_state[key].copy_(value)
    for src, dst in zip(full_blocks, slim_blocks):
        prune_block(src, dst)
    return slim.train(full.training)


@torch.no_grad()
def prune_block(src: ResBlock, dst: ResBlock) -> None:
    """Fill ``dst`` (a block with fewer inner channels) from ``src``: its highest-scoring inner channels, in
    their order, and conv2's bias raised by the dropped channels' mean contribution."""
    n = dst.conv1.out_channels
    order = torch.argsort(inner_scores(src), descending=True)
    kept, dropped = order[:n].sort().values, order[n:]
    dst.conv1.weight.copy_(src.conv1.weight[kept])
    dst.conv1.bias.copy_(src.conv1.bias[kept])
    for k, v in src.bn1.state_dict().items():
        getattr(dst.bn1, k).copy_(v[kept] if v.ndim else v)
    dst.conv2.weight.copy_(src.conv2.weight[:, kept])
    mean, _ = _relu_moments(src.bn1.bias.double(), src.bn1.weight.double().abs())
    lost = (src.conv2.weight[:, dropped].double().sum(dim=(2, 3)) * mean[dropped]).sum(dim=1)
    dst.conv2.bias.copy_(src.conv2.bias.double() + lost)
    dst.bn2.load_state_dict(src.bn2.state_dict())


def _register(name: str, keep: float) -> None:
    @register_model(name, DLIB_INPUT_SIZES)
    def _factory() -> nn.Module:
        return slim_resnet(keep)

    _factory.__doc__ = f"dlib's ResNet with {keep:.0%} of every block's inner channels (random weights: prune into it)."


for _name, _keep in SLIM_KEEP.items():
    _register(_name, _keep)
