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
from aird.distill.data import SPLIT_TEST_FOLDS, TrainingSet, build_training_set
from aird.distill.trainer import Trainer, init_distributed, load_checkpoint, world_info
from aird.errors import ModelFileError
from aird.eval.records import write_records
from aird.eval.runner import EvalConfig, run_verification
from aird.io import atomic_path, write_json
from aird.models.embedder import Embedder, FlipFused, TorchEmbedder
from aird.models.heads import CosineClassifier, fit_cosine_head, load_head, save_head
from aird.models.registry import get_model
from aird.models.student import load_student, save_student
from aird.models.teacher import DlibTeacher
from aird.paths import cache_dir, data_root


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
    return data


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
            with atomic_path(cfg.run_dir() / f"scores-{res}-{mode}.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, scores=result.scores, labels=result.labels, folds=result.folds)
    return records


def run_experiment(
    cfg: ExperimentConfig, resume: bool = False, init: str | Path | None = None, progress: bool = True
) -> Path:
    device = init_distributed()
    rank, world = world_info()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    run_dir = cfg.run_dir()
    started = time.time()
    teacher = DlibTeacher("torch")
    data = training_set(cfg, teacher, progress)
    head = train_teacher_head(cfg, data)
    student = get_model(cfg.student.model)
    if init:
        student, _ = load_student(init)
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


def run_in_subprocesses(configs: list[ExperimentConfig], jobs: int, quiet: bool = False) -> None:
    """Train ``configs`` as ``aird distill`` processes, ``jobs`` at a time with the cores split evenly
    (each writes its config to ``<run dir>/experiment.yaml``): the same runs as in-process, side by side."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending = list(configs)
    while pending:
        batch, pending = pending[:jobs], pending[jobs:]
        procs = []
        for cfg in batch:
            out = cfg.run_dir()
            out.mkdir(parents=True, exist_ok=True)
            (out / "experiment.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
            cmd = [sys.executable, "-m", "aird.cli", "distill", "--config", str(out / "experiment.yaml")] + (
                ["--quiet"] if quiet else []
            )
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
