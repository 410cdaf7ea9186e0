"""Student weights on disk: safetensors (safe to load anywhere) with the settings to rebuild the model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aird.errors import ModelFileError
from aird.io import atomic_path
from aird.models.registry import get_model

# Stored weight types a student file may use; whatever is stored, the loaded module computes in float32.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def save_student(
    path: str | Path,
    student: torch.nn.Module,
    model: str,
    input_size: int,
    dtype: torch.dtype = torch.float32,
    method: str | None = None,
    run: str | None = None,
    **meta: str,
) -> None:
    """Write a student's weights (floating tensors stored as ``dtype``, e.g. float16 to halve the file) with
    what rebuilds it (``model``, ``input_size``) and what names it in result records: ``method`` (how it
    was trained: ``aird``, ``kd``, ...) and ``run`` (its run's name)."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    info = {"model": model, "input_size": str(input_size), **meta}
    info.update({k: v for k, v in (("method", method), ("run", run)) if v is not None})
    tensors = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in student.state_dict().items()
    }
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=info)


def weights_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of tensors exactly as stored (names, dtypes, shapes, bytes): equal files of weights, equal hash."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # Viewed as bytes, since numpy has no bfloat16.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def file_fingerprint(path: str | Path) -> str:
    """``weights_fingerprint`` of a student file's stored tensors (its metadata, the card, is not hashed)."""
    return weights_fingerprint(_read(Path(path))[1])


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise ModelFileError(f"{path}: student weights file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        weights = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
    return meta, weights


def load_student(path: str | Path) -> tuple[torch.nn.Module, dict[str, str]]:
    """The registered architecture named in the file, with the file's weights, in float32 and eval mode
    (whether the file stores float32, float16 or bfloat16)."""
    path = Path(path)
    meta, weights = _read(path)
    if "model" not in meta or "input_size" not in meta:
        raise ModelFileError(f"{path}: no aird metadata (model, input_size); save students with 'aird distill'")
    model = get_model(meta["model"]).float()
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
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
