"""Turn a model name from the command line or a config into an Embedder."""

from __future__ import annotations

from pathlib import Path

from aird.errors import ConfigError
from aird.models.embedder import Embedder, TorchEmbedder
from aird.models.registry import get_model, list_models
from aird.models.teacher import DlibTeacher

# "dlib" is dlib-bin itself, not a torch module, so it sits beside the registry's names.
EXTRA_MODELS = ("dlib",)


def model_names() -> list[str]:
    return sorted(set(EXTRA_MODELS) | set(list_models()))


def load_embedder(name: str, batch_size: int = 64) -> Embedder:
    """A registered model by name, a student weights file written by ``aird distill``, or a graph
    written by ``aird export`` (``.onnx``, run on onnxruntime)."""
    if name.endswith(".onnx"):
        from aird.models.export import OnnxEmbedder

        return OnnxEmbedder(name, batch_size)
    if name.endswith(".safetensors"):
        from aird.models.student import load_student

        module, meta = load_student(name)
        return TorchEmbedder(module, Path(name).stem, int(meta["input_size"]), batch_size)
    if name == "dlib":
        return DlibTeacher("dlib")
    if name == "dlib_resnet":
        return DlibTeacher("torch", batch_size=batch_size)
    if name not in list_models():
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    module = get_model(name)
    return TorchEmbedder(module, name, getattr(module, "input_size", None), batch_size)
