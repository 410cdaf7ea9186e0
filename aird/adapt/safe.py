"""FaceBN-safe: batch-norm statistics adaptation that a camera stream cannot break.

A camera sends faces one at a time or in small batches, in bursts of one person, for days, and now and
then a broken frame. This adapter (registry name ``facebn-safe``) keeps, per stream, a memory of
*distinct* faces' batch-norm statistics and normalises every face with a mix of the training statistics
and the memory's, weighted by how many distinct faces the memory holds:

- a face is normalised with the statistics kept *before* its batch arrived, so its embedding never
  depends on the other faces of its batch (batch size 1 is as safe as any);
- it joins the memory only ``delay`` frames later, so a burst of one person never normalises itself;
- a face whose embedding is close to a face already in memory (the same person, a near-duplicate
  frame) is merged into that slot instead of taking a new one, so a burst of one person counts once;
- ``alpha = alpha_max * K / (K + prior)`` for the K distinct faces in memory (0 below ``min_faces``), in
  the layers from ``skip`` to ``depth`` of the way through the network, each scaled by its divergence gate:
  the share of the memory's departure from the training means that sampling noise does not explain (a
  stream that differs from training only by noise keeps its training statistics); the variances move by
  ``var_mix`` only in the layers past ``var_skip``, and by default only in the taper candidate (below);
- non-finite and constant (black, blank) frames, and faces whose statistics lie far outside the
  memory's, are rejected: they are embedded, but never enter the memory;
- when most of the recent faces are such outliers the input distribution has jumped: the memory is
  cleared (alpha returns to 0) and the stream adapts to the new distribution from scratch, or, with
  ``reseed``, from the distinct outliers that showed the jump (their statistics are kept in the jump window);
- with ``change_z`` > 0, a change too even for that (every face a little darker, none an outlier) is
  found by comparing the stem's input means of the memory's newest ``change_window`` faces with its
  older ones: past ``change_z`` times their sampling noise the older faces leave the memory;
- which layers adapt is chosen per stream (``select``): every ``select_every``-th distinct face (every one
  of the first ``select_dense``, an option measured and left off) is also embedded with each candidate's
  statistics (no adaptation, or the layers from each candidate start to ``depth``), and the stream uses the
  candidate whose mean embedding over the last ``select_window`` such faces points closest to the teacher's
  anchor (the mean direction of the teacher's HR embeddings of training faces, which a distilled student's
  embeddings aim at; a student trained towards another space carries its own on its model card,
  ``card_anchor``). A stream whose adaptation would move its faces away from that space keeps its training
  statistics. Until ``select_min`` faces are probed there is no choice: the stream adapts with no layer, or,
  with ``hedge``, with the mean of the start candidates' statistics, and its first choice is then the best
  candidate (``select_z`` holds only a candidate in use). A stream whose unadapted faces already point within
  ``min_angle`` degrees of the anchor (the sampling noise of their mean taken out) keeps its training
  statistics: its shift, if any, does not move its faces out of the space the student aims at, and adapting
  there cost points (low light, blur). ``select_by="divergence"`` chooses instead the
  candidate under which the layers past ``depth`` see inputs most like training (measured, not the
  default). The ``taper`` is one more candidate: a graded
  profile in which each layer moves by the share of the taper's starts that reach it (the shallowest least),
  and the only candidate whose variances move (``var_in="taper"``, past ``var_skip``): the starts, which the
  choice picks on a capture shift, move means only. With ``select=()`` the taper is the one candidate
  (``taper=()`` as well: the layers from ``skip`` to ``depth``).

Formulas, defaults and the prior work they come from: docs/facebn.md ("facebn-safe").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from aird.adapt.facebn import ADAPTERS, DEFAULT_STREAM, batchnorm_layers, frozen_copy
from aird.errors import ConfigError, ModelFileError
from aird.io import read_npz_asset, write_npz_asset

NAME = "facebn-safe"
# The teacher's anchor: the mean direction of dlib's HR embeddings of training faces
# (benchmarks/make_teacher_anchor.py).
TEACHER_ANCHOR = Path(__file__).resolve().parents[1] / "models" / "assets" / "dlib_teacher_anchor.npz"
# Counters a stream keeps (ints in its state; all but the clock "step" in stream_info).
COUNTERS = ("seen", "accepted", "merged", "rejected_invalid", "rejected_outlier", "resets", "step")
SETTINGS = (
    "prior",
    "alpha_max",
    "skip",
    "depth",
    "gate",
    "var_mix",
    "var_skip",
    "var_in",
    "min_faces",
    "memory",
    "delay",
    "same_face",
    "member_cap",
    "outlier_z",
    "history",
    "min_history",
    "jump_window",
    "jump_fraction",
    "reseed",
    "change_z",
    "change_window",
    "select",
    "select_every",
    "select_dense",
    "select_window",
    "select_min",
    "select_z",
    "min_angle",
    "angle_z",
    "hedge",
)
TAPER = "taper"  # the name of the tapered candidate among SafeFaceBN.options
HEDGE = "hedge"  # stream_info's layers_from while a stream adapts with the mean of the starts (``hedge``)
MAD_TO_STD = 1.4826  # median absolute deviation of a normal distribution -> its standard deviation
MIN_SPREAD = 0.05  # floor on the robust spread of log shift scores (a 5% change is never an outlier by itself)
# Per-channel tensors of a stream's state, saved per layer as "<layer>.<name>".
CHANNEL_STATE = ("slot_mean", "slot_var", "pending_mean", "pending_var", "window_mean", "window_var")


@dataclass
class _Stream:
    """What one stream keeps. Layer statistics are concatenated over all batch-norm layers (C channels)."""

    slot_count: torch.Tensor  # (M,) int64: faces merged into each slot; 0 = empty slot
    slot_last: torch.Tensor  # (M,) int64: clock of each slot's last update (least-recently-used eviction)
    slot_sig: torch.Tensor  # (M, D): unit mean embedding of each slot's faces
    slot_mean: torch.Tensor  # (M, C): per-channel mean of each slot's values
    slot_var: torch.Tensor  # (M, C): per-channel (population) variance of each slot's values
    pending_sig: torch.Tensor  # (P, D), P <= delay: accepted faces waiting to join the memory, oldest first
    pending_mean: torch.Tensor  # (P, C)
    pending_var: torch.Tensor  # (P, C)
    history: torch.Tensor  # (H,): log shift scores of the last accepted faces (ring)
    window: torch.Tensor  # (J,) bool: whether each of the last valid, distinct faces was an outlier (ring)
    window_sig: torch.Tensor  # (J, D): the unit embedding of each outlier in the window (zeros elsewhere)
    window_mean: torch.Tensor  # (J, C): each outlier's channel means (zeros elsewhere): with ``reseed``, the
    window_var: torch.Tensor  # (J, C): new memory's first faces when the outliers make a jump
    probe_emb: torch.Tensor  # (W, K, D): unit embeddings of the last probed faces under each of the K candidates
    # (W, K, 2, T): per-face mean and variance of each channel entering the T tail channels (the BN layers past
    # ``depth``, which no candidate adapts), under each candidate: select_by="divergence"'s evidence
    probe_tail: torch.Tensor
    probe_sig: torch.Tensor  # (W, D): their unit embeddings as served (a probed face is never probed twice)
    n_history: int = 0
    n_window: int = 0
    n_probed: int = 0  # distinct faces probed so far (ring position in probe_*)
    n_distinct: int = 0  # distinct faces seen since the memory started (every select_every-th is probed)
    choice: int = 0  # index of the candidate in use (SafeFaceBN.options)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    # Derived from the memory by _refresh (not saved):
    mixed: torch.Tensor | None = None  # (2, C): the mean and variance the next batch is normalised with
    reference: torch.Tensor | None = None  # (2, C): memory mean and spread of faces' means; None below min_faces
    alpha: float = 0.0
    gates: torch.Tensor | None = None  # (L,): each layer's divergence gate in [0, 1] (1 without a gate)
    mixes: torch.Tensor | None = None  # (K, 2, C): the statistics each candidate would normalise with
    change_score: float = 0.0  # the last change score (change_z > 0): about 1 while the stream stays as it was

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ("slot_count", "slot_last", "slot_sig", "slot_mean", "slot_var", "pending_sig")
        names += ("pending_mean", "pending_var", "history", "window", "window_sig", "probe_emb", "probe_sig")
        names += ("probe_tail", "window_mean", "window_var")
        return {n: getattr(self, n) for n in names}


class SafeFaceBN:
    """Stream-safe test-time adaptation of batch-norm statistics; ``adapter(x, stream=camera)`` embeds a batch.

    Only statistics change: the model is deep-copied and frozen at construction and no learned weight moves.
    Not thread-safe (the stream being embedded is state during a call): one adapter per worker.
    """

    mode = "safe"  # as FaceBN's ``mode``: what kind of statistics it keeps (per stream, always)

    def __init__(
        self,
        model: nn.Module,
        prior: float = 16.0,
        alpha_max: float = 0.3,
        skip: float = 0.0,
        depth: float = 0.75,
        gate: float = 1.0,
        var_mix: float = 1.0,
        var_skip: float = 0.25,
        var_in: str = "taper",
        min_faces: int = 8,
        memory: int = 64,
        delay: int = 16,
        same_face: float = 0.98,
        member_cap: int = 16,
        outlier_z: float = 6.0,
        history: int = 64,
        min_history: int = 16,
        jump_window: int = 16,
        jump_fraction: float = 0.5,
        reseed: bool = True,
        change_z: float = 0.0,
        change_window: int = 16,
        select: Sequence[float] = (0.0, 0.25, 0.5),
        select_every: int = 4,
        select_dense: int = 0,
        select_window: int = 32,
        select_min: int = 8,
        select_z: float = 2.0,
        min_angle: float = 5.0,
        angle_z: float = 0.0,
        hedge: bool = True,
        taper: Sequence[float] = (0.0, 0.25, 0.5),
        anchor: torch.Tensor | np.ndarray | None = None,
        anchor_source: str | None = None,
        select_by: str = "anchor",
    ):
        select = tuple(float(v) for v in select)
        taper = tuple(float(v) for v in taper)
        checks = {
            "prior": prior > 0,
            "alpha_max": 0.0 <= alpha_max <= 1.0,
            "skip": 0.0 <= skip < 1.0,
            "depth": skip < depth <= 1.0,
            "gate": gate >= 0.0,
            "var_mix": 0.0 <= var_mix <= 1.0,
            "var_skip": 0.0 <= var_skip < depth,
            # "taper": only the taper candidate moves variances (the starts, means only), so with variances to
            # move there must be one
            "var_in": var_in == "all" or (var_in == "taper" and (bool(taper) or var_mix == 0)),
            "min_faces": min_faces >= 2,
            "memory": memory >= min_faces,
            "delay": delay >= 0,
            "same_face": -1.0 <= same_face <= 1.0,
            "member_cap": member_cap >= 1,
            "outlier_z": outlier_z > 0,
            "history": history >= 2,
            "min_history": 2 <= min_history <= history,
            "jump_window": jump_window >= 1,
            "jump_fraction": 0.0 < jump_fraction <= 1.0,
            "change_z": change_z >= 0.0,
            "change_window": change_window >= 2 and (change_z == 0 or change_window <= memory // 2),
            "select": all(0.0 <= v < depth for v in select) and len(set(select)) == len(select),
            "select_every": select_every >= 1,
            "select_dense": select_dense >= 0,
            "select_window": select_window >= 1,
            "select_min": 1 <= select_min <= select_window,
            "select_z": select_z >= 0.0,
            "min_angle": 0.0 <= min_angle < 90.0,
            "angle_z": angle_z >= 0.0,
            "taper": all(0.0 <= v < depth for v in taper) and len(set(taper)) == len(taper),
            # the divergence is measured on the layers past ``depth``: there must be some
            "select_by": select_by == "anchor" or (select_by == "divergence" and depth < 1.0),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            hint = " (its starts must lie below depth: pass taper=() or lower starts)" if bad[0] == "taper" else ""
            raise ConfigError(f"{NAME}: setting {bad[0]}={locals()[bad[0]]!r} is out of range{hint} (docs/facebn.md)")
        self.prior, self.alpha_max, self.same_face = float(prior), float(alpha_max), float(same_face)
        self.skip, self.depth, self.gate, self.var_mix = float(skip), float(depth), float(gate), float(var_mix)
        self.var_skip, self.var_in = float(var_skip), var_in
        self.outlier_z, self.jump_fraction, self.reseed = float(outlier_z), float(jump_fraction), bool(reseed)
        self.min_faces, self.memory, self.delay, self.member_cap = (
            int(min_faces),
            int(memory),
            int(delay),
            int(member_cap),
        )
        self.history, self.min_history, self.jump_window = int(history), int(min_history), int(jump_window)
        self.change_z, self.change_window = float(change_z), int(change_window)
        self.select, self.select_every, self.select_dense = select, int(select_every), int(select_dense)
        self.select_window, self.select_min, self.select_z = int(select_window), int(select_min), float(select_z)
        self.min_angle, self.angle_z = float(min_angle), float(angle_z)
        self.hedge = bool(hedge)
        self.taper = taper
        # The candidates: their first adapted layer (as a fraction of the depth; None: no layer adapts), and
        # TAPER for the tapered profile, which with ``select`` is one more candidate of the choice. Without
        # ``select`` the one candidate starts at ``skip``, or is the taper.
        self.options: list[float | str | None] = (
            [None, *select, *([TAPER] if taper else [])] if select else [TAPER if taper else self.skip]
        )
        # With ``hedge``, the candidates whose mean a stream uses until its choice is made: the starts.
        self._starts = [k for k, o in enumerate(self.options) if isinstance(o, float)] if select and hedge else []
        # The direction the choice aims at; read only when there is a choice to make.
        self.select_by = select_by
        by_anchor = bool(select) and select_by == "anchor"
        self._anchor_source = None if not by_anchor else "teacher" if anchor is None else anchor_source or "custom"
        self.anchor: torch.Tensor | None = None
        if by_anchor:
            vector = load_anchor()[0] if anchor is None else torch.as_tensor(anchor)
            self.anchor = F.normalize(vector.float().flatten(), dim=0)
        self.model = frozen_copy(model)
        self.layers = batchnorm_layers(self.model)
        for name, bn in self.layers.items():
            bn.forward = partial(self._normalise, name, bn)
        sizes = [bn.running_mean.numel() for bn in self.layers.values()]
        bounds = [0, *torch.tensor(sizes).cumsum(0).tolist()]
        self._slices = {name: slice(a, b) for name, a, b in zip(self.layers, bounds, bounds[1:])}
        device = next(iter(self.layers.values())).running_mean.device
        self._source = torch.stack(
            [
                torch.cat([bn.running_mean.float() for bn in self.layers.values()]),
                torch.cat([bn.running_var.float() for bn in self.layers.values()]),
            ]
        )
        # Each candidate adapts the layers from its start to ``depth`` of the way through (in the order the model
        # registers them: the forward order of a plain network); the deepest keep their training statistics
        # (docs/facebn.md, "depth": on the shipped student the deepest layers' adaptation cost points under a
        # drifting shift), and which shallow layers join is the stream's choice (``select``).
        # With a ``taper`` the one candidate weighs each layer by the share of the taper's starts that reach it
        # (three starts: a third, two thirds, all of the mix): the shallowest layers, whose adaptation undoes a
        # capture shift but cost points under ORL's night, move least (docs/facebn.md, "A tapered profile").
        layer_weights = []
        for start in self.options:
            starts = taper if start == TAPER else [] if start is None else [start]
            ranges = [layer_range(s, self.depth, len(sizes)) for s in starts]
            layer_weights.append([sum(i in r for r in ranges) / max(len(ranges), 1) for i in range(len(sizes))])
        self._layer_masks = torch.tensor(layer_weights, device=device) > 0  # (K, L): the layers a candidate adapts
        self._masks = torch.stack(
            [torch.cat([torch.full((s,), w) for s, w in zip(sizes, row)]) for row in layer_weights]
        ).to(device)  # (K, C): how much of the mix each channel takes
        self._layer_of = torch.cat([torch.full((s,), i, dtype=torch.int64) for i, s in enumerate(sizes)]).to(device)
        self._layer_size = torch.tensor(sizes, dtype=torch.float64, device=device)
        # The tail: the BN layers past ``depth``, adapted by no candidate, whose inputs tell how much of a stream's
        # shift a candidate undid (select_by="divergence").
        first_tail = min(int(self.depth * len(sizes) + 0.5), len(sizes))
        self._tail_names = list(self.layers)[first_tail:]
        tail_channels = [torch.arange(self._slices[n].start, self._slices[n].stop) for n in self._tail_names]
        self._tail = torch.cat(tail_channels).to(device) if tail_channels else torch.zeros(0, dtype=torch.int64)
        if select_by == "divergence" and select and not self._tail_names:
            raise ConfigError(f"{NAME}: select_by='divergence' needs BN layers past depth={depth}; lower depth")
        self._tail_width = len(self._tail) if select_by == "divergence" else 0
        # How far each moment moves, as a share of alpha * gate: the means fully, the variances by var_mix, and
        # only past ``var_skip``: JPEG and blur take variance out of the shallowest layers' inputs, and scaling it
        # back up there cost the mixed capture shift its gain (docs/facebn.md, "Variances past the first quarter").
        # With ``var_in="taper"`` only the taper candidate moves them: the starts, chosen for a capture shift,
        # move means only (docs/facebn.md, "The taper as one more candidate").
        first_var = layer_range(self.var_skip, 1.0, len(sizes)).start  # the rounding every layer range uses
        var_weight = self.var_mix * (self._layer_of >= first_var).float()
        self._moment_weight = torch.stack(
            [
                torch.stack([torch.ones_like(var_weight), var_weight * (var_in == "all" or option == TAPER)])
                for option in self.options
            ]
        )  # (K, 2, C)
        # Each layer weighs the same in a face's shift score, whatever its width.
        self._layer_weight = torch.cat([torch.full((s,), 1.0 / (s * len(sizes))) for s in sizes]).to(device)
        self._eps = torch.cat([torch.full((s,), float(bn.eps)) for s, bn in zip(sizes, self.layers.values())]).to(
            device
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
        # Outside inference mode, so the stream's tensors stay ordinary ones whatever mode the caller is in.
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
        """What a service shows for one camera: evidence (distinct faces in memory), alpha, gate, rejections, resets.

        ``seen`` frames = ``accepted`` + ``rejected_invalid`` (NaN, inf, blank) + ``rejected_outlier``;
        ``merged``: accepted faces that joined the slot of a near-duplicate; ``pending``: accepted faces
        still waiting ``delay`` frames to join the memory.
        """
        st = self._streams.get(stream)
        counters = st.counters if st else dict.fromkeys(COUNTERS, 0)
        return {
            "stream": stream,
            "adapter": NAME,
            "evidence": int((st.slot_count > 0).sum()) if st else 0,
            "alpha": round(st.alpha, 6) if st else 0.0,
            # The mean divergence gate over the adapted layers (1.0 without a gate, 0.0 before any evidence).
            "gate": round(self._mean_gate(st), 6) if st else 0.0,
            # The first adapted layer in use, as a fraction of the depth, or "taper", or "hedge" (the mean of the
            # starts, before the choice is made; ``hedge``). None: no layer adapts, which is the case until the
            # stream has evidence and whenever no candidate brings it nearer the anchor.
            "layers_from": (HEDGE if self._hedging(st) else self.options[st.choice]) if st and st.alpha > 0 else None,
            "probed": st.n_probed if st else 0,
            # How far (degrees) the probed faces, as the training statistics embed them, point from the anchor,
            # sampling noise taken out; below ``min_angle`` the stream keeps its training statistics.
            "anchor_angle": self._unadapted_angle(st) if st else None,
            # Its jackknife standard error over the probed faces (``angle_z``).
            "anchor_angle_se": self._unadapted_angle_se(st) if st else None,
            "pending": len(st.pending_mean) if st else 0,
            "change_score": round(st.change_score, 4) if st else 0.0,
            **{k: v for k, v in counters.items() if k != "step"},
        }

    def mean_shift(self, stream: str = DEFAULT_STREAM) -> float:
        """How far the means this stream normalises with have moved from training: per BN layer the channel
        mean of |mean in use - training mean| / training std, averaged over layers (0 for an unknown stream)."""
        st = self._streams.get(stream)
        if st is None or st.mixed is None:
            return 0.0
        moved = (st.mixed[0] - self._source[0]).abs() / (self._source[1] + self._eps).sqrt()
        return float(self._layer_mean(moved).mean())

    def reset(self, stream: str | None = None) -> None:
        """Forget ``stream`` (all streams if None): it restarts from the training statistics (alpha 0)."""
        if stream is None:
            self._streams.clear()
        else:
            self._streams.pop(stream, None)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """``{stream: {key: tensor or int}}``, plain tensors and ints (``torch.load(weights_only=True)`` reads it).

        Per batch-norm layer ``<layer>.slot_mean``, ``<layer>.slot_var``, ``<layer>.pending_mean``,
        ``<layer>.pending_var``, ``<layer>.window_mean`` and ``<layer>.window_var``; then ``slot_count``, ``slot_last``, ``slot_sig``, ``pending_sig``,
        ``history``, ``window``, ``window_sig``, ``probe_emb``, ``probe_sig``, ``probe_tail`` (empty unless
        ``select_by="divergence"``), the ints of ``STREAM_INTS`` and the counters.
        """
        out: dict[str, dict[str, Any]] = {}
        for stream, st in self._streams.items():
            d: dict[str, Any] = {}
            for key, t in st.tensors().items():
                if key in CHANNEL_STATE:
                    d.update({f"{name}.{key}": t[:, sl].clone() for name, sl in self._slices.items()})
                else:
                    d[key] = t.clone()
            ints = {k: getattr(st, k) for k in STREAM_INTS}
            out[stream] = {**d, **ints, **st.counters}
        return out

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace all streams by those of ``state`` (from :meth:`state_dict` of an adapter on the same model)."""
        streams = {}
        template = self._empty(0)
        for stream, d in state.items():
            if "probe_tail" not in d and "probe_emb" in d:
                # Saved before the divergence signal existed: its probes lack the tail moments, so a stream that
                # chooses by them keeps its choice and probes afresh (the anchor choice needs none).
                d = {**d, "probe_tail": template.probe_tail[:0]}
                if self._tail_width:
                    d["n_probed"] = 0
            if "window" in d and not any(k.endswith(".window_mean") for k in d):
                # Saved before the jump window kept its outliers' statistics (``reseed``): it starts afresh.
                n = len(d["window"])
                d = {
                    **d,
                    **{
                        f"{name}.{key}": torch.zeros(n, sl.stop - sl.start)
                        for name, sl in self._slices.items()
                        for key in ("window_mean", "window_var")
                    },
                    "window": torch.zeros(n, dtype=torch.bool),
                    "n_window": 0,
                }
            expected = {f"{name}.{key}" for name in self.layers for key in CHANNEL_STATE}
            expected |= set(template.tensors()) - set(CHANNEL_STATE) | {*STREAM_INTS, *COUNTERS}
            if set(d) != expected:
                missing, unexpected = sorted(expected - set(d)), sorted(set(d) - expected)
                raise ValueError(
                    f"{NAME} stream {stream!r} does not match this model "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
            tensors = {}
            for key, t in template.tensors().items():
                if key in CHANNEL_STATE:
                    parts = [torch.as_tensor(d[f"{name}.{key}"]) for name in self.layers]
                    widths = [p.shape[-1] for p in parts]
                    if widths != [s.stop - s.start for s in self._slices.values()]:
                        raise ValueError(f"{NAME} stream {stream!r}: {key} has other channel counts than this model")
                    value = torch.cat(parts, dim=1)
                else:
                    value = torch.as_tensor(d[key])
                if key == "probe_tail" and len(value) == 0:
                    value = t  # an empty ring (a state from before the divergence signal)
                fixed = t.shape[0] if key.startswith(("slot_", "history", "window", "probe_")) else None
                if fixed is not None and value.shape[0] != fixed:
                    raise ValueError(
                        f"{NAME} stream {stream!r}: {key} holds {value.shape[0]} entries, this adapter "
                        f"{fixed} (saved with other memory / history / jump_window / select_window settings)"
                    )
                if key == "probe_tail" and value.shape[1:] != t.shape[1:]:
                    raise ValueError(
                        f"{NAME} stream {stream!r}: probe_tail is {tuple(value.shape[1:])} per face, this adapter "
                        f"{tuple(t.shape[1:])} (saved with other select or depth settings, or another model)"
                    )
                if key == "probe_emb" and value.shape[1] != len(self.options):
                    raise ValueError(
                        f"{NAME} stream {stream!r}: probe_emb holds {value.shape[1]} candidates, this adapter "
                        f"{len(self.options)} (saved with other select or taper settings: a state saved before "
                        "the taper joined the choice, 2026-12-01, loads with taper=() and var_mix=0)"
                    )
                tensors[key] = value.to(t.device, t.dtype).clone()
            if len(tensors["pending_mean"]) > self.delay:
                raise ValueError(f"{NAME} stream {stream!r} holds more pending faces than delay={self.delay}")
            st = _Stream(**tensors, **{k: int(d[k]) for k in STREAM_INTS}, counters={k: int(d[k]) for k in COUNTERS})
            if not 0 <= st.choice < len(self.options):
                raise ValueError(
                    f"{NAME} stream {stream!r}: choice {st.choice} is not one of this adapter's candidates"
                )
            self._refresh(st)
            streams[str(stream)] = st
        self._streams = streams

    def settings(self) -> dict[str, Any]:
        """What a result record needs to say how embeddings were adapted."""
        return {
            "adapter": NAME,
            "bn_layers": len(self.layers),
            **{k: getattr(self, k) for k in SETTINGS},
            "select": list(self.select),
            "taper": list(self.taper),
            "select_by": self.select_by,
            "anchor": self._anchor_source,
        }

    # ------------------------------------------------------------------ internals

    def _stream(self, stream: str) -> _Stream:
        if stream not in self._streams:
            st = self._empty(0)
            self._refresh(st)
            self._streams[stream] = st
        return self._streams[stream]

    def _empty(self, dim: int) -> _Stream:
        dev = self._source.device
        m, c = self.memory, self._source.shape[1]
        return _Stream(
            slot_count=torch.zeros(m, dtype=torch.int64, device=dev),
            slot_last=torch.zeros(m, dtype=torch.int64, device=dev),
            slot_sig=torch.zeros(m, dim, device=dev),
            slot_mean=torch.zeros(m, c, device=dev),
            slot_var=torch.zeros(m, c, device=dev),
            pending_sig=torch.zeros(0, dim, device=dev),
            pending_mean=torch.zeros(0, c, device=dev),
            pending_var=torch.zeros(0, c, device=dev),
            history=torch.zeros(self.history, device=dev),
            window=torch.zeros(self.jump_window, dtype=torch.bool, device=dev),
            window_sig=torch.zeros(self.jump_window, dim, device=dev),
            window_mean=torch.zeros(self.jump_window, c, device=dev),
            window_var=torch.zeros(self.jump_window, c, device=dev),
            probe_emb=torch.zeros(self.select_window, len(self.options), dim, device=dev),
            probe_sig=torch.zeros(self.select_window, dim, device=dev),
            # only the divergence choice reads tail moments; the anchor choice keeps an empty (T = 0) ring
            probe_tail=torch.zeros(self.select_window, len(self.options), 2, self._tail_width, device=dev),
        )

    def _forget(self, st: _Stream) -> None:
        """After a jump: empty memory, queue, score history and outlier window; counters stay."""
        fresh = self._empty(st.slot_sig.shape[1])
        for key, t in fresh.tensors().items():
            setattr(st, key, t)
        st.n_history = st.n_window = st.n_probed = st.n_distinct = st.choice = 0

    def _refresh(self, st: _Stream) -> None:
        """Recompute the statistics the next batch uses from the memory: equal weight per distinct face (slot)."""
        occupied = st.slot_count > 0
        k = int(occupied.sum())
        st.alpha = self.alpha_max * k / (k + self.prior) if k >= self.min_faces else 0.0
        st.mixed, st.reference, st.gates, st.mixes = self._source, None, None, None
        if k < self.min_faces:
            return
        means = st.slot_mean[occupied].double()
        target_mean = means.mean(0)
        # Law of total variance over slots; the between-slot (between-face) part unbiased over the k slots.
        between = ((means - target_mean) ** 2).sum(0) / (k - 1)
        target_var = st.slot_var[occupied].double().mean(0) + between
        target = torch.stack([target_mean, target_var]).float()
        weight = self._masks  # (K, C): one row per candidate
        if self.gate > 0:
            st.gates = self._divergence_gates(target_mean, between, k)
            weight = weight * st.gates[self._layer_of]
        # (K, 2, C): one mix of means and variances per candidate
        st.mixes = self._source + st.alpha * self._moment_weight * weight[:, None] * (target - self._source)
        st.mixed = self._hedge_mix(st) if self._hedging(st) else st.mixes[st.choice]
        # The yardstick of the outlier test: how far faces' channel means spread around the memory's mean,
        # floored at a hundredth of the channel's variance so that a channel every face leaves at zero
        # (a dead unit) cannot make one face an outlier on its own.
        spread = (between + 0.01 * target_var).float() + self._eps
        st.reference = torch.stack([target_mean.float(), spread])

    def _divergence_gates(self, target_mean: torch.Tensor, between: torch.Tensor, k: int) -> torch.Tensor:
        """Per layer, the share of the memory's departure from the training means that sampling noise does not
        explain: g = clamp(1 - gate * noise / divergence, 0, 1) (a positive-part James-Stein shrinkage toward
        the training statistics), with divergence the channel mean of (mu_T - mu_train)^2 / var_train and noise
        the channel mean of b^2 / (K var_train), the variance of a K-face mean. An in-domain stream, whose
        memory differs from training only by noise, keeps its training statistics."""
        var = self._source[1].double() + self._eps.double()
        divergence = self._layer_mean((target_mean - self._source[0].double()) ** 2 / var)
        noise = self._layer_mean(between / (k * var))
        return (1 - self.gate * noise / divergence.clamp(min=1e-12)).clamp(0.0, 1.0).float()

    def _unadapted_angle(self, st: _Stream) -> float | None:
        n = min(st.n_probed, self.select_window)
        if self.anchor is None or self.options[0] is not None or n < 2:
            return None
        return round(anchor_angle(st.probe_emb[:n, 0], self.anchor), 3)

    def _unadapted_angle_se(self, st: _Stream) -> float | None:
        n = min(st.n_probed, self.select_window)
        if self.anchor is None or self.options[0] is not None or n < 3:
            return None
        return round(anchor_angle_jackknife(st.probe_emb[:n, 0], self.anchor)[1], 3)

    def _hedging(self, st: _Stream) -> bool:
        """Whether ``st`` has statistics to adapt with but no choice yet (fewer than ``select_min`` probes)."""
        return bool(self._starts) and st.mixes is not None and min(st.n_probed, self.select_window) < self.select_min

    def _hedge_mix(self, st: _Stream) -> torch.Tensor:
        """The mean of the start candidates' statistics: what a stream adapts with before its choice is made.
        Each layer's means move by the share of the starts that reach it (with ``var_in="taper"`` the starts
        move no variance), a bet on none of them."""
        return self._source + (st.mixes[self._starts] - self._source).mean(0)  # exact where no start moves

    def _layer_mean(self, values: torch.Tensor) -> torch.Tensor:
        """(C,) per-channel values -> (L,) their mean over each BN layer's channels (float64)."""
        sums = torch.zeros(len(self._layer_size), dtype=torch.float64, device=values.device)
        return sums.index_add_(0, self._layer_of, values.double()) / self._layer_size

    def _normalise(self, name: str, bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
        if self._mix is None:
            raise RuntimeError(f"{NAME} statistics belong to a stream: call the adapter, adapter(x, stream)")
        sl = self._slices[name]
        mean, var = self._mix[0, sl], self._mix[1, sl]
        if x.shape[0]:
            xs = x.detach().float()
            if x.dim() == 2:
                self._seen[name] = (xs, torch.zeros_like(xs))
            else:
                # Moments about the statistics in use: well conditioned, and ~4x faster than var_mean.
                shift = mean.view(1, -1, *([1] * (x.dim() - 2)))
                d = (xs - shift).flatten(2)
                m = d.mean(2)
                v = (d.square().mean(2) - m.square()).clamp_(min=0.0)
                self._seen[name] = (m + mean, v)
        dtype = bn.running_mean.dtype
        return F.batch_norm(x, mean.to(dtype), var.to(dtype), bn.weight, bn.bias, False, 0.0, bn.eps)

    def _update(
        self, st: _Stream, x: torch.Tensor, out: torch.Tensor, seen: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        flat = x.detach().flatten(1).float()
        finite = torch.isfinite(flat).all(1) & torch.isfinite(out).all(1)
        constant = flat.std(1, correction=0) <= 1e-3 * flat.abs().amax(1).clamp(min=1.0)
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
        if st.slot_sig.shape[1] != sig.shape[1]:  # the first faces of a stream: the embedding size is now known
            fresh = self._empty(sig.shape[1])
            for key in ("slot_sig", "pending_sig", "window_sig", "probe_emb", "probe_sig"):
                setattr(st, key, getattr(fresh, key))
        if st.mixes is not None and len(self.options) > 1:
            self._probe(st, x, sig, valid)
        c = st.counters
        changed = False
        for i in range(x.shape[0]):
            c["seen"] += 1
            if not bool(valid[i]):
                c["rejected_invalid"] += 1
                continue
            c["step"] += 1  # the clock of least-recently-used eviction: only frames that could teach count
            outlier = log_score is not None and self._is_outlier(st, float(log_score[i]))
            # The jump window counts distinct outliers: a burst of one odd person is one odd face, not a jump.
            repeat = outlier and bool(((st.window_sig @ sig[i])[st.window] >= self.same_face).any())
            if not repeat:
                pos = st.n_window % self.jump_window
                st.window[pos] = outlier
                st.window_sig[pos] = sig[i] if outlier else 0.0
                st.window_mean[pos] = face_mean[i] if outlier else 0.0
                st.window_var[pos] = face_var[i] if outlier else 0.0
                st.n_window += 1
            if outlier:
                c["rejected_outlier"] += 1
                if st.n_window >= self.jump_window and int(st.window.sum()) >= self.jump_fraction * self.jump_window:
                    # _forget gives the stream fresh tensors, so these still hold the window's outliers.
                    window, sigs, means, variances = st.window, st.window_sig, st.window_mean, st.window_var
                    self._forget(st)
                    if self.reseed:
                        # The outliers that showed the jump are the new distribution's first distinct faces.
                        for j in window.nonzero().flatten().tolist():
                            self._remember(st, sigs[j], means[j], variances[j])
                    c["resets"] += 1
                    changed = True
                continue
            if log_score is not None:
                st.history[st.n_history % self.history] = log_score[i]
                st.n_history += 1
            c["accepted"] += 1
            st.pending_sig = torch.cat([st.pending_sig, sig[i : i + 1]])
            st.pending_mean = torch.cat([st.pending_mean, face_mean[i : i + 1]])
            st.pending_var = torch.cat([st.pending_var, face_var[i : i + 1]])
            if len(st.pending_mean) > self.delay:
                self._remember(st, st.pending_sig[0], st.pending_mean[0], st.pending_var[0])
                st.pending_sig, st.pending_mean, st.pending_var = (
                    st.pending_sig[1:],
                    st.pending_mean[1:],
                    st.pending_var[1:],
                )
                changed = True
        if changed:
            self._drop_before_change(st)
            self._refresh(st)

    def _drop_before_change(self, st: _Stream) -> None:
        """With ``change_z``: forget the memory's older faces when its newest ``change_window`` depart from them
        beyond noise. A change of light moves every face a little and none by much, so the outlier test and
        the jump it feeds miss it, but the mean of a few dozen faces moves well past its sampling noise. The
        score is the mean over the stem BN's channels of (mean_new - mean_old)^2 / (b^2 (1/n_new + 1/n_old)),
        b^2 the pooled spread of the faces' channel means (floored at 1% of their variance): about 1 while
        the stream stays as it was. Only the stem is read: deeper inputs move when the stream's own
        adapted statistics do. Past ``change_z`` the older faces leave the memory and the outlier
        history restarts; the newest stay, so the stream adapts to the new light at once."""
        if self.change_z <= 0:
            return
        occupied = (st.slot_count > 0).nonzero().flatten()
        n_new = self.change_window
        if len(occupied) < 2 * n_new:
            return
        newest_first = occupied[st.slot_last[occupied].argsort(descending=True)]
        new, old = newest_first[:n_new], newest_first[n_new:]
        stem = self._slices[next(iter(self.layers))]  # the first BN: its input is the same whatever adapts
        means = st.slot_mean[:, stem].double()
        mu_new, mu_old = means[new].mean(0), means[old].mean(0)
        spread = (((means[new] - mu_new) ** 2).sum(0) + ((means[old] - mu_old) ** 2).sum(0)) / (len(occupied) - 2)
        spread = spread + 0.01 * st.slot_var[occupied][:, stem].double().mean(0) + self._eps[stem].double()
        z2 = (mu_new - mu_old) ** 2 / (spread * (1.0 / len(new) + 1.0 / len(old)))
        st.change_score = float(z2.mean())
        if st.change_score > self.change_z:
            st.slot_count[old] = 0
            st.n_history = 0
            st.counters["resets"] += 1

    def _probe(self, st: _Stream, x: torch.Tensor, sig: torch.Tensor, valid: torch.Tensor) -> None:
        """Embed every ``select_every``-th distinct valid face of the batch with each candidate's statistics
        (the face as served is the current candidate's), then choose the candidate whose mean embedding over
        the probed faces points closest to the anchor. Faces are probed with the statistics in force when their
        batch was embedded, and the ring keeps only the last ``select_window``: evidence ages out."""
        picked = []
        for i in valid.nonzero().flatten().tolist():
            n = min(st.n_probed, self.select_window)
            known = torch.cat([st.probe_sig[:n], sig[picked]]) if picked else st.probe_sig[:n]
            if len(known) and float((known @ sig[i]).max()) >= self.same_face:
                continue  # a burst of one person is probed once
            st.n_distinct += 1  # unlike every probed face (not necessarily every face seen)
            # The first select_dense probes of a stream (or since its last reset) are every distinct face: the
            # choice is made from select_min faces instead of select_every times as many.
            if st.n_probed + len(picked) < self.select_dense or st.n_distinct % self.select_every == 0:
                picked.append(i)
        if not picked:
            return
        idx = torch.tensor(picked, device=x.device)
        by_divergence = self.select_by == "divergence"
        served = None if self._hedging(st) else st.choice  # the candidate the batch was embedded with
        views, tails = [], []
        try:
            for k, mix in enumerate(st.mixes):
                if k == served and not by_divergence:
                    views.append(sig[idx])
                    continue
                # By divergence every candidate is re-run, the one in use too, so that all K see one batch.
                self._mix, self._seen = mix, {}
                out = self.model(x[idx])
                views.append(sig[idx] if k == served else F.normalize(out.detach().float().flatten(1), dim=1))
                if by_divergence:
                    tails.append(
                        torch.stack(
                            [torch.cat([self._seen[n][j] for n in self._tail_names], dim=1) for j in (0, 1)], dim=1
                        )
                    )  # (n, 2, T)
        finally:
            self._mix, self._seen = None, {}
        emb = torch.stack(views, dim=1)  # (n, K, D)
        tail = torch.stack(tails, dim=1) if by_divergence else None  # (n, K, 2, T)
        if not by_divergence and emb.shape[-1] != self.anchor.numel():
            raise ConfigError(
                f"{NAME}: the model embeds in {emb.shape[-1]} dimensions, the anchor has {self.anchor.numel()}: "
                "pass anchor= (a mean embedding of training faces in the model's space) or select=()"
            )
        for j, i in enumerate(picked):
            slot = st.n_probed % self.select_window
            st.probe_emb[slot], st.probe_sig[slot] = emb[j], sig[i]
            if tail is not None:
                st.probe_tail[slot] = tail[j]
            st.n_probed += 1
        n = min(st.n_probed, self.select_window)
        if n >= self.select_min:
            # A stream leaving its hedge has no candidate in use to hold on to: its first choice is the best.
            current = None if served is None else st.choice
            if by_divergence:
                st.choice = self._choose_by_divergence(st.probe_tail[:n], current)
            else:
                st.choice = self._choose(st.probe_emb[:n], current)
        st.mixed = self._hedge_mix(st) if self._hedging(st) else st.mixes[st.choice]

    def _choose(self, probed: torch.Tensor, current: int | None) -> int:
        """The candidate whose mean embedding of the probed faces ((n, K, D)) points closest to the anchor. Ties
        (every candidate equal, as before any statistics move) keep the first: no adaptation. With ``select_z``
        > 0 the stream leaves its current candidate only for one ahead by more than ``select_z`` jackknife
        standard errors of the difference (leave-one-face-out), so sampling noise does not switch it."""
        anchor = self.anchor.to(probed.device)
        total = probed.sum(0)
        scores = F.normalize(total, dim=1) @ anchor
        if len(probed) < 2:
            return int(scores.argmax())
        loo = F.normalize(total[None] - probed, dim=2) @ anchor  # (n, K)
        if self.min_angle > 0 and self.options[0] is None and self._angle_bound(probed[:, 0], anchor) < self.min_angle:
            return 0  # the faces as training statistics embed them already point where the anchor does
        return self._pick(scores, loo, current)

    def _angle_bound(self, embeddings: torch.Tensor, anchor: torch.Tensor) -> float:
        """The anchor angle of ``embeddings`` less ``angle_z`` jackknife standard errors: with ``angle_z`` > 0 a
        stream leaves "none" only when its faces point beyond ``min_angle`` by more than the angle's noise."""
        if self.angle_z == 0:
            return anchor_angle(embeddings, anchor)
        angle, se = anchor_angle_jackknife(embeddings, anchor)
        return angle - self.angle_z * se

    def _pick(self, scores: torch.Tensor, loo: torch.Tensor, current: int | None) -> int:
        """The best of the (K,) ``scores``; with ``select_z`` > 0 only if ahead of ``current`` by more than
        ``select_z`` jackknife standard errors of the difference, from the leave-one-face-out scores ``loo`` (n, K)."""
        best = int(scores.argmax())
        if current is None or best == current or self.select_z == 0 or len(loo) < 2:
            return best
        n = len(loo)
        d = loo[:, best] - loo[:, current]
        se = float(((n - 1) / n * (d - d.mean()).square().sum()).sqrt())
        return best if float(scores[best] - scores[current]) > self.select_z * se else current

    def _choose_by_divergence(self, tail: torch.Tensor, current: int | None) -> int:
        """The candidate under which the probed faces ((n, K, 2, T) per-face means and variances of the tail
        channels) reach the layers past ``depth`` most like training: the lowest Gaussian KL divergence of the
        channels' population statistics from their running ones, averaged over channels, then layers. Ties keep
        the first (no adaptation); ``select_z`` as in :meth:`_choose`."""
        t = tail.double()
        m, second = t[:, :, 0], t[:, :, 1] + t[:, :, 0].square()  # per face: E[x], E[x^2]
        n = len(t)
        s1, s2 = m.sum(0), second.sum(0)  # (K, T)
        scores = -self._tail_divergence(s1 / n, s2 / n)
        if n < 2:
            return int(scores.argmax())
        loo = -self._tail_divergence((s1 - m) / (n - 1), (s2 - second) / (n - 1))  # (n, K)
        return self._pick(scores, loo, current)

    def _tail_divergence(self, mean: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """(..., T) population E[x] and E[x^2] of the tail channels -> (...,) KL from the training statistics."""
        tail = self._tail
        kl = gaussian_kl(mean, second - mean.square(), self._source[0, tail], self._source[1, tail] + self._eps[tail])
        # The channel mean per tail layer, then the mean over those layers: each layer weighs the same.
        layer_of = self._layer_of[tail] - int(self._layer_of[tail[0]])
        sums = torch.zeros(*kl.shape[:-1], len(self._tail_names), dtype=torch.float64, device=kl.device)
        sums.index_add_(kl.dim() - 1, layer_of, kl)
        return (sums / self._layer_size[-len(self._tail_names) :]).mean(-1)

    def _mean_gate(self, st: _Stream) -> float:
        if st.reference is None:
            return 0.0
        layers = self._layer_masks[self._starts].any(0) if self._hedging(st) else self._layer_masks[st.choice]
        if not bool(layers.any()):
            return 0.0
        if st.gates is None:
            return 1.0
        return float(st.gates[layers].mean())

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
        occupied = st.slot_count > 0
        clock = st.counters["step"]
        if bool(occupied.any()):
            cos = (st.slot_sig @ sig).masked_fill(~occupied, -2.0)
            best = int(cos.argmax())
            if float(cos[best]) >= self.same_face:
                # A running mean of the slot's faces, the newest weighing at least 1 / member_cap (timeliness).
                w = 1.0 / min(int(st.slot_count[best]) + 1, self.member_cap)
                d = mean - st.slot_mean[best]
                st.slot_var[best] = (1 - w) * st.slot_var[best] + w * var + w * (1 - w) * d * d
                st.slot_mean[best] += w * d
                st.slot_sig[best] = F.normalize((1 - w) * st.slot_sig[best] + w * sig, dim=0)
                st.slot_count[best] += 1
                st.slot_last[best] = clock
                st.counters["merged"] += 1
                return
        free = (~occupied).nonzero()
        slot = int(free[0]) if len(free) else int(st.slot_last.argmin())
        st.slot_count[slot], st.slot_last[slot] = 1, clock
        st.slot_sig[slot], st.slot_mean[slot], st.slot_var[slot] = sig, mean, var


def anchor_angle(embeddings: torch.Tensor, anchor: torch.Tensor) -> float:
    """The angle in degrees between the population mean direction of ``embeddings`` ((n, D), unit rows) and the
    unit ``anchor``, with the sampling noise of the mean taken out: the mean of n faces lies off any direction by
    about the spread of the faces over n even when the population's mean lies on it, so the squared component of
    the mean across the anchor loses the sample covariance's trace across it over n. Infinite below two faces."""
    n = len(embeddings)
    if n < 2:
        return math.inf
    e = embeddings.double()
    a = anchor.double().to(e.device)
    mean = e.mean(0)
    along = float(mean @ a)
    across = e - (e @ a)[:, None] * a  # each face's component across the anchor
    noise = float((across - across.mean(0)).square().sum()) / (n - 1) / n
    squared = float((across.mean(0)).square().sum()) - noise
    return math.degrees(math.atan2(math.sqrt(max(squared, 0.0)), along))


def anchor_angle_jackknife(embeddings: torch.Tensor, anchor: torch.Tensor) -> tuple[float, float]:
    """:func:`anchor_angle` of ``embeddings`` ((n, D)) and its leave-one-face-out jackknife standard error
    (infinite below three faces)."""
    n = len(embeddings)
    angle = anchor_angle(embeddings, anchor)
    if n < 3:
        return angle, math.inf
    loo = torch.tensor([anchor_angle(torch.cat([embeddings[:i], embeddings[i + 1 :]]), anchor) for i in range(n)])
    return angle, float(((n - 1) / n * (loo - loo.mean()).square().sum()).sqrt())


def gaussian_kl(mean: torch.Tensor, var: torch.Tensor, ref_mean: torch.Tensor, ref_var: torch.Tensor) -> torch.Tensor:
    """Per channel, KL(N(mean, var) || N(ref_mean, ref_var)) in float64 (var floored at 1e-12): how far a
    channel's statistics on some faces lie from its training (running) statistics."""
    var, ref_var = var.double().clamp(min=1e-12), ref_var.double()
    ratio = var / ref_var
    return 0.5 * (ratio + (mean.double() - ref_mean.double()).square() / ref_var - 1 - torch.log(ratio))


def layer_range(start: float, depth: float, n_layers: int) -> range:
    """The indices of the BN layers from ``start`` to ``depth`` of the way through ``n_layers`` (at least one)."""
    first = min(int(start * n_layers + 0.5), n_layers - 1)
    return range(first, max(first + 1, int(depth * n_layers + 0.5)))


# Per-stream ints saved beside the tensors and counters.
STREAM_INTS = ("n_history", "n_window", "n_probed", "n_distinct", "choice")


def save_anchor(path: str | Path, anchor: np.ndarray, **meta: Any) -> None:
    """Write an anchor (a unit embedding) with how it was made."""
    write_npz_asset(path, {"anchor": np.asarray(anchor, dtype=np.float32).ravel()}, **meta)


def load_anchor(path: str | Path = TEACHER_ANCHOR) -> tuple[torch.Tensor, dict[str, str]]:
    """The anchor of ``path`` (default: the teacher's, shipped with aird) and its metadata."""
    arrays, meta = read_npz_asset(path, "an anchor (rebuild it with benchmarks/make_teacher_anchor.py)")
    anchor = torch.from_numpy(arrays.get("anchor", np.zeros(0)).astype(np.float32))
    if anchor.ndim != 1 or not torch.isfinite(anchor).all() or float(anchor.norm()) == 0:
        raise ModelFileError(f"{path}: the anchor must be one finite, non-zero vector")
    return anchor, meta


# A student file's model card may carry its own anchor (benchmarks/make_student_anchor.py), for a student
# not distilled into the teacher's space. (The fast one, bridge-trained to the shipped student's LR
# embeddings, was measured with its own and ships without: docs/facebn.md.)
CARD_ANCHOR = "adapt_anchor"


def card_anchor(card: Mapping[str, Any], path: str | Path) -> np.ndarray | None:
    """The anchor a model card carries (``card["adapt_anchor"]["vector"]``), or None when it carries none;
    a malformed one is a ModelFileError naming ``path``."""
    entry = card.get(CARD_ANCHOR)
    if entry is None:
        return None
    try:
        vector = np.asarray(entry["vector"], dtype=np.float32)
    except (TypeError, KeyError, ValueError):
        vector = np.zeros(0, dtype=np.float32)
    if vector.ndim != 1 or not vector.size or not np.isfinite(vector).all() or not np.linalg.norm(vector) > 0:
        raise ModelFileError(
            f"{path}: the model card's {CARD_ANCHOR} must hold one finite, non-zero 'vector'; "
            "rebuild it with benchmarks/make_student_anchor.py"
        )
    return vector


ADAPTERS.register(NAME)(SafeFaceBN)
