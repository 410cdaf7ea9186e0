"""Embedding speed, measured one way for every model: faces/s at a batch size and latency at batch 1.

Several models are timed side by side in one process: each repeat times every model in turn, so a
load that comes and goes on the machine falls on all of them alike, and each figure is the median of
its repeats. The faces are whatever the caller hands over (e.g. 16 px crops as a detector cuts them):
the embedder's own resampling to its input size is part of what is timed, as it is in deployment.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch

from aird.models.embedder import Embedder

SPEED_BATCH = 64
SPEED_REPEATS = 5
SPEED_WARMUP = 2  # batches before timing: the first calls allocate and pick kernels
LATENCY_FACES = 128


def _time_batches(embedder: Embedder, faces: np.ndarray, batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(faces), batch_size):
        embedder.embed(faces[i : i + batch_size])
    return time.perf_counter() - start


def measure_speed(
    embedders: Mapping[str, Embedder],
    faces: np.ndarray,
    batch_size: int = SPEED_BATCH,
    repeats: int = SPEED_REPEATS,
    warmup: int = SPEED_WARMUP,
    latency_faces: int = LATENCY_FACES,
    threads: int | None = None,
) -> dict[str, dict]:
    """For each named embedder: ``faces_per_s`` (median over ``repeats`` passes over ``faces`` in batches of
    ``batch_size``), ``p50_ms`` and ``p99_ms`` (one face per call, ``latency_faces`` calls), and the
    settings they were measured under.

    ``threads`` caps torch's and OpenCV's threads while measuring (restored after); an onnxruntime
    embedder takes its thread count when its session is made. ``faces`` are (N, H, W, 3) uint8.
    """
    if repeats < 1 or batch_size < 1 or latency_faces < 0 or warmup < 0:
        raise ValueError("repeats and batch_size must be >= 1, warmup and latency_faces >= 0")
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.dtype != np.uint8 or not len(faces):
        raise ValueError(f"expected (N, H, W, 3) uint8 faces, got {faces.dtype} {faces.shape}")
    import cv2

    saved = torch.get_num_threads(), cv2.getNumThreads()
    if threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    try:
        for embedder in embedders.values():
            for _ in range(warmup):
                embedder.embed(faces[:batch_size])
        runs: dict[str, list[float]] = {name: [] for name in embedders}
        for _ in range(repeats):
            for name, embedder in embedders.items():
                runs[name].append(len(faces) / _time_batches(embedder, faces, batch_size))
        out = {}
        for name, embedder in embedders.items():
            single = []
            for k in range(latency_faces):
                face = faces[k % len(faces)][None]
                t = time.perf_counter()
                embedder.embed(face)
                single.append(time.perf_counter() - t)
            figures = {"faces_per_s": float(np.median(runs[name]))}
            if single:
                figures.update(
                    p50_ms=float(np.percentile(single, 50) * 1e3), p99_ms=float(np.percentile(single, 99) * 1e3)
                )
            out[name] = {
                "metrics": figures,
                "settings": {
                    "faces_per_s_runs": [round(r, 2) for r in runs[name]],
                    "batch_size": batch_size,
                    "faces": len(faces),
                    "face_px": int(faces.shape[1]),
                    "repeats": repeats,
                    "warmup_batches": warmup,
                    "latency_faces": latency_faces,
                    "threads": torch.get_num_threads(),
                },
            }
        return out
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])
