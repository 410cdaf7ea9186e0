"""Models by name: ``get_model("dlib_resnet")``."""

from __future__ import annotations

from typing import Callable

from torch import nn

from aird.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
# Names whose factory loads trained weights (dlib's); every other name builds a randomly initialised network.
_TRAINED: set[str] = set()


def register_model(name: str, trained: bool = False) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory; ``trained=True`` when it loads trained weights rather than random ones."""
    if trained:
        _TRAINED.add(name)
    return MODELS.register(name)


def get_model(name: str, **kwargs) -> nn.Module:
    return MODELS.get(name, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()


def has_trained_weights(name: str) -> bool:
    return name in _TRAINED
