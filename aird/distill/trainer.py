"""One training loop for one process or many (``torchrun``; gloo on CPU, nccl on GPU).

The teacher's features are cached (``TrainingSet.teacher``), so a step runs the student only: LR faces
in, f_s and the student head's cosines out, the registered losses against f_t and the frozen C_t.
Everything random is a function of (seed, epoch, sample), and SIGINT / SIGTERM stop the loop only at
a step boundary, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from aird.data.degrade import stable_seed, to_network_input
from aird.distill.config import ExperimentConfig
from aird.distill.data import TrainingSet
from aird.distill.losses import DistillOutputs, WeightedLosses
from aird.distill.methods import method_terms
from aird.errors import AirdError, ModelFileError
from aird.io import atomic_path
from aird.models.embedder import faces_to_tensor
from aird.models.heads import CosineClassifier


class TrainingError(AirdError):
    """Training cannot go on (non-finite loss, bad checkpoint)."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training at a step boundary, after saving the checkpoint.

    A KeyboardInterrupt, so ``except Exception`` does not swallow it; ``exit_code`` is the shell's
    128 + signal number (130 for Ctrl-C, 143 for SIGTERM), which ``aird distill`` exits with.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum


class Distiller(nn.Module):
    """Student backbone + head, trained; the teacher head C_t stays frozen and in eval mode whatever
    ``.train()`` is called (the teacher backbone is not here: its features are cached)."""

    def __init__(
        self,
        student: nn.Module,
        student_head: CosineClassifier,
        teacher_head: CosineClassifier,
        losses: WeightedLosses,
        freeze_bn: bool = False,
        feature_mean: torch.Tensor | None = None,
    ):
        super().__init__()
        self.student, self.student_head, self.losses = student, student_head, losses
        # the training set's mean teacher feature, for the terms that centre features (a constant)
        self.register_buffer("feature_mean", feature_mean, persistent=False)
        self.teacher_head = teacher_head.requires_grad_(False).eval()
        self.freeze_bn = freeze_bn

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher_head.eval()
        if self.freeze_bn:
            for m in self.student.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(
        self, lr_faces: torch.Tensor, f_t: torch.Tensor, labels: torch.Tensor, queue_t: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        f_s = self.student(lr_faces).float()
        # Heads and losses in fp32 even under AMP: bf16 resolves a cosine near 0.9 only to about
        # 0.004, coarser than the differences the distillation terms are made of.
        with torch.autocast(f_s.device.type, enabled=False):
            with torch.no_grad():
                cos_t = self.teacher_head(f_t.float())
            out = DistillOutputs(
                f_s=f_s,
                f_t=f_t.float(),
                cos_s=self.student_head(f_s),
                cos_t=cos_t,
                labels=labels,
                queue_t=queue_t,
                center=self.feature_mean,
            )
            return self.losses(out)


def world_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> torch.device:
    """Join the process group when launched by torchrun; choose the device."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero: a function of the step alone (nothing to resume)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(stable_seed("order", seed, epoch)).permutation(n)


def save_checkpoint(path: Path, state: dict) -> None:
    """Temp file + rename: a crash mid-write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise ModelFileError(
            f"{path}: not a readable aird checkpoint ({type(exc).__name__}: {exc}); "
            "delete it to start over, or pass another --resume/--init file"
        ) from None


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, now: dict) -> list[str]:
    """``train.lr: 0.003 in checkpoint, 0.01 now`` for each setting that differs. ``out_dir`` is left
    out: it says where a run lives, not what it trains, so a moved run directory still resumes."""
    a, b = _flat(saved), _flat(now)
    # A setting added after the checkpoint was made, left at its off value (None), changes nothing.
    keys = [k for k in dict.fromkeys([*a, *b]) if k != "out_dir" and not (k not in a and b[k] is None)]
    return [
        f"{k}: {a.get(k, 'unset')!r} in checkpoint, {b.get(k, 'unset')!r} now" for k in keys if a.get(k) != b.get(k)
    ]


