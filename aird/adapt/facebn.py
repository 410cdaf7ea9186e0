"""FaceBN: online test-time adaptation of batch-norm statistics to the faces a deployed model sees.

A face embedding network's batch norm still normalises with the statistics of its training faces;
deployment faces (other cameras, blur, JPEG, grayscale, low light) follow another distribution.
FaceBN re-estimates the statistics from the incoming unlabelled faces and adds no parameters.

The adapter owns a frozen copy of the model (the original, e.g. a teacher, is never touched, not
even transiently) whose batch-norm layers normalise with ``F.batch_norm(training=False)`` and the
statistics the mode selects. Formulas, batch-size-1 rules and stream semantics: docs/facebn.md.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any, Iterable, Mapping, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from aird.errors import ConfigError
from aird.registry import Registry

DEFAULT_STREAM = "default"
# mode -> the name result records use for it (the ``adapt`` field).
MODE_NAMES = {"off": "off", "batch": "facebn-batch", "ema": "facebn-ema", "adabn": "adabn", "alpha": "facebn-alpha"}
# Modes whose statistics outlive a batch, and so live per stream.
STATEFUL_MODES = ("ema", "adabn")

Stats = tuple[torch.Tensor, torch.Tensor]  # (mean, unbiased variance) per channel, like running_mean/running_var


class Adapter(Protocol):
    """What the evaluation needs of any test-time adapter."""

    def __call__(self, x: torch.Tensor, stream: str = DEFAULT_STREAM) -> torch.Tensor: ...

    def reset(self, stream: str | None = None) -> None: ...

    def state_dict(self) -> dict[str, dict[str, Any]]: ...

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None: ...

    def settings(self) -> dict[str, Any]: ...


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode with no parameter requiring grad: adapting it cannot reach the original."""
    clone = copy.deepcopy(module).eval()
    clone.requires_grad_(False)
    return clone


def batchnorm_layers(model: nn.Module) -> dict[str, _BatchNorm]:
    """Every batch-norm layer (1d, 2d, 3d, sync) by module name; each must have training statistics."""
    layers = {name: mod for name, mod in model.named_modules() if isinstance(mod, _BatchNorm)}
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no batch-norm layer to adapt")
    untracked = [name for name, bn in layers.items() if bn.running_mean is None or bn.running_var is None]
    if untracked:
        raise ConfigError(
            f"batch-norm layers {untracked[:3]} keep no running statistics (track_running_stats=False): "
            "there are no training statistics to adapt"
        )
    return layers


def values_per_channel(x: torch.Tensor) -> int:
    """How many values one channel's batch statistics are taken over (N for (N, C); N*L, N*H*W otherwise)."""
    return x.numel() // x.shape[1]


