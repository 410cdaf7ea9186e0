"""An experiment end to end: training set -> teacher head -> distillation -> student export -> test folds."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from aird.distill.config import ExperimentConfig
from aird.distill.data import SPLIT_TEST_FOLDS, TrainingSet, build_training_set, subsample
from aird.distill.trainer import Trainer, init_distributed, load_checkpoint, world_info
from aird.errors import AirdError, ConfigError, ModelFileError
from aird.eval.records import write_records
from aird.eval.runner import EvalConfig, run_verification
from aird.io import atomic_path, write_json
from aird.models.embedder import Embedder, FlipFused, TorchEmbedder
from aird.models.heads import CosineClassifier, fit_cosine_head, load_head, save_head
from aird.models.registry import get_model
from aird.models.student import load_student, save_student
from aird.models.teacher import DlibTeacher
from aird.paths import cache_dir, data_root

# What ``aird distill`` writes into a run directory. Another file there (experiment.yaml, written by
# run_in_subprocesses before the run starts) is the run's input, not a previous run.
RUN_FILES = (
    "checkpoint.pt",
    "student.safetensors",
    "student_head.safetensors",
    "log.jsonl",
    "config.json",
    "data.json",
    "results.json",
    "scores-*.npz",
)


class RunDirError(AirdError):
    """The run directory already holds another run."""


def previous_run(run_dir: Path) -> list[Path]:
    """The files of an earlier run in ``run_dir``."""
    return sorted(p for pattern in RUN_FILES for p in run_dir.glob(pattern))


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool, delete: bool = True) -> None:
    """Refuse to mix two runs in one directory: continue the earlier run (``resume``), or delete its
    files first (``overwrite``; only when ``delete``: one process of a torchrun does it)."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the directory, --overwrite deletes it: pass one of them")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory; pass another --out-dir")
    old = previous_run(run_dir)
    if not old or resume:
        return
    if not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(p.name for p in old)}); continue it with --resume, "
            "or delete it and start over with --overwrite"
        )
    if delete:
        for path in old:
            path.unlink()


def training_set(cfg: ExperimentConfig, teacher: Embedder, progress: bool) -> TrainingSet:
    rank, world = world_info()
    root = data_root(cfg.data.data_root)
    # Rank 0 fills the caches first; the others then read them instead of aligning in parallel.
    if world > 1 and rank != 0:
        dist.barrier()
    data = build_training_set(
        root, cfg.data.split, teacher, cfg.data.pools, cfg.data.leak_threshold, progress=progress and rank == 0
    )
    if world > 1 and rank == 0:
        dist.barrier()
    return subsample(data, cfg.data.subsample, cfg.train.seed)


def train_teacher_head(cfg: ExperimentConfig, data: TrainingSet) -> CosineClassifier:
    """C_t: a cosine classifier over the training identities, fitted on the frozen teacher's features.

    Fitting over thousands of identities takes minutes on a CPU and depends only on the features,
    labels and head settings, so the result is cached under that key.
    """
    h = hashlib.sha1(np.ascontiguousarray(data.teacher).tobytes())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    h.update(json.dumps([asdict(cfg.head), cfg.train.seed]).encode())
    path = cache_dir("heads") / f"{h.hexdigest()[:20]}.safetensors"
    if path.is_file():
        try:
            return load_head(path)
        except ModelFileError:  # a damaged cache entry is refitted, never trusted
            path.unlink(missing_ok=True)
    head = fit_cosine_head(
        data.teacher,
        data.labels,
        data.num_classes,
        cfg.head.scale,
        cfg.head.margin,
        cfg.head.steps,
        seed=cfg.train.seed,
    )
    save_head(path, head)
    return head


def evaluate_student(cfg: ExperimentConfig, student: torch.nn.Module, teacher: Embedder, progress: bool) -> list[dict]:
    """Verification on the split's own test folds, each fold's threshold chosen on the split's other folds."""
    root = data_root(cfg.data.data_root)
    embedder: Embedder = TorchEmbedder(student.eval(), cfg.name, cfg.student.input_size)
    if cfg.eval.flip_fuse:
        embedder = FlipFused(embedder)
    records = []
    for res in cfg.eval.res:
        for mode in cfg.eval.pairs:
            ecfg = EvalConfig(
                res=res,
                pairs=mode,
                folds=SPLIT_TEST_FOLDS[cfg.data.split],
                out_size=cfg.student.input_size,
                method=cfg.method,
                seed=cfg.train.seed,
            )
            result = run_verification(embedder, ecfg, root, progress, gallery_embedder=teacher)
            rec = result.record
            rec["settings"]["experiment"] = asdict(cfg)
            records.append(rec)
            # Per-pair scores, so both splits can be merged into the 6,000-pair "all" figure.
            with atomic_path(scores_path(cfg.run_dir(), res, mode)) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, scores=result.scores, labels=result.labels, folds=result.folds)
    return records


