"""Models by name: ``get_model("dlib_resnet")``."""

from __future__ import annotations

from typing import Callable

from torch import nn

from aird.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
# The input sides (px, [low, high]) each architecture reads: configs are checked against them at load.
INPUT_SIZES: dict[str, tuple[int, int]] = {}
# Names whose factory loads trained weights (dlib's); every other name builds a randomly initialised network.
_TRAINED: set[str] = set()


def register_model(
    name: str, input_sizes: tuple[int, int], trained: bool = False
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory reading faces of ``input_sizes`` px; ``trained=True`` when it loads trained
    weights rather than random ones."""
    INPUT_SIZES[name] = input_sizes
    if trained:
        _TRAINED.add(name)
    return MODELS.register(name)


def get_model(name: str, **kwargs) -> nn.Module:
    return MODELS.get(name, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()


def has_trained_weights(name: str) -> bool:
    return name in _TRAINED
