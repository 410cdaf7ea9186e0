"""TENT (Wang et al., ICLR 2021): test-time entropy minimisation over batch-norm affine parameters.

Unlike FaceBN, TENT changes learned parameters on purpose: the weight and bias of every affine
batch-norm layer of its own copy of the student, one optimiser step per incoming batch (``steps``
of them), to make a classifier head's predictions on the unlabelled test faces confident. Batch
norm normalises with each batch's own statistics. The model and head passed in are deep-copied
and never change; every stream has its own affine parameters and optimiser state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from aird.adapt.facebn import ADAPTERS, DEFAULT_STREAM, batch_norm_own_stats, batchnorm_layers, frozen_copy
from aird.errors import ConfigError

OPTIMIZERS = ("adam", "sgd")
SGD_MOMENTUM = 0.9  # TENT's ImageNet setting


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits), one value per row."""
    logp = logits.log_softmax(dim=1)
    return -(logp.exp() * logp).sum(dim=1)


@dataclass
class _Stream:
    params: dict[str, nn.Parameter]  # "<layer>.weight" / "<layer>.bias" of the affine batch-norm layers
    optimizer: torch.optim.Optimizer


class Tent:
    """Entropy-minimising adapter; ``adapter(x, stream)`` adapts on the batch ``x`` and returns its embeddings.

    ``head`` maps embeddings to class scores (e.g. a ``CosineClassifier``); the entropy is taken of
    ``softmax(logit_scale * head(embeddings))``, so a cosine head needs its training scale here.
    The returned embeddings are those of the last forward pass, the one whose entropy drove the last
    step (as in the paper: a batch is embedded with the parameters adapted on the batches before it,
    plus ``steps - 1`` steps on itself).
    """

    def __init__(
        self,
        model: nn.Module,
        head: nn.Module,
        lr: float = 1e-3,
        steps: int = 1,
        optimizer: str = "adam",
        logit_scale: float = 1.0,
    ):
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown TENT optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if lr <= 0 or steps < 1:
            raise ConfigError(f"TENT needs lr > 0 and steps >= 1, got lr={lr}, steps={steps}")
        self.lr = float(lr)
        self.steps = int(steps)
        self.optimizer = optimizer
        self.logit_scale = float(logit_scale)
        self.model = frozen_copy(model)
        # Frozen too: backpropagating through the caller's head would write its .grad.
        self.head = frozen_copy(head)
        self.layers = batchnorm_layers(self.model)
        if not any(bn.affine for bn in self.layers.values()):
            raise ConfigError("TENT adapts batch-norm affine parameters; the model's batch norms have none")
        for name, bn in self.layers.items():
            bn.forward = partial(self._normalise, name, bn)
        self._streams: dict[str, _Stream] = {}
        self._params: dict[str, nn.Parameter] | None = None  # the stream being adapted

    def __call__(self, x: torch.Tensor, stream: str = DEFAULT_STREAM) -> torch.Tensor:
        """Adapt ``stream``'s affine parameters on ``x`` and return its embeddings (detached)."""
        # The update needs autograd even when the caller embeds under inference_mode / no_grad, and
        # parameters made under inference mode could not take part in it.
        with torch.inference_mode(False), torch.enable_grad():
            if stream not in self._streams:
                self._streams[stream] = self._new_stream(self._initial_params())
            state = self._streams[stream]
            if x.is_inference():
                x = x.clone()
            self._params = state.params
            try:
                for _ in range(self.steps):
                    features = self.model(x)
                    loss = prediction_entropy(self.logit_scale * self.head(features)).mean()
                    state.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    state.optimizer.step()
            finally:
                self._params = None
        return features.detach()

    def reset(self, stream: str | None = None) -> None:
        """Forget ``stream``'s adaptation (all streams if None): it restarts from the student's parameters."""
        if stream is None:
            self._streams.clear()
        else:
            self._streams.pop(stream, None)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """``{stream: {"params": {"<layer>.weight": t, ...}, "optimizer": optimizer state}}`` (weights_only-loadable)."""
        return {
            stream: {
                "params": {key: p.detach().clone() for key, p in state.params.items()},
                "optimizer": copy.deepcopy(state.optimizer.state_dict()),
            }
            for stream, state in self._streams.items()
        }

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace all streams by those of ``state`` (as :meth:`state_dict` writes it, for the same model)."""
        reference = self._initial_params()
        streams: dict[str, _Stream] = {}
        for stream, saved in state.items():
            tensors = saved["params"]
            if set(tensors) != set(reference):
                raise ValueError(f"stream {stream!r} does not match this model's affine batch-norm parameters")
            params = {}
            for key, ref in reference.items():
                if tensors[key].shape != ref.shape:
                    raise ValueError(
                        f"stream {stream!r}: {key} has shape {tuple(tensors[key].shape)}, the model {tuple(ref.shape)}"
                    )
                params[key] = nn.Parameter(tensors[key].to(ref).clone())
            new = self._new_stream(params)
            new.optimizer.load_state_dict(saved["optimizer"])
            streams[str(stream)] = new
        self._streams = streams

    def settings(self) -> dict[str, Any]:
        """What a result record needs to say how embeddings were adapted."""
        return {
            "adapter": "tent",
            "optimizer": self.optimizer,
            "lr": self.lr,
            "steps": self.steps,
            "logit_scale": self.logit_scale,
            "bn_layers": len(self.layers),
        }

    def _initial_params(self) -> dict[str, nn.Parameter]:
        params = {}
        for name, bn in self.layers.items():
            if bn.affine:
                params[f"{name}.weight"] = nn.Parameter(bn.weight.detach().clone())
                params[f"{name}.bias"] = nn.Parameter(bn.bias.detach().clone())
        return params

    def _new_stream(self, params: dict[str, nn.Parameter]) -> _Stream:
        if self.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(params.values(), lr=self.lr)
        else:
            opt = torch.optim.SGD(params.values(), lr=self.lr, momentum=SGD_MOMENTUM)
        return _Stream(params, opt)

    def _normalise(self, name: str, bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
        if not bn.affine:
            return batch_norm_own_stats(x, bn, None, None)
        return batch_norm_own_stats(x, bn, self._params[f"{name}.weight"], self._params[f"{name}.bias"])


ADAPTERS.register("tent")(Tent)
