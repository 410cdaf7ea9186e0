"""A tiny real LFW pairs file and a tiny finished 'aird distill' run (teacher-initialised student) for tests."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import torch

from aird.eval.records import make_record, write_records
from aird.io import write_json
from aird.models import get_model
from aird.models.student import save_student

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def small_pairs_file(data_root: Path, path: Path) -> Path:
    """Two folds of 4 same + 4 different real LFW pairs (16 pairs, 27 images), in pairs.txt format."""
    lines = (data_root / "lfw" / "pairs.txt").read_text().splitlines()[1:]
    body = ["2\t4"]
    for fold in range(2):
        block = lines[fold * 600 : (fold + 1) * 600]
        body += block[:4] + block[300:304]
    path.write_text("\n".join(body) + "\n")
    return path


def tiny_run(run: Path, seed: int = 0) -> Path:
    """A run directory as 'aird distill' leaves it: student.safetensors (dlib_resnet_bn initialised from the
    teacher, nudged by ``seed``), config.json, data.json and results.json on split 'all'."""
    run.mkdir(parents=True, exist_ok=True)
    config = {
        "name": "aird-shipped",
        "method": "aird",
        "student": {"model": "dlib_resnet_bn", "input_size": 150},
        "degradation": {"res": [8, 12, 16, 20]},
        "data": {"split": "all", "pools": ["lfw", "celeba"]},
    }
    write_json(run / "config.json", config)
    pools = {
        "lfw": {"images": 9000, "kept": 9000, "dropped_by_leak_filter": 0, "no_face_detected": 3},
        "celeba": {"images": 500, "kept": 480, "dropped_by_leak_filter": 20, "no_face_detected": 1},
    }
    write_json(run / "data.json", {"split": "all", "pools": pools, "leak_threshold": 0.95})
    student = get_model("dlib_resnet_bn")
    with torch.no_grad():  # another "training run": one weight moved, so the fingerprint differs
        next(student.parameters()).view(-1)[0].add_(1e-2 * seed)
    save_student(run / "student.safetensors", student, "dlib_resnet_bn", 150, config=json.dumps(config))
    records = [
        make_record(
            benchmark="lfw",
            task="verification",
            model="aird-shipped",
            method="aird",
            adapt="off",
            res=res,
            pairs=mode,
            split="all",
            n=6000,
            metrics={"accuracy": acc + seed / 100},
            settings={},
        )
        for res, accs in ((16, (0.93, 0.95)), (12, (0.90, 0.92)), (8, (0.83, 0.85)))
        for mode, acc in zip(("lr-lr", "hr-lr"), accs)
    ]
    write_records(run / "results.json", records, "aird distill --config configs/shipped.yaml")
    return run
