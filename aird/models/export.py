"""ONNX export of face models, and a check of the exported graph against PyTorch with onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aird.io import atomic_path

INPUT_NAME = "image"
OUTPUT_NAME = "embedding"


def export_onnx(model: nn.Module, path: str | Path, input_size: int = 150, opset: int = 17) -> Path:
    """Write ``model`` (eval mode) as ONNX: input ``image`` (batch, 3, input_size, input_size) float pixels 0..255.

    The batch axis is dynamic; the spatial size is fixed at ``input_size`` (the graph is traced there).
    """
    path = Path(path)
    was_training = model.training
    model.eval()
    # Batch 2, not 1, so that no size-1 broadcast of the batch axis gets baked into the trace.
    dummy = torch.zeros(2, 3, input_size, input_size)
    try:
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            # The TorchScript exporter is deliberate (the torch.export one needs onnxscript, not a dependency):
            # silence its deprecation notices, and the tracer's notes on the spatial sizes, constant here.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    finally:
        model.train(was_training)
    return path


def run_onnx(path: str | Path, images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Embeddings of (N, 3, H, W) pixels 0..255 by the exported graph, on onnxruntime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = images.float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.float32)
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def onnx_max_abs_diff(model: nn.Module, path: str | Path, images: torch.Tensor) -> float:
    """Largest absolute difference between the ONNX graph (onnxruntime) and ``model`` in eval mode on ``images``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(images.float()).numpy()
    finally:
        model.train(was_training)
    return float(np.abs(run_onnx(path, images) - expected).max())