def batch_norm_own_stats(
    x: torch.Tensor, bn: _BatchNorm, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x`` normalised by its own statistics, as batch norm does in training, without touching ``bn``'s buffers.

    With one value per channel (a single (1, C) vector) the variance is undefined and normalising by the
    value's own mean would map every face to ``bias``; the layer then uses its training statistics.
    """
    if values_per_channel(x) < 2:
        return F.batch_norm(x, bn.running_mean, bn.running_var, weight, bias, False, 0.0, bn.eps)
    return F.batch_norm(x, None, None, weight, bias, True, 0.0, bn.eps)


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _batch_stats(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-channel mean and unbiased variance (None with a single value per channel), in ``dtype``."""
    xs = x.detach().to(torch.promote_types(x.dtype, torch.float32))
    if values_per_channel(x) < 2:
        return xs.mean(_reduce_dims(x)).to(dtype), None
    var, mean = torch.var_mean(xs, dim=_reduce_dims(x), correction=1)
    return mean.to(dtype), var.to(dtype)


class FaceBN:
    """Test-time batch-norm statistics adaptation; ``adapter(x, stream)`` embeds a batch.

    Modes: ``off`` (training statistics), ``batch`` (each batch's own), ``ema`` (training statistics
    updated with ``momentum`` by every batch before it is normalised, kept per stream), ``adabn``
    (exact statistics of a whole target set, from :meth:`fit`), ``alpha`` (a fixed mix
    ``(1 - alpha) * training + alpha * batch`` of means and of variances).

    Only statistics change: every learned parameter of the copy stays bit-identical, and the
    wrapped model is deep-copied at construction (rebuild the adapter after training it further).
    """

    def __init__(self, model: nn.Module, mode: str = "ema", momentum: float = 0.1, alpha: float = 0.1):
        if mode not in MODE_NAMES:
            raise ConfigError(f"unknown FaceBN mode {mode!r}; choose one of: {', '.join(MODE_NAMES)}")
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"FaceBN momentum must be in (0, 1], got {momentum}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"FaceBN alpha must be in [0, 1], got {alpha}")
        self.mode = mode
        self.momentum = float(momentum)
        self.alpha = float(alpha)
        self.model = frozen_copy(model)
        self.layers = batchnorm_layers(self.model)
        # The copy is ours alone, so its batch-norm layers can route to this adapter for good.
        for name, bn in self.layers.items():
            bn.forward = partial(self._normalise, name, bn)
        self._streams: dict[str, dict[str, Stats]] = {}
        self._stats: dict[str, Stats] | None = None  # the statistics of the stream being embedded
        self._pooled: dict[str, tuple[int, torch.Tensor, torch.Tensor]] | None = None  # adabn's first pass

    def __call__(self, x: torch.Tensor, stream: str = DEFAULT_STREAM) -> torch.Tensor:
        """Embeddings of the batch ``x``, normalised with ``stream``'s statistics (ema: after updating them)."""
        if self.mode == "adabn" and stream not in self._streams:
            raise ConfigError(
                f"adabn stream {stream!r} has no statistics yet: call fit() on its target set "
                "first (or use embed_two_pass)"
            )
        # Outside inference mode, so that stream statistics stay ordinary tensors whatever mode the caller
        # is in: inference tensors cannot join autograd or be updated in place outside inference mode.
        with torch.inference_mode(False), torch.no_grad():
            if self.mode in STATEFUL_MODES:
                self._stats = self._streams.setdefault(stream, self._training_stats())
            try:
                return self.model(x)
            finally:
                self._stats = None

    def fit(self, batches: Iterable[torch.Tensor], stream: str = DEFAULT_STREAM) -> None:
        """adabn's first pass: set ``stream``'s statistics to the exact mean and variance over all ``batches``.

        During the pass every layer normalises each batch with that batch's own statistics (as a BN
        network in training mode does), so a layer's pooled statistics are those of the inputs it
        sees when the layers before it are adapted to the target set.
        """
        if self.mode != "adabn":
            raise ConfigError(f"fit() estimates adabn statistics; this adapter's mode is {self.mode!r}")
        self._pooled = {}
        try:
            with torch.inference_mode(False), torch.no_grad():
                for batch in batches:
                    self.model(torch.as_tensor(batch))
            pooled = self._pooled
        finally:
            self._pooled = None
        if not pooled:
            raise ValueError("fit() got no target faces to estimate statistics on")
        stats = self._training_stats()
        for name, (n, mean, m2) in pooled.items():
            train_mean, train_var = stats[name]
            # One value per channel in the whole target set leaves its variance undefined.
            var = m2 / (n - 1) if n > 1 else train_var
            stats[name] = (mean.to(train_mean.dtype), var.to(train_var.dtype))
        self._streams[stream] = stats

    def mean_shift(self, stream: str = DEFAULT_STREAM) -> float:
        """How far ``stream``'s kept means have moved from training: per BN layer the channel mean of
        |kept mean - training mean| / training std, averaged over layers (0 where nothing is kept)."""
        shifts = []
        for name, (mean, _var) in self._streams.get(stream, {}).items():
            bn = self.layers[name]
            std = (bn.running_var.float() + bn.eps).sqrt()
            shifts.append(((mean.float() - bn.running_mean.float()).abs() / std).mean())
        return float(torch.stack(shifts).mean()) if shifts else 0.0

    def reset(self, stream: str | None = None) -> None:
        """Forget the adapted statistics of ``stream`` (all streams if None): ema restarts from training statistics."""
        if stream is None:
            self._streams.clear()
        else:
            self._streams.pop(stream, None)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{stream: {"<layer>.running_mean": t, "<layer>.running_var": t}}``; loads with ``torch.load(weights_only=True)``."""
        return {
            stream: {
                key: t.clone()
                for name, (mean, var) in stats.items()
                for key, t in ((f"{name}.running_mean", mean), (f"{name}.running_var", var))
            }
            for stream, stats in self._streams.items()
        }

    def load_state_dict(self, state: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Replace all streams by those of ``state`` (as :meth:`state_dict` writes it, for the same model)."""
        if state and self.mode not in STATEFUL_MODES:
            raise ConfigError(
                f"FaceBN mode {self.mode!r} keeps no statistics between batches; "
                f"load stream statistics into a {' or '.join(STATEFUL_MODES)} adapter"
            )
        expected = {f"{name}.running_{kind}" for name in self.layers for kind in ("mean", "var")}
        streams: dict[str, dict[str, Stats]] = {}
        for stream, tensors in state.items():
            if set(tensors) != expected:
                missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
                raise ValueError(
                    f"stream {stream!r} does not match this model's batch-norm layers "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
            stats = {}
            for name, bn in self.layers.items():
                mean, var = tensors[f"{name}.running_mean"], tensors[f"{name}.running_var"]
                if mean.shape != bn.running_mean.shape or var.shape != bn.running_var.shape:
                    raise ValueError(
                        f"stream {stream!r}: layer {name} has {bn.running_mean.numel()} channels, "
                        f"the state {mean.numel()}"
                    )
                stats[name] = (mean.to(bn.running_mean).clone(), var.to(bn.running_var).clone())
            streams[str(stream)] = stats
        self._streams = streams

    def settings(self) -> dict[str, Any]:
        """What a result record needs to say how embeddings were adapted."""
        out: dict[str, Any] = {"adapter": MODE_NAMES[self.mode], "mode": self.mode, "bn_layers": len(self.layers)}
        if self.mode == "ema":
            out["momentum"] = self.momentum
        if self.mode == "alpha":
            out["alpha"] = self.alpha
        return out

    def _training_stats(self) -> dict[str, Stats]:
        return {name: (bn.running_mean.clone(), bn.running_var.clone()) for name, bn in self.layers.items()}

    def _normalise(self, name: str, bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
        if self._pooled is not None:
            self._accumulate(name, x)
            return batch_norm_own_stats(x, bn, bn.weight, bn.bias)
        if self.mode == "batch":
            return batch_norm_own_stats(x, bn, bn.weight, bn.bias)
        if self.mode == "off" or values_per_channel(x) == 0:
            mean, var = bn.running_mean, bn.running_var
        elif self.mode == "alpha":
            batch_mean, batch_var = _batch_stats(x, bn.running_mean.dtype)
            a = self.alpha
            mean = (1 - a) * bn.running_mean + a * batch_mean
            var = bn.running_var if batch_var is None else (1 - a) * bn.running_var + a * batch_var
        elif self._stats is None:
            raise RuntimeError(
                f"the {self.mode} statistics belong to a stream: call the adapter, adapter(x, stream), "
                "not adapter.model"
            )
        elif self.mode == "ema":
            mean, var = self._stats[name]
            batch_mean, batch_var = _batch_stats(x, mean.dtype)
            m = self.momentum
            mean = (1 - m) * mean + m * batch_mean
            if batch_var is not None:
                var = (1 - m) * var + m * batch_var
            self._stats[name] = (mean, var)
        else:  # adabn, second pass
            mean, var = self._stats[name]
        return F.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)

    def _accumulate(self, name: str, x: torch.Tensor) -> None:
        """Merge the batch into the layer's pooled (count, mean, sum of squared deviations), exactly (Chan et al.)."""
        n = values_per_channel(x)
        if n == 0:
            return
        var, mean = torch.var_mean(x.detach().double(), dim=_reduce_dims(x), correction=0)
        m2 = var * n
        if name in self._pooled:
            n0, mean0, m20 = self._pooled[name]
            delta = mean - mean0
            total = n0 + n
            mean, m2, n = mean0 + delta * (n / total), m20 + m2 + delta**2 * (n0 * n / total), total
        self._pooled[name] = (n, mean, m2)


def embed_two_pass(adapter: FaceBN, batches: Iterable[torch.Tensor], stream: str = DEFAULT_STREAM) -> torch.Tensor:
    """adabn on a whole target set: estimate the statistics over ``batches``, then embed them, in order."""
    if iter(batches) is batches:
        raise TypeError("embed_two_pass reads the batches twice: pass a list or a DataLoader, not an iterator")
    adapter.fit(batches, stream)
    return torch.cat([adapter(torch.as_tensor(batch), stream) for batch in batches])


ADAPTERS: Registry[Adapter] = Registry("adapter")


def _register_facebn(mode: str) -> None:
    # No ``mode`` keyword on the factory: a record's adapter name must be the mode that ran.
    def make(model: nn.Module, momentum: float = 0.1, alpha: float = 0.1) -> FaceBN:
        return FaceBN(model, mode=mode, momentum=momentum, alpha=alpha)

    ADAPTERS.register(MODE_NAMES[mode])(make)


for _mode in MODE_NAMES:
    _register_facebn(_mode)


def make_adapter(name: str, model: nn.Module, **kwargs: Any) -> Adapter:
    """The adapter a result record names (``off``, ``facebn-ema``, ``tent``, ...) around ``model``."""
    return ADAPTERS.get(name, model=model, **kwargs)
