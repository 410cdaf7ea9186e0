"""Distillation losses, one registered module each (see docs/method.md for the maths and choices).

Every loss reads what it needs from a ``DistillOutputs`` and returns a scalar. ``cos_s`` / ``cos_t``
are the cosine-classifier outputs cos(f, W) of the student and teacher heads over the training
identities; ``labels`` is -1 for unlabelled faces (UTKFace), which only feature and relation terms use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aird.errors import ConfigError
from aird.registry import Registry

LOSSES: Registry[nn.Module] = Registry("loss")
register_loss = LOSSES.register
# Options a logit or a similarity is divided or multiplied by: > 0. Every other number (weights,
# margins, a, b) must be >= 0: a negative one turns a term around.
POSITIVE_OPTIONS = ("scale", "temperature", "tau")


def check_term(name: str, options: dict, where: str) -> None:
    """Fail at config load on an unknown option of term ``name``, or a value of the wrong type or range."""
    LOSSES.check_options(name, options, where, extra=("weight",))
    defaults = {**LOSSES.defaults(name), "weight": 1.0}
    for key, value in options.items():
        if isinstance(defaults[key], bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key} must be true or false, got {value!r}")
            continue
        positive = key in POSITIVE_OPTIONS
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or value < 0 or (positive and value == 0):
            raise ConfigError(f"{where}.{key} must be a number {'> 0' if positive else '>= 0'}, got {value!r}")


@dataclass
class DistillOutputs:
    f_s: torch.Tensor  # (N, d) student features of the LR faces
    f_t: torch.Tensor  # (N, d) teacher features of the HR faces (frozen)
    cos_s: torch.Tensor | None = None  # (N, C) student head: cos(f_s, W_s)
    cos_t: torch.Tensor | None = None  # (N, C) teacher head: cos(f_t, W_t)
    labels: torch.Tensor | None = None  # (N,) identity index, -1 = unlabelled
    queue_t: torch.Tensor | None = None  # (Q, d) recent teacher features from earlier batches
    center: torch.Tensor | None = None  # (d,) mean teacher feature of the training set (terms built with center=True)


def _labelled(out: DistillOutputs) -> torch.Tensor | None:
    if out.labels is None:
        return None
    mask = out.labels >= 0
    return mask if bool(mask.any()) else None


def _need(value: torch.Tensor | None, name: str, loss: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"loss {loss!r} needs {name}; the model/head did not provide it")
    return value


def _centred(out: DistillOutputs, *features: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Features minus the training set's mean teacher feature: dlib's descriptors share a large common
    component (strangers' cosines sit near 0.85), which a raw cosine spends most of its range on."""
    mu = _need(out.center, "center (the mean teacher feature)", "centred term")
    return [None if f is None else f - mu for f in features]


@register_loss("cls")
class MarginSoftmax(nn.Module):
    """CosFace-style margin softmax on the student head: CE(s * (cos - m * onehot)). Labelled faces only."""

    def __init__(self, scale: float = 30.0, margin: float = 0.2):
        super().__init__()
        self.scale, self.margin = scale, margin

    def forward(self, out: DistillOutputs) -> torch.Tensor:
        cos = _need(out.cos_s, "cos_s", "cls")
        mask = _labelled(out)
        if mask is None:
            return cos.sum() * 0.0
        cos, labels = cos[mask], out.labels[mask]
        logits = self.scale * (cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype))
        return F.cross_entropy(logits, labels)


@register_loss("kd")
class LogitKD(nn.Module):
    """Hinton KD on the heads' logits s * cos / T: T^2 * mean_i KL(p_t^i || p_s^i)."""

    def __init__(self, scale: float = 30.0, temperature: float = 4.0):
        super().__init__()
        self.scale, self.temperature = scale, temperature

    def forward(self, out: DistillOutputs) -> torch.Tensor:
        cos_s, cos_t = _need(out.cos_s, "cos_s", "kd"), _need(out.cos_t, "cos_t", "kd")
        t = self.temperature
        log_p_s = F.log_softmax(self.scale * cos_s / t, dim=1)
        log_p_t = F.log_softmax(self.scale * cos_t / t, dim=1)
        return t * t * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


