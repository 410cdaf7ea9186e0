"""Anything that turns aligned face images into embeddings, and a cache for the frozen ones."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from aird.data.align import CHIP_SIZE
from aird.data.chips import ChipSet
from aird.data.degrade import Degradation, to_network_input
from aird.io import atomic_path, read_npz_cache
from aird.paths import cache_dir


@runtime_checkable
class Embedder(Protocol):
    """``embed`` maps (N, H, W, 3) uint8 RGB faces to (N, D) float32 embeddings."""

    name: str

    def embed(self, faces: np.ndarray) -> np.ndarray: ...

    def fingerprint(self) -> str | None:
        """Identifies the exact weights; None for a model whose output may change (not cacheable)."""
        ...


def resize_faces(faces: np.ndarray, size: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 faces at ``size`` x ``size`` (None: as they are).

    Faces of another size are resampled by ``to_network_input``, the OpenCV bicubic the students
    were trained on (``Degradation``), so inference and training share one LR input path.
    """
    faces = np.asarray(faces)
    if size is None or faces.shape[1:3] == (size, size):
        return faces
    return (
        np.stack([to_network_input(f, size) for f in faces]) if len(faces) else np.zeros((0, size, size, 3), np.uint8)
    )


def faces_to_tensor(faces: np.ndarray, size: int | None = None) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) float in 0..255 (resampled by :func:`resize_faces`)."""
    return torch.from_numpy(np.ascontiguousarray(resize_faces(faces, size))).permute(0, 3, 1, 2).float()


def module_fingerprint(module: nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TorchEmbedder:
    """Batched, gradient-free inference of an ``nn.Module`` that reads 0..255 RGB tensors."""

    def __init__(
        self,
        module: nn.Module,
        name: str,
        input_size: int | None = None,
        batch_size: int = 64,
        frozen: bool = True,
        device: str | torch.device = "cpu",
        method: str = "unknown",
    ):
        self.module = module.to(device).eval()
        self.name = name
        self.method = method  # how the weights were obtained (a record's "method"): teacher, aird, kd, ...
        self.input_size = input_size
        self.batch_size = batch_size
        self.frozen = frozen
        self.device = torch.device(device)
        self._fingerprint: str | None = None

    def fingerprint(self) -> str | None:
        if not self.frozen:
            return None
        if self._fingerprint is None:
            self._fingerprint = f"{self.name}-{module_fingerprint(self.module)}-in{self.input_size}"
        return self._fingerprint

    @torch.inference_mode()
    def embed(self, faces: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(faces), self.batch_size):
            x = faces_to_tensor(faces[i : i + self.batch_size], self.input_size).to(self.device)
            out.append(self.module(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class EmbeddingCache:
    """Embeddings of one frozen model under one input transform, keyed by sample key.

    One ``.npz`` per (model fingerprint, transform key) holds every key seen so far; it is
    rewritten atomically on ``flush`` so an interrupted run loses nothing already saved.
    """

    def __init__(self, model_fingerprint: str, transform_key: str, root: str | Path | None = None):
        base = Path(root) if root else cache_dir("embeddings")
        self.path = base / model_fingerprint / f"{transform_key}.npz"
        self._store: dict[str, np.ndarray] = {}
        self._dirty = False
        z = read_npz_cache(self.path, ("keys", "vectors"))  # None when absent or damaged: rebuilt, never trusted
        if z is not None and len(z["keys"]) == len(z["vectors"]):
            self._store = dict(zip(z["keys"].tolist(), z["vectors"]))

    def missing(self, keys: Sequence[str]) -> list[int]:
        return [i for i, k in enumerate(keys) if k not in self._store]

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        for k, v in zip(keys, vectors):
            self._store[k] = np.asarray(v, dtype=np.float32)
        self._dirty = True

    def get(self, keys: Sequence[str]) -> np.ndarray:
        return np.stack([self._store[k] for k in keys])

    def flush(self) -> None:
        if not self._dirty:
            return
        keys = list(self._store)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=np.array(keys), vectors=np.stack([self._store[k] for k in keys]))
        self._dirty = False


def embed_cached(
    embedder: Embedder,
    keys: Sequence[str],
    make_faces: Callable[[list[int]], np.ndarray],
    transform_key: str,
    chunk: int = 256,
    progress: bool = True,
    desc: str = "embedding",
) -> np.ndarray:
    """Embed samples ``keys``; faces are made lazily (``make_faces(indices)``) only for what is not cached."""
    fp = embedder.fingerprint()
    size = getattr(embedder, "input_size", None)
    if size is not None and size < CHIP_SIZE:
        # Faces larger than such a network's input are shrunk by area averaging since 2026-11-30 (bicubic
        # before, which aliased): what it cached before then is not reused.
        transform_key += "-shrink-area"
    cache = EmbeddingCache(fp, transform_key) if fp else None
    if cache is None:
        chunk = max(1, len(keys))  # a stateful embedder (test-time adaptation) sees the whole set, in order
    todo = cache.missing(keys) if cache else list(range(len(keys)))
    vectors: dict[int, np.ndarray] = {}
    with tqdm(total=len(todo), desc=desc, unit="face", disable=not progress or not todo) as bar:
        for s in range(0, len(todo), chunk):
            idx = todo[s : s + chunk]
            emb = embedder.embed(make_faces(idx))
            if cache:
                cache.put([keys[i] for i in idx], emb)
                cache.flush()
            else:
                vectors.update(zip(idx, emb))
            bar.update(len(idx))
    if cache:
        return cache.get(keys)
    return np.stack([vectors[i] for i in range(len(keys))]) if keys else np.zeros((0, 0), np.float32)


def embed_chips(
    embedder: Embedder,
    chips: ChipSet,
    degradation: Degradation | None = None,
    progress: bool = True,
    desc: str = "embedding",
    flip: bool = False,
) -> np.ndarray:
    """Embeddings of HR chips (``degradation=None``) or of their LR versions, optionally mirrored
    left-right; frozen models are cached per (weights, alignment, transform)."""
    transform = f"align-{chips.settings.key()}-" + ("hr" if degradation is None else f"lr-{degradation.key()}")
    transform += "-flip" if flip else ""

    def make_faces(idx: list[int]) -> np.ndarray:
        batch = chips.chips[idx]
        if flip:
            batch = np.ascontiguousarray(batch[:, :, ::-1])
        return batch if degradation is None else degradation.batch(batch, [chips.digests[i] for i in idx])

    return embed_cached(embedder, chips.digests, make_faces, transform, progress=progress, desc=desc)


class FlipFused:
    """Sum of the unit embeddings of a face and its mirror image (test-time flip fusion)."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.name = f"{embedder.name}+flip"
        self.input_size = getattr(embedder, "input_size", None)

    def fingerprint(self) -> str | None:
        fp = self.embedder.fingerprint()
        return None if fp is None else f"{fp}-flipfuse"

    def embed(self, faces: np.ndarray) -> np.ndarray:
        def unit(e: np.ndarray) -> np.ndarray:
            return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

        mirrored = np.ascontiguousarray(faces[:, :, ::-1])
        return unit(self.embedder.embed(faces)) + unit(self.embedder.embed(mirrored))
