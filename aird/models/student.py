"""Student weights on disk: safetensors (safe to load anywhere) with the settings to rebuild the model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aird.errors import ModelFileError
from aird.io import atomic_path
from aird.models.registry import get_model


def save_student(
    path: str | Path,
    student: torch.nn.Module,
    model: str,
    input_size: int,
    method: str | None = None,
    run: str | None = None,
    **meta: str,
) -> None:
    """Write a student's weights with what rebuilds it (``model``, ``input_size``) and what names it in
    result records: ``method`` (how it was trained: ``aird``, ``kd``, ...) and ``run`` (its run's name)."""
    info = {"model": model, "input_size": str(input_size), **meta}
    info.update({k: v for k, v in (("method", method), ("run", run)) if v is not None})
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


def student_provenance(path: str | Path, meta: dict[str, str]) -> tuple[str, str]:
    """(run, method) of a student file, for result records.

    ``run`` is the file's ``run`` metadata, else its folder's name (``runs/aird-A/student.safetensors``
    -> ``aird-A``). ``method`` is the file's ``method`` metadata, else the method in the ``config`` that
    older ``aird distill`` versions stored, else ``unknown``: a student is never reported as the teacher.
    """
    run = meta.get("run") or Path(path).resolve().parent.name
    method = meta.get("method")
    if not method and "config" in meta:
        try:
            method = json.loads(meta["config"]).get("method")
        except (ValueError, AttributeError):
            method = None
    return run, str(method) if method else "unknown"