@register_loss("cosine")
class CosineFeature(nn.Module):
    """Embedding cosine distillation (as F-SKD): mean_i (1 - cos(f_s^i, f_t^i)); with ``center``, of the
    features minus the mean teacher feature."""

    def __init__(self, center: bool = False):
        super().__init__()
        self.center = center

    def forward(self, out: DistillOutputs) -> torch.Tensor:
        f_s, f_t = _centred(out, out.f_s, out.f_t) if self.center else (out.f_s, out.f_t)
        return (1.0 - F.cosine_similarity(f_s, f_t, dim=1)).mean()


@register_loss("feature-l2")
class FeatureL2(nn.Module):
    """FitNet-style hint on the embedding: mean_i ||f_s^i - f_t^i||^2 (raw features, as FitNet)."""

    def forward(self, out: DistillOutputs) -> torch.Tensor:
        return (out.f_s - out.f_t).pow(2).sum(dim=1).mean()


@register_loss("rkd")
class RelationalKD(nn.Module):
    """Park et al. 2019: Huber loss on mean-normalised pairwise distances plus on triplet angles."""

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    @staticmethod
    def _distances(f: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(f, f)
        off = ~torch.eye(len(f), dtype=torch.bool, device=f.device)
        return d / d[off].mean().clamp_min(1e-12)

    @staticmethod
    def _angles(f: torch.Tensor) -> torch.Tensor:
        diff = F.normalize(f.unsqueeze(0) - f.unsqueeze(1), dim=2)  # (N, N, d): e_ij = unit(f_i - f_j)
        return torch.bmm(diff, diff.transpose(1, 2)).flatten()  # <e_ij, e_ik> for every anchor i

    def forward(self, out: DistillOutputs) -> torch.Tensor:
        f_s, f_t = out.f_s, out.f_t.detach()
        distance = F.smooth_l1_loss(self._distances(f_s), self._distances(f_t))
        angle = F.smooth_l1_loss(self._angles(f_s), self._angles(f_t))
        return self.distance_weight * distance + self.angle_weight * angle


@register_loss("ild")
class InstanceLevel(nn.Module):
    """AIRD instance level: a * mean_i (1 - cos(f_s^i, f_t^i)) + b * T^2 * mean_i KL(p_t^i || p_s^i)."""

    def __init__(
        self, a: float = 1.0, b: float = 1.0, scale: float = 30.0, temperature: float = 4.0, center: bool = False
    ):
        super().__init__()
        self.a, self.b = a, b
        self.cosine = CosineFeature(center)
        self.kd = LogitKD(scale, temperature)

    def forward(self, out: DistillOutputs) -> torch.Tensor:
        loss = self.a * self.cosine(out)
        if self.b:
            loss = loss + self.b * self.kd(out)
        return loss


@register_loss("rld")
class RelationLevel(nn.Module):
    """AIRD relation level: mean_i KL(softmax_j(r_t^{ij} / tau) || softmax_j(r_{t,s}^{ij} / tau)),
    r_t^{ij} = cos(f_t^i, f_t^j), r_{t,s}^{ij} = cos(f_s^i, f_t^j), j over the batch plus the queue;
    with ``center``, cosines of the features minus the mean teacher feature."""

    def __init__(self, tau: float = 0.05, center: bool = False):
        super().__init__()
        self.tau, self.center = tau, center

    def forward(self, out: DistillOutputs) -> torch.Tensor:
        f_s, f_t, queue = (out.f_s, out.f_t.detach(), out.queue_t)
        if self.center:
            f_s, f_t, queue = _centred(out, f_s, f_t, queue)
        t = F.normalize(f_t, dim=1)
        keys = t if queue is None or len(queue) == 0 else torch.cat([t, F.normalize(queue, dim=1)])
        s = F.normalize(f_s, dim=1)
        log_r_t = F.log_softmax(t @ keys.T / self.tau, dim=1)
        log_r_ts = F.log_softmax(s @ keys.T / self.tau, dim=1)
        return F.kl_div(log_r_ts, log_r_t, log_target=True, reduction="batchmean")


class WeightedLosses(nn.Module):
    """The total loss: sum of weighted registered terms; ``forward`` also returns each term for logging."""

    def __init__(self, terms: dict[str, dict]):
        super().__init__()
        if not terms:
            raise ValueError("a distillation method needs at least one loss term")
        self.weights = {name: float(spec.get("weight", 1.0)) for name, spec in terms.items()}
        self.terms = nn.ModuleDict(
            {name: LOSSES.get(name, **{k: v for k, v in spec.items() if k != "weight"}) for name, spec in terms.items()}
        )

    def forward(self, out: DistillOutputs) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {name: term(out) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}
