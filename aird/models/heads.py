"""Classifier heads over face embeddings: the cosine classifier C_t / C_s of the distillation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class CosineClassifier(nn.Module):
    """cos(f, W_c) for every class c: (N, d) -> (N, C). The scale lives in the losses."""

    def __init__(self, dim: int, num_classes: int, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim, generator=generator) * 0.01)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T


def fit_cosine_head(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_classes: int | None = None,
    scale: float = 30.0,
    margin: float = 0.2,
    steps: int = 300,
    lr: float = 0.01,
    seed: int = 0,
) -> CosineClassifier:
    """Fit C_t on frozen teacher features: class-mean initialisation, then full-batch margin softmax.

    Unlabelled rows (label < 0) are ignored. Features are cached, so this takes seconds. Anything random
    draws from its own generator seeded with ``seed``: the global RNG, which seeds the student, is untouched.
    """
    f = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    keep = y >= 0
    f, y = F.normalize(f[keep], dim=1), y[keep]
    if len(y) == 0:
        raise ValueError("fit_cosine_head needs labelled features (labels >= 0)")
    num_classes = num_classes or int(y.max()) + 1
    head = CosineClassifier(f.shape[1], num_classes, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        means = torch.zeros(num_classes, f.shape[1]).index_add_(0, y, f)
        head.weight.copy_(F.normalize(means + 1e-8, dim=1))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    onehot = F.one_hot(y, num_classes).float()
    for _ in range(steps):
        opt.zero_grad()
        logits = scale * (head(f) - margin * onehot)
        F.cross_entropy(logits, y).backward()
        opt.step()
    return head.eval()


def save_head(path: str | Path, head: CosineClassifier) -> None:
    from safetensors.torch import save_file

    from aird.io import atomic_path

    with atomic_path(Path(path)) as tmp:
        save_file({"weight": head.weight.detach().contiguous()}, str(tmp))


def load_head(path: str | Path) -> CosineClassifier:
    from safetensors.torch import load_file

    from aird.errors import ModelFileError

    path = Path(path)
    try:
        weight = load_file(str(path))["weight"]
    except Exception as exc:  # missing file, damaged file or no "weight" tensor
        raise ModelFileError(f"{path}: not a classifier head file ({exc})") from None
    head = CosineClassifier(weight.shape[1], weight.shape[0])
    head.weight.data.copy_(weight)
    return head.eval()