def load_weights(module: nn.Module, weights: dict, source: Path, part: str) -> None:
    """``load_state_dict`` with a one-line error naming the first tensor that does not fit."""
    own = module.state_dict()
    for key, mine in own.items():
        theirs = weights.get(key)
        found = "missing" if theirs is None else f"of shape {list(theirs.shape)}"
        if theirs is None or theirs.shape != mine.shape:
            raise ModelFileError(
                f"{source}: {part}.{key} is {found}, the model needs {list(mine.shape)}: "
                "not a checkpoint of this config's model; start over with --overwrite"
            )
    extra = [k for k in weights if k not in own]
    if extra:
        raise ModelFileError(
            f"{source}: {part}.{extra[0]} is not in the model: not a checkpoint of this config's model; "
            "start over with --overwrite"
        )
    module.load_state_dict(weights)


def _logged_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):  # a line cut short by a crash
        return math.inf


class Trainer:
    def __init__(
        self,
        cfg: ExperimentConfig,
        data: TrainingSet,
        student: nn.Module,
        teacher_head: CosineClassifier,
        run_dir: Path,
        device: torch.device | None = None,
        progress: bool = True,
    ):
        self.cfg, self.data, self.run_dir = cfg, data, Path(run_dir)
        self.device = device or torch.device("cpu")
        self.rank, self.world = world_info()
        t = cfg.train
        if t.batch_size % self.world:
            raise TrainingError(f"train.batch_size {t.batch_size} is not divisible by the {self.world} processes")
        self.local_batch = t.batch_size // self.world
        student_head = CosineClassifier(teacher_head.weight.shape[1], teacher_head.weight.shape[0])
        student_head.load_state_dict(teacher_head.state_dict())  # C_s starts as C_t
        losses = WeightedLosses(method_terms(cfg.method, cfg.losses))
        mean = torch.from_numpy(data.teacher).float().mean(0)
        self.model = Distiller(student, student_head, teacher_head, losses, cfg.student.bn == "frozen", mean)
        self.model.to(self.device)
        self.ddp = (
            nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if self.world > 1
            else self.model
        )
        params = [
            {"params": student.parameters(), "lr": t.lr},
            {"params": student_head.parameters(), "lr": t.head_lr or t.lr},
        ]
        if t.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        else:
            self.opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.bridge = self._bridge_student()
        # One synthesis per side the student reads (student.progressive), all with the same seed: a face's
        # degradation in an epoch does not depend on the side it is then up-sampled to.
        self.degradations = {
            side: cfg.degradation.build(side, t.seed)
            for side in {*(cfg.student.progressive or []), cfg.student.input_size}
        }
        if self.bridge is not None:  # native LR faces: each network resizes them to its own side
            self.degradations = {s: dataclasses.replace(d, up=None) for s, d in self.degradations.items()}
        self.steps_per_epoch = len(data) // t.batch_size
        if self.steps_per_epoch == 0:
            raise TrainingError(f"{len(data)} training faces are fewer than one batch of {t.batch_size}")
        self.total_steps = self.steps_per_epoch * t.epochs
        self.step = 0
        self.stop_signal = 0  # set by SIGINT / SIGTERM, read at the next step boundary
        self.queue = torch.zeros(0, data.teacher.shape[1])
        self.amp = t.amp == "on" or (t.amp == "auto" and self.device.type == "cuda")
        self.progress = progress and self.rank == 0
        self.teacher = torch.from_numpy(data.teacher).float()
        self.teacher_flip = torch.from_numpy(data.teacher_flip).float()
        self.labels = torch.from_numpy(data.labels)

    def _bridge_student(self) -> tuple[nn.Module, int] | None:
        """The frozen student that gives f_t in bridge distillation, and the side it reads."""
        path = self.cfg.bridge.path()
        if path is None:
            return None
        from aird.models.student import load_student

        model, meta = load_student(path)
        return model.requires_grad_(False).eval().to(self.device), int(meta["input_size"])

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format": "aird-checkpoint-v1",
            "step": self.step,
            "student": self.model.student.state_dict(),
            "student_head": self.model.student_head.state_dict(),
            "teacher_head": self.model.teacher_head.state_dict(),
            "optimizer": self.opt.state_dict(),
            "queue": self.queue.clone(),
            "config": json.loads(json.dumps(asdict(self.cfg))),
            "identities": list(self.data.identities),
        }

    def load_state(self, state: dict, source: Path) -> None:
        if not isinstance(state, dict) or state.get("format") != "aird-checkpoint-v1":
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ModelFileError(f"{source}: not an aird training checkpoint (format {found!r})")
        changes = config_changes(state["config"], json.loads(json.dumps(asdict(self.cfg))))
        if changes:
            raise TrainingError(
                f"{source}: checkpoint was made with another config ({'; '.join(changes)}); resume with the "
                "config it was made with, or start over with --overwrite"
            )
        if state["identities"] != list(self.data.identities):
            raise TrainingError(
                f"{source}: checkpoint was trained on other identities ({len(state['identities'])}, now "
                f"{self.data.num_classes}): the training data changed; start over with --overwrite"
            )
        load_weights(self.model.student, state["student"], source, "student")
        load_weights(self.model.student_head, state["student_head"], source, "student_head")
        queue = state["queue"]
        if queue.ndim != 2 or queue.shape[1] != self.teacher.shape[1]:
            raise ModelFileError(f"{source}: queue has shape {list(queue.shape)}, not (n, {self.teacher.shape[1]})")
        self.opt.load_state_dict(state["optimizer"])
        self.queue = queue
        self.step = int(state["step"])

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def sync_buffers(self) -> None:
        """Average the student's BN running statistics over ranks: each rank saw other faces, and
        DDP only re-broadcasts rank 0's buffers at the next forward, so the final ones differ."""
        if self.world == 1:
            return
        for buf in self.model.student.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf /= self.world

    def save(self) -> None:
        self.sync_buffers()
        if self.rank == 0:
            save_checkpoint(self.checkpoint_path, self.state())

    # -- one step ------------------------------------------------------------------------------
    def _batch(self, epoch: int, index_in_epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.cfg.train
        order = epoch_order(len(self.data), t.seed, epoch)
        start = index_in_epoch * t.batch_size + self.rank * self.local_batch
        idx = order[start : start + self.local_batch]
        chips = self.data.chips[idx]
        flips = np.zeros(len(idx), dtype=bool)
        if self.cfg.data.flip:
            flips = np.array(
                [np.random.default_rng(stable_seed("flip", t.seed, epoch, int(i))).random() < 0.5 for i in idx]
            )
            chips = np.where(flips[:, None, None, None], chips[:, :, ::-1], chips)
        keys = [f"{self.data.digests[i]}:{epoch}" for i in idx]
        side = self.cfg.student.side_at(epoch)
        degradation = self.degradations[side]
        f_hr = torch.where(torch.from_numpy(flips)[:, None], self.teacher_flip[idx], self.teacher[idx])
        if self.bridge is not None:  # native faces of several sides: a list, not one array
            labels = self.labels[idx]
            if self.cfg.bridge.mixup is not None:
                chips, blended = self._mixup(chips, idx, epoch)
                labels = torch.where(torch.from_numpy(blended), -1, labels)  # a blend is nobody
            lr_faces = [degradation(c, k) for c, k in zip(chips, keys)]
            return self._bridge_batch(lr_faces, labels, side, f_hr)
        lr = degradation.batch(chips, keys)
        return faces_to_tensor(lr), f_hr, self.labels[idx]

    def _mixup(self, chips: np.ndarray, idx: np.ndarray, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Blend a share of the batch's chips with another chip of the batch (``bridge.mixup``); each face's
        draw is seeded by the face and the epoch, so a resumed run or another rank count blends alike."""
        mix = self.cfg.bridge.mixup
        out, blended = chips.copy(), np.zeros(len(idx), dtype=bool)
        if len(idx) < 2:
            return out, blended
        for k, i in enumerate(idx):
            rng = np.random.default_rng(stable_seed("mixup", self.cfg.train.seed, epoch, int(i)))
            if rng.random() >= mix.prob:
                continue
            lam = rng.beta(mix.alpha, mix.alpha)
            other = (k + 1 + int(rng.integers(len(idx) - 1))) % len(idx)  # any face of the batch but itself
            out[k] = np.clip(lam * chips[k] + (1.0 - lam) * chips[other] + 0.5, 0, 255).astype(np.uint8)
            blended[k] = True
        return out, blended

    @torch.no_grad()
    def _bridge_batch(
        self, lr: list[np.ndarray], labels: torch.Tensor, size: int, f_hr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both networks read the same (already mirrored) LR faces, each at its own side (the student at ``size``);
        with ``bridge.teacher_weight`` w > 0 the target also leans towards the HR teacher's embedding ``f_hr``."""
        model, side = self.bridge
        x_t = faces_to_tensor(np.stack([to_network_input(f, side) for f in lr])).to(self.device)
        with torch.autocast(self.device.type, enabled=self.amp):
            f_t = model(x_t).float().cpu()
        w = self.cfg.bridge.teacher_weight
        if w > 0:
            mixed = (1 - w) * F.normalize(f_t, dim=1) + w * F.normalize(f_hr, dim=1)
            f_t = F.normalize(mixed, dim=1) * f_t.norm(dim=1, keepdim=True)
        return faces_to_tensor(np.stack([to_network_input(f, size) for f in lr])), f_t, labels

    def _update_queue(self, f_t: torch.Tensor) -> None:
        size = self.cfg.train.queue_size
        if size > 0:
            self.queue = torch.cat([f_t.detach().cpu(), self.queue])[:size]

    def _train_step(self, epoch: int, within: int) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        t = self.cfg.train
        x, f_t, labels = (v.to(self.device) for v in self._batch(epoch, within))
        for group, base in zip(self.opt.param_groups, self.base_lrs):
            group["lr"] = lr_at(self.step, self.total_steps, base, t.warmup_steps)
        queue = self.queue.to(self.device) if len(self.queue) else None
        with torch.autocast(self.device.type, enabled=self.amp):
            loss, parts = self.ddp(x, f_t, labels, queue)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at step {self.step} (terms {parts}); lower "
                f"train.lr or check the data; last good checkpoint: {self.checkpoint_path}"
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad or math.inf)
        self.opt.step()
        self._update_queue(f_t)
        self.step += 1
        return loss, parts, grad_norm

    # -- signals -------------------------------------------------------------------------------
    def request_stop(self, signum: int, frame: object = None) -> None:
        """The SIGINT / SIGTERM handler: only a flag. Raising here, mid-step, would leave the weights,
        the BN statistics and the step counter out of step with one another in the checkpoint."""
        self.stop_signal = signum

    def _catch_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}  # Python sets handlers in the main thread only; elsewhere Ctrl-C raises as usual
        return {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def _stopping(self) -> bool:
        """Whether any process was asked to stop: all ranks must leave after the same step."""
        if self.world > 1:
            flag = torch.tensor([self.stop_signal], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.stop_signal = int(flag)
        return self.stop_signal != 0

    def _open_log(self):
        """log.jsonl in append mode, without the lines of steps after the current one: a crash can leave
        steps logged past the checkpoint, and the resumed run is about to log them again."""
        path = self.run_dir / "log.jsonl"
        if path.is_file():
            lines = path.read_text().splitlines(keepends=True)
            kept = [line for line in lines if _logged_step(line) <= self.step]
            if len(kept) < len(lines):
                with atomic_path(path) as tmp:
                    tmp.write_text("".join(kept))
        return open(path, "a")

    def fit(self, on_step: Callable[[int], None] | None = None) -> None:
        """Train to the end (or ``max_steps``). SIGINT / SIGTERM stop at the next step boundary: the
        checkpoint is saved, then ``TrainingInterrupted`` raised; ``--resume`` continues exactly."""
        t = self.cfg.train
        last = min(self.total_steps, t.max_steps or self.total_steps)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = self._open_log() if self.rank == 0 else None
        self.stop_signal = 0
        previous = self._catch_signals()
        self.model.train()
        bar = tqdm(
            total=last, initial=self.step, desc=f"distill {self.cfg.method}", unit="step", disable=not self.progress
        )
        started = time.time()
        try:
            while not self._stopping() and self.step < last:
                epoch, within = divmod(self.step, self.steps_per_epoch)
                loss, parts, grad_norm = self._train_step(epoch, within)
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if log and (self.step % t.log_every == 0 or self.step == last):
                    record = {"step": self.step, "epoch": epoch, "loss": loss.item(), **parts}
                    record.update(
                        lr=self.opt.param_groups[0]["lr"],
                        grad_norm=float(grad_norm),
                        elapsed_s=round(time.time() - started, 2),
                    )
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if self.step % t.checkpoint_every == 0:
                    self.save()
                if on_step:
                    on_step(self.step)
            self.save()
        finally:
            bar.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            if log:
                log.close()
        if self.stop_signal:
            message = (
                f"interrupted at step {self.step}: checkpoint saved to {self.checkpoint_path}; continue with --resume"
            )
            if self.rank == 0:
                print(f"\n{message}")
            raise TrainingInterrupted(message, self.stop_signal)
