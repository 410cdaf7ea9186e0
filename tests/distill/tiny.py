"""Small training sets for trainer tests: real LFW faces with the real teacher, or synthetic for mechanics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aird.config import from_dict
from aird.distill.config import ExperimentConfig
from aird.distill.data import TrainingSet


def tiny_config(tmp: Path, method: str = "aird", student: dict | None = None, **train) -> ExperimentConfig:
    return from_dict(ExperimentConfig, tiny_settings(tmp, method, student, **train))


def tiny_settings(tmp: Path, method: str = "aird", student: dict | None = None, **train) -> dict:
    """The tiny experiment as plain settings (what a YAML file holds); ``student`` defaults to the
    ResNet at 112 px, ``{"model": "lr_light", "input_size": 16}`` trains in milliseconds a step."""
    return {
        "name": "tiny",
        "method": method,
        "out_dir": str(tmp),
        "student": student or {"model": "dlib_resnet_bn", "input_size": 112},
        "degradation": {"res": [12, 16], "down": ["area", "bicubic"]},
        "train": {
            "epochs": 3,
            "batch_size": 8,
            "lr": 0.005,
            "warmup_steps": 2,
            "queue_size": 16,
            "checkpoint_every": 1000,
            "log_every": 1,
            "threads": 1,
            **train,
        },
        "eval": {"res": [16], "pairs": ["lr-lr"]},
    }


def synthetic_set(n: int = 32, classes: int = 4, seed: int = 0) -> TrainingSet:
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(n, 128)).astype(np.float32)
    return TrainingSet(
        chips=rng.integers(0, 255, (n, 150, 150, 3), dtype=np.uint8),
        labels=np.arange(n) % classes,
        digests=[f"synthetic-{i}" for i in range(n)],
        teacher=teacher,
        teacher_flip=teacher + 0.01,
        identities=[f"id{i}" for i in range(classes)],
    )
