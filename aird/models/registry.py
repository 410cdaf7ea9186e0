"""Models by name: ``get_model("dlib_resnet")``."""

from __future__ import annotations

from typing import Callable

from torch import nn

from aird.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")
# The input sides (px, [low, high]) each architecture reads: configs are checked against them at load.
INPUT_SIZES: dict[str, tuple[int, int]] = {}


def register_model(name: str, input_sizes: tuple[int, int]) -> Callable[[Callable[..., nn.Module]], Callable]:
    INPUT_SIZES[name] = input_sizes
    return MODELS.register(name)


def get_model(name: str, **kwargs) -> nn.Module:
    return MODELS.get(name, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()
