"""Student weights on disk: safetensors (safe to load anywhere) with the settings to rebuild the model."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aird.errors import ModelFileError
from aird.io import atomic_path
from aird.models.registry import get_model


def save_student(path: str | Path, student: torch.nn.Module, model: str, input_size: int, **meta: str) -> None:
    info = {"model": model, "input_size": str(input_size), **meta}
    with atomic_path(Path(path)) as tmp:
        save_file({k: v.detach().contiguous() for k, v in student.state_dict().items()}, str(tmp), metadata=info)


def load_student(path: str | Path) -> tuple[torch.nn.Module, dict[str, str]]:
    """The registered architecture named in the file, with the file's weights, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: student weights file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        weights = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
    if "model" not in meta or "input_size" not in meta:
        raise ModelFileError(f"{path}: no aird metadata (model, input_size); save students with 'aird distill'")
    model = get_model(meta["model"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit model {meta['model']!r} ({exc})") from None
    return model.eval(), meta
