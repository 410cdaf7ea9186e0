"""Turn a model name from the command line or a config into an Embedder."""

from __future__ import annotations

from pathlib import Path

from aird.errors import ConfigError
from aird.models.embedder import Embedder, TorchEmbedder, module_fingerprint
from aird.models.registry import get_model, has_trained_weights, list_models
from aird.models.shipped import SHIPPED_STUDENTS, shipped_student_path
from aird.models.teacher import DlibTeacher

# "dlib" is dlib-bin itself, not a torch module, so it sits beside the registry's names.
EXTRA_MODELS = ("dlib",)
# Prefix that asks for a registered architecture with random weights, on purpose (a baseline, a smoke test).
RANDOM_PREFIX = "random:"
UNTRAINED_METHOD = "untrained"


def model_names() -> list[str]:
    return sorted(set(EXTRA_MODELS) | set(list_models()))


def load_embedder(name: str, batch_size: int = 64) -> Embedder:
    """An embedder by name; its ``method`` attribute says how its weights were obtained.

    - ``dlib``, ``dlib_resnet``, ``dlib_resnet_bn``: the teacher (dlib's trained weights), method ``teacher``.
    - ``shipped``, ``fast``: the students that ship with aird (``aird/models/assets``), as their files.
    - ``<file>.safetensors`` written by ``aird distill``: named ``<run>@<weights fingerprint>`` and with
      the file's method (see :func:`aird.models.student.student_provenance`), so students of two runs or
      splits never share a name.
    - ``<file>.onnx`` written by ``aird export``: run on onnxruntime.
    - ``random:<name>``: a registered architecture with random weights, method ``untrained``. A plain
      registry name without trained weights (``lr_light``) is an error: it would evaluate noise silently.
    """
    if name.endswith(".onnx"):
        from aird.models.export import OnnxEmbedder

        return OnnxEmbedder(name, batch_size)
    if name.endswith(".safetensors"):
        return _student(Path(name), batch_size)
    if name in SHIPPED_STUDENTS:
        return _student(shipped_student_path(name), batch_size)
    if name == "dlib":
        return DlibTeacher("dlib")
    if name == "dlib_resnet":
        return DlibTeacher("torch", batch_size=batch_size)
    untrained = name.startswith(RANDOM_PREFIX)
    arch = name[len(RANDOM_PREFIX) :] if untrained else name
    if arch not in list_models():
        raise ConfigError(
            f"unknown model {arch!r}; choose one of: {', '.join(model_names())}, a student .safetensors file, "
            f"or {RANDOM_PREFIX}<name> for untrained weights"
        )
    if untrained and has_trained_weights(arch):
        raise ConfigError(f"model {arch!r} loads dlib's trained weights; drop the {RANDOM_PREFIX!r} prefix")
    if not untrained and not has_trained_weights(arch):
        raise ConfigError(
            f"model {arch!r} has no trained weights (the registry builds it randomly initialised): evaluate a "
            f"trained student file (runs/<run>/student.safetensors), or pass --model {RANDOM_PREFIX}{arch} "
            "to evaluate the untrained network on purpose"
        )
    module = get_model(arch)
    return TorchEmbedder(
        module,
        name,
        getattr(module, "input_size", None),
        batch_size,
        method=UNTRAINED_METHOD if untrained else "teacher",
    )


def _student(path: Path, batch_size: int) -> TorchEmbedder:
    from aird.models.student import load_student, student_provenance

    module, meta = load_student(path)
    run, method = student_provenance(path, meta)
    return TorchEmbedder(
        module, f"{run}@{module_fingerprint(module)[:8]}", int(meta["input_size"]), batch_size, method=method
    )
