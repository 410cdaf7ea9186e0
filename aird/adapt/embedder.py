"""An Embedder that runs a face model through a test-time adapter (FaceBN, TENT).

Adaptation is stateful: what a face's embedding is depends on the faces seen before it, so these
embeddings are never cached, every call embeds in the order given, in test batches of
``batch_size``, and the statistics are reset once per evaluation (a new AdaptedEmbedder).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from aird.adapt.facebn import DEFAULT_STREAM, FaceBN, embed_two_pass, make_adapter
from aird.errors import ConfigError
from aird.models.embedder import faces_to_tensor, module_fingerprint


class AdaptedEmbedder:
    def __init__(
        self,
        module: nn.Module,
        name: str,
        adapt: str,
        input_size: int | None = None,
        batch_size: int = 32,
        stream: str = DEFAULT_STREAM,
        **adapter_kwargs: Any,
    ):
        if batch_size < 1:
            raise ConfigError(f"test batch size must be >= 1, got {batch_size}")
        self.adapter = make_adapter(adapt, module, **adapter_kwargs)
        self.adapt = adapt
        self.name = name
        self.input_size = input_size
        self.batch_size = batch_size
        self.stream = stream
        # The weights the adapter starts from (it adapts a copy, so the module is the same after):
        # a record of an adapted run names the file it measured, even though nothing here is cached.
        self.weights_fingerprint = f"{name}-{module_fingerprint(module)}-in{input_size}"

    def fingerprint(self) -> None:
        return None

    def settings(self) -> dict:
        return {
            **self.adapter.settings(),
            "test_batch_size": self.batch_size,
            "order": "as given (file order)",
            "reset": "fresh statistics for each evaluation",
            "stream": self.stream,
        }

    def _batches(self, faces: np.ndarray) -> list[torch.Tensor]:
        return [
            faces_to_tensor(faces[i : i + self.batch_size], self.input_size)
            for i in range(0, len(faces), self.batch_size)
        ]

    def embed(self, faces: np.ndarray) -> np.ndarray:
        batches = self._batches(faces)
        if isinstance(self.adapter, FaceBN) and self.adapter.mode == "adabn":
            # AdaBN's first pass estimates statistics over the whole target set given here.
            out = embed_two_pass(self.adapter, batches, stream=self.stream)
        else:
            out = torch.cat([self.adapter(x, stream=self.stream) for x in batches]) if batches else torch.zeros(0)
        return out.detach().float().cpu().numpy()
