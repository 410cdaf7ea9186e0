"""The HR teacher: dlib's ResNet face descriptor (128-D), through dlib itself or the PyTorch port."""

from __future__ import annotations

import numpy as np

from aird.data.align import dlib_model_file
from aird.errors import ConfigError
from aird.models.embedder import TorchEmbedder

DLIB_RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_INPUT_SIZE = 150
BACKENDS = ("dlib", "torch")


class DlibTeacher:
    """``embed(chips) -> (N, 128) float32`` for aligned 150x150 chips (other sizes are resized).

    backend ``dlib`` calls dlib-bin (the reference, ~0.1 s a face on 2 cores); ``torch`` runs the
    port in ``aird.models.dlib_resnet`` (same output to cosine 0.9999, batched, much faster).
    """

    method = "teacher"

    def __init__(self, backend: str = "torch", batch_size: int = 64):
        if backend not in BACKENDS:
            raise ConfigError(f"unknown teacher backend {backend!r}; choose from {list(BACKENDS)}")
        self.backend = backend
        self.name = "dlib" if backend == "dlib" else "dlib_resnet"
        if backend == "dlib":
            import dlib

            self._net = dlib.face_recognition_model_v1(str(dlib_model_file(DLIB_RESNET_FILE)))
            self._torch = None
        else:
            from aird.models.registry import get_model

            self._torch = TorchEmbedder(
                get_model("dlib_resnet"), "dlib_resnet", DLIB_INPUT_SIZE, batch_size, method="teacher"
            )

    def fingerprint(self) -> str:
        # dlib's file is fixed by the pinned package; the port is fingerprinted by its weights.
        return "dlib-bin-v1" if self._torch is None else self._torch.fingerprint()

    def embed(self, faces: np.ndarray) -> np.ndarray:
        if self._torch is not None:
            return self._torch.embed(faces)
        import cv2

        out = np.empty((len(faces), 128), np.float32)
        for i, face in enumerate(faces):
            if face.shape[:2] != (DLIB_INPUT_SIZE, DLIB_INPUT_SIZE):
                face = cv2.resize(face, (DLIB_INPUT_SIZE, DLIB_INPUT_SIZE), interpolation=cv2.INTER_CUBIC)
            out[i] = np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(face)), np.float32)
        return out
