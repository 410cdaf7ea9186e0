"""FaceBN-safe: batch-norm statistics adaptation that a camera stream cannot break.

A camera sends faces one at a time or in small batches, in bursts of one person, for days, and now and
then a broken frame. This adapter (registry name ``facebn-safe``) keeps, per stream, a memory of
*distinct* faces' batch-norm statistics and normalises every face with a mix of the training statistics
and the memory's, weighted by how many distinct faces the memory holds:

- a face is normalised with the statistics kept *before* its batch arrived, and only then joins the
  memory, so its embedding never depends on the other faces of its batch (batch size 1 is safe);
- a face whose embedding is close to a face already in memory (the same person, a near-duplicate
  frame) is merged into that slot instead of taking a new one, so a burst of one person counts once;
- ``alpha = alpha_max * K / (K + prior)`` for the K distinct faces in memory (0 below ``min_faces``);
- non-finite and constant (black, blank) frames, and faces whose statistics lie far outside the
  stream's recent distribution, are rejected: they are embedded, but never enter the memory;
- when most of the recent faces are such outliers the input distribution has jumped: the memory is
  cleared (alpha returns to 0) and the stream adapts to the new distribution from scratch.

Formulas, defaults and the prior work they come from: docs/facebn.md ("facebn-safe").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from aird.adapt.facebn import ADAPTERS, DEFAULT_STREAM, batchnorm_layers, frozen_copy
from aird.errors import ConfigError

NAME = "facebn-safe"
# Counters a stream keeps (ints in its state and in stream_info).
COUNTERS = ("seen", "accepted", "merged", "rejected_invalid", "rejected_outlier", "resets", "step")
MAD_TO_STD = 1.4826  # median absolute deviation of a normal distribution -> its standard deviation
MIN_SPREAD = 0.05  # floor on the robust spread of log shift scores (a 5% change is never an outlier by itself)


@dataclass
class _Stream:
    """What one stream keeps: the face memory, the recent shift scores and the counters.

    Layer statistics are stored concatenated over all batch-norm layers (``offsets`` slice them).
    """

    count: torch.Tensor  # (M,) int64: members merged into each slot; 0 = empty slot
    last: torch.Tensor  # (M,) int64: step at which each slot was last updated (for least-recently-used eviction)
    sig: torch.Tensor  # (M, D): unit mean embedding of each slot's members
    mean: torch.Tensor  # (M, C): per-channel mean of each slot's values
    var: torch.Tensor  # (M, C): per-channel (population) variance of each slot's values
    history: torch.Tensor  # (H,): log shift scores of the last accepted faces (ring)
    window: torch.Tensor  # (J,) bool: whether each of the last valid faces was an outlier (ring)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    n_history: int = 0
    n_window: int = 0
    mixed: torch.Tensor | None = None  # (2, C): the statistics the next batch is normalised with (derived)
    reference: torch.Tensor | None = None  # (2, C): memory mean and spread of faces' means, None below min_faces
    alpha: float = 0.0  # (derived)


class SafeFaceBN:
    """Stream-safe test-time adaptation of batch-norm statistics; ``adapter(x, stream=camera)`` embeds a batch.

    Only statistics change: the model is deep-copied and frozen at construction and no learned weight moves.
    Not thread-safe (the stream being embedded is state during a call): one adapter per worker.
    """

    def __init__(
        self,
        model: nn.Module,
        prior: float = 16.0,
        alpha_max: float = 0.6,
        min_faces: int = 8,
        memory: int = 64,
        same_face: float = 0.95,
        member_cap: int = 16,
        outlier_z: float = 6.0,
        history: int = 64,
        min_history: int = 16,
        jump_window: int = 16,
        jump_fraction: float = 0.5,
    ):
        checks = {
            "prior": prior > 0,
            "alpha_max": 0.0 <= alpha_max <= 1.0,
            "min_faces": min_faces >= 2,
            "memory": memory >= 2,
            "same_face": -1.0 <= same_face <= 1.0,
            "member_cap": member_cap >= 1,
            "outlier_z": outlier_z > 0,
            "history": history >= 2,
            "min_history": 2 <= min_history <= history,
            "jump_window": jump_window >= 1,
            "jump_fraction": 0.0 < jump_fraction <= 1.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"{NAME}: setting {bad[0]}={locals()[bad[0]]!r} is out of range (docs/facebn.md)")
        self.prior = float(prior)
        self.alpha_max = float(alpha_max)
        self.min_faces = int(min_faces)
        self.memory = int(memory)
        self.same_face = float(same_face)
        self.member_cap = int(member_cap)
        self.outlier_z = float(outlier_z)
        self.history = int(history)
        self.min_history = int(min_history)
        self.jump_window = int(jump_window)
        self.jump_fraction = float(jump_fraction)
        self.model = frozen_copy(model)
        self.layers = batchnorm_layers(self.model)
        for name, bn in self.layers.items():
            bn.forward = partial(self._normalise, name, bn)
        sizes = [bn.running_mean.numel() for bn in self.layers.values()]
        bounds = [0, *torch.tensor(sizes).cumsum(0).tolist()]
        self._slices = {name: slice(a, b) for name, a, b in zip(self.layers, bounds, bounds[1:])}
        ref = next(iter(self.layers.values())).running_mean
        self._source = torch.stack(
            [
                torch.cat([bn.running_mean.float() for bn in self.layers.values()]),
                torch.cat([bn.running_var.float() for bn in self.layers.values()]),
            ]
        ).to(ref.device)
        # Each layer weighs the same in a face's shift score, whatever its width.
        self._layer_weight = torch.cat([torch.full((s,), 1.0 / (s * len(sizes))) for s in sizes]).to(ref.device)
        self._eps = torch.cat([torch.full((s,), float(bn.eps)) for s, bn in zip(sizes, self.layers.values())]).to(
            ref.device
        )
        self._streams: dict[str, _Stream] = {}
        self._mix: torch.Tensor | None = None  # (2, C) during a call
        self._seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per-face (mean, var) of each layer's input

    # ------------------------------------------------------------------ the interface a service calls

    def __call__(self, x: torch.Tensor, stream: str = DEFAULT_STREAM) -> torch.Tensor:
        """Embeddings of the batch ``x`` (N faces), normalised with ``stream``'s statistics; then they update them.

        A face with a NaN or infinite value gets a non-finite embedding (there is no face to embed); a
        constant frame gets its (meaningless) embedding; neither changes the stream.
        """
        x = torch.as_tensor(x)
        with torch.inference_mode(False), torch.no_grad():
            state = self._stream(stream)
            self._mix, self._seen = state.mixed, {}
            try:
                out = self.model(x)
                seen = self._seen
            finally:
                self._mix, self._seen = None, {}
            if x.shape[0]:
                self._update(state, x, out, seen)
            return out

    def stream_info(self, stream: str = DEFAULT_STREAM) -> dict[str, Any]:
        """What a service shows for one camera: evidence (distinct faces in memory), alpha, rejections, resets."""
        state = self._streams.get(stream)
        counters = state.counters if state else dict.fromkeys(COUNTERS, 0)
        return {
            "stream": stream,
            "adapter": NAME,
            "evidence": int((state.count > 0).sum()) if state else 0,
            "alpha": round(state.alpha, 6) if state else 0.0,
            **{k: v for k, v in counters.items() if k != "step"},
        }

    def reset(self, stream: str | None = None) -> None:
        """Forget ``stream`` (all streams if None): it restarts from the training statistics (alpha 0)."""
        if stream is None:
            self._streams.clear()
        else:
            self._streams.pop(stream, None)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """``{stream: {name: tensor or int}}``: plain tensors and ints, loadable with ``torch.load(weights_only=True)``.

        Per layer ``<layer>.slot_mean`` and ``<layer>.slot_var`` (memory x channels); ``slot_count``,
        ``slot_last``, ``slot_sig``, ``history``, ``window`` and the counters (ints).
        """
        out: dict[str, dict[str, Any]] = {}
        for stream, st in self._streams.items():
            d: dict[str, Any] = {
                "slot_count": st.count.clone(),
                "slot_last": st.last.clone(),
                "slot_sig": st.sig.clone(),
                "history": st.history.clone(),
                "window": st.window.clone(),
                "n_history": st.n_history,
                "n_window": st.n_window,
                **st.counters,
            }
            for name, sl in self._slices.items():
                d[f"{name}.slot_mean"] = st.mean[:, sl].clone()
                d[f"{name}.slot_var"] = st.var[:, sl].clone()
            out[stream] = d
        return out

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace all streams by those of ``state`` (written by :meth:`state_dict` of an adapter on the same model)."""
        streams = {}
        for stream, d in state.items():
            expected = {f"{name}.slot_{kind}" for name in self.layers for kind in ("mean", "var")}
            expected |= {"slot_count", "slot_last", "slot_sig", "history", "window", "n_history", "n_window"}
            expected |= set(COUNTERS)
            if set(d) != expected:
                missing, unexpected = sorted(expected - set(d)), sorted(set(d) - expected)
                raise ValueError(
                    f"{NAME} stream {stream!r} does not match this model and settings "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
            count = torch.as_tensor(d["slot_count"])
            if count.shape != (self.memory,) or d["history"].shape != (self.history,):
                raise ValueError(
                    f"{NAME} stream {stream!r} was saved with memory={count.numel()}, history="
                    f"{d['history'].numel()}; this adapter has memory={self.memory}, history={self.history}"
                )
            if d["window"].shape != (self.jump_window,):
                raise ValueError(f"{NAME} stream {stream!r} was saved with jump_window={d['window'].numel()}")
            means, vars_ = [], []
            for name, bn in self.layers.items():
                m, v = d[f"{name}.slot_mean"], d[f"{name}.slot_var"]
                if m.shape != (self.memory, bn.running_mean.numel()) or v.shape != m.shape:
                    raise ValueError(
                        f"{NAME} stream {stream!r}: layer {name} has {bn.running_mean.numel()} channels, "
                        f"the state {tuple(m.shape)}"
                    )
                means.append(m)
                vars_.append(v)
            dev = self._source.device
            st = _Stream(
                count=count.to(dev, torch.int64).clone(),
                last=torch.as_tensor(d["slot_last"]).to(dev, torch.int64).clone(),
                sig=torch.as_tensor(d["slot_sig"]).to(dev, torch.float32).clone(),
                mean=torch.cat(means, dim=1).to(dev, torch.float32),
                var=torch.cat(vars_, dim=1).to(dev, torch.float32),
                history=d["history"].to(dev, torch.float32).clone(),
                window=d["window"].to(dev, torch.bool).clone(),
                counters={k: int(d[k]) for k in COUNTERS},
                n_history=int(d["n_history"]),
                n_window=int(d["n_window"]),
            )
            self._refresh(st)
            streams[str(stream)] = st
        self._streams = streams

    def settings(self) -> dict[str, Any]:
        """What a result record needs to say how embeddings were adapted."""
        names = (
            "prior",
            "alpha_max",
            "min_faces",
            "memory",
            "same_face",
            "member_cap",
            "outlier_z",
            "history",
            "min_history",
            "jump_window",
            "jump_fraction",
        )
        return {"adapter": NAME, "bn_layers": len(self.layers), **{k: getattr(self, k) for k in names}}

    # ------------------------------------------------------------------ internals

    def _stream(self, stream: str) -> _Stream:
        if stream not in self._streams:
            st = self._empty()
            self._refresh(st)
            self._streams[stream] = st
        return self._streams[stream]

    def _empty(self, dim: int | None = None) -> _Stream:
        dev = self._source.device
        channels = self._source.shape[1]
        return _Stream(
            count=torch.zeros(self.memory, dtype=torch.int64, device=dev),
            last=torch.zeros(self.memory, dtype=torch.int64, device=dev),
            sig=torch.zeros(self.memory, dim or 0, device=dev),
            mean=torch.zeros(self.memory, channels, device=dev),
            var=torch.zeros(self.memory, channels, device=dev),
            history=torch.zeros(self.history, device=dev),
            window=torch.zeros(self.jump_window, dtype=torch.bool, device=dev),
        )

    def _clear_memory(self, st: _Stream) -> None:
        fresh = self._empty(st.sig.shape[1])
        st.count, st.last, st.sig, st.mean, st.var = fresh.count, fresh.last, fresh.sig, fresh.mean, fresh.var
        st.history, st.window, st.n_history, st.n_window = fresh.history, fresh.window, 0, 0

    def _refresh(self, st: _Stream) -> None:
        """Recompute the statistics the next batch uses from the memory: equal weight per distinct face (slot)."""
        occupied = st.count > 0
        k = int(occupied.sum())
        st.alpha = self.alpha_max * k / (k + self.prior) if k >= self.min_faces else 0.0
        st.reference = None
        st.mixed = self._source.clone()
        if k < self.min_faces:
            return
        means = st.mean[occupied].double()
        target_mean = means.mean(0)
        # Law of total variance over slots; the between-slot (between-face) part unbiased over the k slots.
        between = ((means - target_mean) ** 2).sum(0) / (k - 1)
        target_var = st.var[occupied].double().mean(0) + between
        st.mixed = (1 - st.alpha) * self._source + st.alpha * torch.stack([target_mean, target_var]).float()
        # The yardstick of the outlier test: how far faces' channel means spread around the memory's mean.
        # Floored at a hundredth of the channel's variance, so a channel every face leaves at zero (a dead
        # unit) cannot make one face an outlier alone.
        st.reference = torch.stack([target_mean, between + 0.01 * target_var]).float() + torch.stack(
            [torch.zeros_like(self._eps), self._eps]
        )

    def _normalise(self, name: str, bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
        if self._mix is None:
            raise RuntimeError(f"{NAME} statistics belong to a stream: call the adapter, adapter(x, stream)")
        sl = self._slices[name]
        mean, var = self._mix[0, sl].to(bn.running_mean.dtype), self._mix[1, sl].to(bn.running_var.dtype)
        if x.shape[0]:
            xs = x.detach().float()
            if x.dim() == 2:
                self._seen[name] = (xs, torch.zeros_like(xs))
            else:
                # Moments about the statistics in use: well conditioned, and ~4x faster than var_mean.
                shift = self._mix[0, sl].view(1, -1, *([1] * (x.dim() - 2)))
                d = (xs - shift).flatten(2)
                m = d.mean(2)
                v = (d.square().mean(2) - m.square()).clamp_(min=0.0)
                self._seen[name] = (m + shift.flatten(1), v)
        return F.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)

    def _update(
        self, st: _Stream, x: torch.Tensor, out: torch.Tensor, seen: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        flat = x.detach().flatten(1).float()
        finite = torch.isfinite(flat).all(1) & torch.isfinite(out).all(1)
        scale = flat.abs().amax(1).clamp(min=1.0)
        constant = flat.std(1, correction=0) <= 1e-3 * scale
        valid = finite & ~constant  # a NaN row's std is NaN: not constant, but not finite either
        face_mean = torch.cat([seen[name][0] for name in self.layers], dim=1)
        face_var = torch.cat([seen[name][1] for name in self.layers], dim=1)
        # Shift score: how far a face's per-channel means lie from the memory's, in units of how far the
        # memory's faces spread (a diagonal Mahalanobis distance), averaged over channels, then layers.
        log_score = None
        if st.reference is not None:
            z2 = (face_mean - st.reference[0]) ** 2 / st.reference[1]
            log_score = torch.log(z2.nan_to_num(nan=0.0, posinf=1e30) @ self._layer_weight + 1e-12)
        sig = F.normalize(out.detach().float().flatten(1), dim=1)
        if st.sig.shape[1] != sig.shape[1]:
            st.sig = torch.zeros(self.memory, sig.shape[1], device=st.sig.device)
        changed = False
        c = st.counters
        for i in range(x.shape[0]):
            c["seen"] += 1
            if not bool(valid[i]):
                c["rejected_invalid"] += 1
                continue
            c["step"] += 1  # the clock of least-recently-used eviction: only frames that could teach count
            if log_score is None:
                outlier = False  # too few distinct faces to say what is far: alpha is 0 then anyway
            else:
                outlier = self._is_outlier(st, float(log_score[i]))
            st.window[st.n_window % self.jump_window] = outlier
            st.n_window += 1
            if outlier:
                c["rejected_outlier"] += 1
                if st.n_window >= self.jump_window and int(st.window.sum()) >= self.jump_fraction * self.jump_window:
                    self._clear_memory(st)
                    c["resets"] += 1
                    changed = True
                continue
            if log_score is not None:
                st.history[st.n_history % self.history] = log_score[i]
                st.n_history += 1
            c["accepted"] += 1
            self._remember(st, sig[i], face_mean[i], face_var[i])
            changed = True
        if changed:
            self._refresh(st)

    def _is_outlier(self, st: _Stream, log_score: float) -> bool:
        n = min(st.n_history, self.history)
        if n < self.min_history:
            return False  # too little history to say what is far
        h = st.history[:n]
        med = h.median()
        spread = max(MAD_TO_STD * float((h - med).abs().median()), MIN_SPREAD)
        return (log_score - float(med)) / spread > self.outlier_z

    def _remember(self, st: _Stream, sig: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Merge a face into the slot of its near-duplicate, or give it a slot (evicting the least recently used)."""
        occupied = st.count > 0
        step = st.counters["step"]
        if bool(occupied.any()):
            cos = (st.sig @ sig).masked_fill(~occupied, -2.0)
            best = int(cos.argmax())
            if float(cos[best]) >= self.same_face:
                w = 1.0 / min(int(st.count[best]) + 1, self.member_cap)
                d = mean - st.mean[best]
                st.var[best] = (1 - w) * st.var[best] + w * var + w * (1 - w) * d * d
                st.mean[best] = st.mean[best] + w * d
                st.sig[best] = F.normalize((1 - w) * st.sig[best] + w * sig, dim=0)
                st.count[best] += 1
                st.last[best] = step
                st.counters["merged"] += 1
                return
        free = (~occupied).nonzero()
        slot = int(free[0]) if len(free) else int(st.last.argmin())
        st.count[slot] = 1
        st.last[slot] = step
        st.sig[slot] = sig
        st.mean[slot] = mean
        st.var[slot] = var


ADAPTERS.register(NAME)(SafeFaceBN)