def scores_path(run_dir: Path, res: int, pairs: str) -> Path:
    return Path(run_dir) / f"scores-{res}-{pairs}.npz"


def run_scores(run_dir: Path, res: int, pairs: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(scores, labels, folds) a run saved for one resolution and pair mode; None if it saved none."""
    path = scores_path(run_dir, res, pairs)
    if not path.is_file():
        return None
    with np.load(path) as z:
        return z["scores"], z["labels"], z["folds"]


def load_init(path: str | Path, cfg: ExperimentConfig) -> torch.nn.Module:
    """The ``--init`` (or ``student.init``) student, which must be of the config's architecture (its weights
    would not mean the same in another, and the result would be saved under the config's model name), or a
    full ``dlib_resnet_bn`` student when the config's is a slim one: it is then channel-pruned into it."""
    from aird.models.prune import FULL_MODEL, SLIM_KEEP, prune_inner

    student, meta = load_student(path)
    if meta["model"] == FULL_MODEL and cfg.student.model in SLIM_KEEP:
        return prune_inner(student, SLIM_KEEP[cfg.student.model])
    if meta["model"] != cfg.student.model:
        raise ConfigError(
            f"--init {path} is a {meta['model']!r} student, but student.model is {cfg.student.model!r}: "
            f"pass a {cfg.student.model} student, or set student.model: {meta['model']}"
        )
    return student


def run_experiment(
    cfg: ExperimentConfig,
    resume: bool = False,
    init: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Train, save and test one student in ``cfg.run_dir()``. A directory holding an earlier run is
    refused unless ``resume`` (continue it from its checkpoint) or ``overwrite`` (delete it first)."""
    device = init_distributed()
    rank, world = world_info()
    run_dir = cfg.run_dir()
    # The init is read first: a missing or unfitting file fails before the run's folder is touched.
    init = init or cfg.student.init_path()
    init_student = load_init(init, cfg) if init else None
    prepare_run_dir(run_dir, resume, overwrite, delete=rank == 0)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    started = time.time()
    teacher = DlibTeacher("torch")
    data = training_set(cfg, teacher, progress)
    head = train_teacher_head(cfg, data)
    # Seeded here, after everything that may or may not touch the global RNG (caches hit or missed),
    # so the same config builds the same student.
    torch.manual_seed(cfg.train.seed)
    student = init_student if init_student is not None else get_model(cfg.student.model)
    trainer = Trainer(cfg, data, student, head, run_dir, device, progress)
    if resume:
        if trainer.checkpoint_path.is_file():
            trainer.load_state(load_checkpoint(trainer.checkpoint_path), trainer.checkpoint_path)
        elif rank == 0:
            print(f"no checkpoint at {trainer.checkpoint_path}: starting from step 0")
    if rank == 0:
        write_json(run_dir / "config.json", asdict(cfg))
        write_json(run_dir / "data.json", data.report)
    trainer.fit()
    train_s = time.time() - started
    if rank == 0:
        save_student(
            run_dir / "student.safetensors",
            trainer.model.student,
            cfg.student.model,
            cfg.student.input_size,
            method=cfg.method,
            run=run_dir.name,
            config=json.dumps(asdict(cfg)),
        )
        save_head(run_dir / "student_head.safetensors", trainer.model.student_head)
        records = evaluate_student(cfg, trainer.model.student, teacher, progress)
        for rec in records:
            rec["settings"].update(
                train_wall_s=round(train_s, 1), world_size=world, steps=trainer.step, data=data.report
            )
        write_records(run_dir / "results.json", records, command=f"aird distill --config <{cfg.name}>")
    if world > 1:
        dist.barrier()
    return run_dir


def run_in_subprocesses(configs: list[ExperimentConfig], jobs: int, quiet: bool = False, resume: bool = False) -> None:
    """Train ``configs`` as ``aird distill`` processes, ``jobs`` at a time with the cores split evenly
    (each writes its config to ``<run dir>/experiment.yaml``): the same runs as in-process, side by side.
    ``resume``: continue runs an interruption left in their directories (as ``aird distill --resume``)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending = list(configs)
    while pending:
        batch, pending = pending[:jobs], pending[jobs:]
        procs = []
        for cfg in batch:
            out = cfg.run_dir()
            out.mkdir(parents=True, exist_ok=True)
            (out / "experiment.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
            cmd = [sys.executable, "-m", "aird.cli", "distill", "--config", str(out / "experiment.yaml")]
            cmd += (["--quiet"] if quiet else []) + (["--resume"] if resume else [])
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            procs.append((cfg, subprocess.Popen(cmd, env=env)))
        failed = [(cfg, proc.wait()) for cfg, proc in procs]
        failed = [(cfg, rc) for cfg, rc in failed if rc != 0]
        if failed:
            raise RuntimeError(
                "; ".join(
                    f"training {c.name} split {c.data.split} failed (exit {rc}, log in {c.run_dir()})"
                    for c, rc in failed
                )
            )
