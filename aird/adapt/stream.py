"""Faces as a camera sends them: an order, a batch size, a length, and a capture shift that may change over time.

A :class:`StreamEmbedder` is an ``Embedder`` for the evaluation code (``aird.eval.runner``): given the
faces of an evaluation in file order, it plays them through a test-time adapter as one stream, in
``spec.order`` and in batches of ``spec.batch_size``, and returns each face's embedding from its last
frame in the stream. Orders:

- ``file``: as given (the old evaluation order);
- ``shuffled``: a random permutation (seeded);
- ``grouped``: bursts of ``burst`` consecutive frames of one person, people in random order; a person
  with fewer than ``burst`` faces is cycled to fill the burst (a camera seeing one person for a while),
  one with more gives several bursts;
- ``drifting``: shuffled, with a capture shift (low light and sensor noise) that grows linearly from
  none at the first frame to full at the last;
- ``day-night``: shuffled; the first half of the stream is unshifted (day), the second half has the
  full shift (night): a jump in the input distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from aird.adapt.embedder import AdaptedEmbedder
from aird.adapt.facebn import FaceBN
from aird.data.degrade import INTERPOLATIONS, stable_seed, upsample
from aird.errors import ConfigError
from aird.models.embedder import faces_to_tensor

ORDERS = ("file", "shuffled", "grouped", "drifting", "day-night")
TIMED_SHIFTS = ("drifting", "day-night")
# The full "night" capture shift, at the LR face: gamma (low light) and Gaussian sensor noise (grey levels).
NIGHT = {"gamma": 2.5, "noise_std": 12.0}


@dataclass(frozen=True)
class StreamSpec:
    """How a stream presents the faces of an evaluation (echoed in records' ``settings.adaptation``)."""

    order: str = "shuffled"
    batch_size: int = 32
    burst: int = 10  # grouped: frames per burst of one person
    seed: int = 0
    res: int | None = None  # LR side where a timed shift is applied (drifting, day-night); None: at input size

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ConfigError(f"unknown stream order {self.order!r}; choose one of: {', '.join(ORDERS)}")
        if self.batch_size < 1:
            raise ConfigError(f"stream test batch size must be >= 1, got {self.batch_size}")
        if self.burst < 1:
            raise ConfigError(f"stream burst must be >= 1 frame, got {self.burst}")

    def frames(self, labels: Sequence[str]) -> np.ndarray:
        """Indices into the faces, one per frame, in stream order; every face appears at least once."""
        n = len(labels)
        rng = np.random.default_rng(stable_seed("stream", self.order, self.seed))
        if self.order == "file":
            return np.arange(n)
        if self.order != "grouped":
            return rng.permutation(n)
        by_person: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            by_person.setdefault(label, []).append(i)
        bursts = []
        for person in sorted(by_person):
            idx = rng.permutation(by_person[person])
            for start in range(0, len(idx), self.burst):
                chunk = idx[start : start + self.burst]
                bursts.append(np.resize(chunk, self.burst))  # cycled to a full burst
        return np.concatenate([bursts[i] for i in rng.permutation(len(bursts))]) if bursts else np.zeros(0, int)

    def shift_strength(self, position: int, length: int) -> float:
        """0 (no shift) .. 1 (full night shift) for the frame at ``position`` of ``length``."""
        if self.order == "drifting":
            return position / max(length - 1, 1)
        if self.order == "day-night":
            return float(position >= length // 2)
        return 0.0

    def settings(self) -> dict:
        out = {"order": self.order, "test_batch_size": self.batch_size, "stream_seed": self.seed}
        if self.order == "grouped":
            out["burst"] = self.burst
        if self.order in TIMED_SHIFTS:
            out["timed_shift"] = {"full": NIGHT, "at_res": self.res, "schedule": self.order}
        return out


def night_shift(face: np.ndarray, strength: float, res: int | None, key: object) -> np.ndarray:
    """``face`` (H, W, 3 uint8, an up-sampled LR face) with ``strength`` of the night shift applied at ``res`` px.

    The face is brought back to its LR side (area), darkened (gamma 1 -> 2.5) and given sensor noise
    (std 0 -> 12 grey levels) there, then up-sampled again (bicubic), as the capture pipeline would.
    """
    if strength <= 0:
        return face
    size = face.shape[0]
    lr = face if res is None else cv2.resize(face, (res, res), interpolation=INTERPOLATIONS["area"])
    gamma = 1.0 + strength * (NIGHT["gamma"] - 1.0)
    out = 255.0 * (lr / 255.0) ** gamma
    rng = np.random.default_rng(stable_seed("night", key))
    out = out + rng.normal(0.0, strength * NIGHT["noise_std"], out.shape)
    lr = np.clip(out, 0, 255).round().astype(np.uint8)
    return lr if res is None else upsample(lr, size)


class StreamEmbedder(AdaptedEmbedder):
    """Plays an evaluation's faces through an adapter as one camera stream (see the module docstring).

    ``labels`` names the person of each face, in the order the evaluation will pass the faces
    (file order); ``embed`` must then receive exactly those faces.
    """

    def __init__(
        self,
        module: nn.Module,
        name: str,
        adapt: str,
        labels: Sequence[str],
        spec: StreamSpec,
        input_size: int | None = None,
        **adapter_kwargs,
    ):
        super().__init__(module, name, adapt, input_size, spec.batch_size, **adapter_kwargs)
        self.labels = list(labels)
        self.spec = spec
        self.stream_length: int | None = None
        self.last: np.ndarray | None = None  # the embeddings of the last embed() call

    def settings(self) -> dict:
        return {
            **self.adapter.settings(),
            **self.spec.settings(),
            "stream_length": self.stream_length,
            "faces": len(self.labels),
            "embedding": "from each face's last frame in the stream",
            "reset": "fresh adapter for each evaluation",
        }

    def embed(self, faces: np.ndarray) -> np.ndarray:
        if len(faces) != len(self.labels):
            raise ValueError(f"stream embedder was built for {len(self.labels)} faces, got {len(faces)}")
        frames = self.spec.frames(self.labels)
        self.stream_length = len(frames)

        def batches():
            for start in range(0, len(frames), self.batch_size):
                idx = frames[start : start + self.batch_size]
                batch = faces[idx]
                if self.spec.order in TIMED_SHIFTS:
                    batch = np.stack(
                        [
                            night_shift(f, self.spec.shift_strength(start + j, len(frames)), self.spec.res, start + j)
                            for j, f in enumerate(batch)
                        ]
                    )
                yield idx, faces_to_tensor(batch, self.input_size)

        if isinstance(self.adapter, FaceBN) and self.adapter.mode == "adabn":
            # AdaBN is not causal: its first pass sees the whole stream (an oracle reference, not a stream method).
            self.adapter.fit((x for _, x in batches()), stream=self.stream)
        out: np.ndarray | None = None
        for idx, x in batches():
            with torch.no_grad():
                emb = self.adapter(x, stream=self.stream).detach().float().cpu().numpy()
            if out is None:
                out = np.zeros((len(faces), emb.shape[1]), np.float32)
            out[idx] = emb  # a later frame of the same face overwrites an earlier one
        self.last = out if out is not None else np.zeros((0, 0), np.float32)
        return self.last
