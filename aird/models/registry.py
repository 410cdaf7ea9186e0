"""Models by name: ``get_model("dlib_resnet")``."""

from __future__ import annotations

from torch import nn

from aird.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
register_model = MODELS.register


def get_model(name: str, **kwargs) -> nn.Module:
    return MODELS.get(name, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()
