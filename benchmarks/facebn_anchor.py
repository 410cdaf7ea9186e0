"""Which batch-norm layers should a stream adapt? The static study behind facebn-safe's ``select``.

For one student and a set of conditions, each condition's LR faces are embedded with the training
statistics (``off``) and with facebn-safe's steady state for each candidate start: the means of the BN
layers from the start to ``depth`` 0.75 moved by alpha 0.3 toward the condition's own means (the first
512 faces in a seeded order; variances kept), as facebn-safe does once its memory is full. For each it
prints accuracy (ORL: rank-1 against the teacher's HR gallery; LFW: 10-fold LR-LR verification accuracy
on the given folds) and the label-free signal facebn-safe chooses by: the cosine between the condition's
mean unit embedding and the teacher's anchor (``aird.adapt.safe.TEACHER_ANCHOR``).

    python benchmarks/facebn_anchor.py --student runs/aird-B/student.safetensors --folds B \\
        --out docs/results/facebn-anchor/anchor-B.json

A diagnostic: it read test conditions (ORL, the split's LFW test folds), so it chose nothing by itself;
docs/facebn.md says what was chosen where.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from aird.adapt.facebn import batchnorm_layers
from aird.adapt.safe import layer_range, load_anchor
from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.data.degrade import Degradation
from aird.distill.data import SPLIT_TEST_FOLDS
from aird.eval.metrics import kfold_accuracy
from aird.eval.protocols import lfw_pairs, orl_identification
from aird.eval.records import write_records
from aird.models.embedder import embed_chips, faces_to_tensor
from aird.models.student import load_student
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

NIGHT = {"gamma": 2.5, "noise_std": 12.0}
MIXED = {"grayscale": True, "blur_sigma": 2.0, "jpeg_quality": 20, "noise_std": 12.0, "gamma": 2.5}
CONDITIONS = {
    "orl": ("orl", {}),
    "orl-night": ("orl", NIGHT),
    "lfw": ("lfw", {}),
    "lfw-mixed": ("lfw", MIXED),
    "lfw-jpeg20": ("lfw", {"jpeg_quality": 20}),
    "lfw-night": ("lfw", NIGHT),
}
STARTS = (None, 0.0, 0.25, 0.5)


def unit(e: np.ndarray) -> np.ndarray:
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def embed(model: torch.nn.Module, faces: np.ndarray, size: int) -> np.ndarray:
    with torch.no_grad():
        return unit(
            np.concatenate(
                [model(faces_to_tensor(faces[i : i + 64], size)).float().numpy() for i in range(0, len(faces), 64)]
            )
        )


def steady_state(
    model: torch.nn.Module, faces: np.ndarray, size: int, start: float, depth: float = 0.75, alpha: float = 0.3
):
    """A copy of ``model`` whose BN means from ``start`` to ``depth`` moved by ``alpha`` toward those of ``faces``."""
    adapted = copy.deepcopy(model)
    layers = list(batchnorm_layers(adapted).values())
    adapted_layers = layer_range(start, depth, len(layers))  # as facebn-safe picks them
    sums = [torch.zeros_like(bn.running_mean, dtype=torch.float64) for bn in layers]

    def measure(i: int):
        def hook(_module, inputs) -> None:  # returns None: the input goes on unchanged
            sums[i].add_(inputs[0].double().mean(dim=(2, 3)).sum(0))

        return hook

    hooks = [bn.register_forward_pre_hook(measure(i)) for i, bn in enumerate(layers)]
    with torch.no_grad():
        for i in range(0, len(faces), 64):
            adapted(faces_to_tensor(faces[i : i + 64], size))
    for h in hooks:
        h.remove()
    for i, bn in enumerate(layers):
        if i in adapted_layers:
            bn.running_mean.mul_(1 - alpha).add_(alpha * (sums[i] / len(faces)).to(bn.running_mean.dtype))
    return adapted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="student .safetensors")
    ap.add_argument("--folds", choices=sorted(SPLIT_TEST_FOLDS), required=True, help="LFW folds to test on")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", type=Path, required=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    root = data_root(args.data_root)
    student, meta = load_student(args.student)
    student.eval()
    size = int(meta["input_size"])
    anchor = load_anchor()[0].numpy()
    teacher = DlibTeacher("torch")
    orl = orl_identification(root)
    orl_chips = align_images(orl.paths, align_settings_for("orl", 150), progress=False)
    orl_hr = unit(embed_chips(teacher, orl_chips, None, False))
    pairs = lfw_pairs(root, SPLIT_TEST_FOLDS[args.folds])
    images = pairs.images()
    lfw_chips = align_images(images, align_settings_for("lfw", 150), progress=False)
    index = {p: i for i, p in enumerate(images)}
    left, right = np.array([index[p] for p in pairs.left]), np.array([index[p] for p in pairs.right])
    labels = np.array(orl.labels)
    records = []
    print("| condition | layers adapted from | accuracy (%) | cos(mean embedding, anchor) |")
    print("|---|---|---:|---:|")
    for name in args.conditions:
        data, shift = CONDITIONS[name]
        chips = orl_chips if data == "orl" else lfw_chips
        lr = Degradation(res=16, down="area", up="bicubic", out_size=size, seed=0, **shift).batch(
            chips.chips, list(chips.digests)
        )
        sample = lr[np.random.default_rng(0).permutation(len(lr))[:512]]
        for start in STARTS:
            model = student if start is None else steady_state(student, sample, size, start)
            e = embed(model, lr, size)
            if data == "orl":
                hits = labels[orl.gallery][(e[orl.probes] @ orl_hr[orl.gallery].T).argmax(1)] == labels[orl.probes]
                acc, metric = float(hits.mean()), "rank1"
            else:
                scores = (e[left] * e[right]).sum(1)
                acc = float(np.mean(kfold_accuracy(scores, pairs.same.astype(int), pairs.fold)["fold_accuracies"]))
                metric = "accuracy"
            mean = e.mean(0)
            signal = float(mean @ anchor / np.linalg.norm(mean))
            label = "off" if start is None else f"{start:g}"
            print(f"| {name} | {label} | {100 * acc:.2f} | {signal:.4f} |", flush=True)
            records.append(
                {
                    "benchmark": f"facebn-anchor/{name}",
                    "task": "identification" if data == "orl" else "verification",
                    "model": Path(args.student).parent.name,
                    "method": meta.get("method", "aird"),
                    "adapt": "off" if start is None else f"static-from-{start:g}",
                    "res": 16,
                    "pairs": None if data == "orl" else "lr-lr",
                    "split": args.folds,
                    "n": int(len(orl.probes) if data == "orl" else len(pairs)),
                    "metrics": {metric: acc, "anchor_cosine": signal},
                    "settings": {
                        "student": args.student,
                        "shift": shift,
                        "adaptation": {
                            "start": start,
                            "depth": 0.75,
                            "alpha": 0.3,
                            "means_only": True,
                            "faces": len(sample),
                        },
                    },
                }
            )
    write_records(args.out, records, "python benchmarks/facebn_anchor.py " + shlex.join(argv), merge=False)
    print(f"records written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
