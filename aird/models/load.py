"""Turn a model name from the command line or a config into an Embedder."""
from __future__ import annotations

from aird.errors import ConfigError
from aird.models.embedder import Embedder, TorchEmbedder
from aird.models.registry import get_model, list_models
from aird.models.teacher import DlibTeacher

# "dlib" is dlib-bin itself, not a torch module, so it sits beside the registry's names.
EXTRA_MODELS = ("dlib",)


def model_names() -> list[str]:
    return sorted(set(EXTRA_MODELS) | set(list_models()))


def load_embedder(name: str, batch_size: int = 64) -> Embedder:
    if name == "dlib":
        return DlibTeacher("dlib")
    if name == "dlib_resnet":
        return DlibTeacher("torch", batch_size=batch_size)
    if name not in list_models():
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    module = get_model(name)
    return TorchEmbedder(module, name, getattr(module, "input_size", None), batch_size)
