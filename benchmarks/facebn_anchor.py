"""Which batch-norm layers should a stream adapt? The static study behind facebn-safe's ``select``.

For one student and a set of conditions, each condition's LR faces are embedded with the training
statistics (``off``) and with facebn-safe's steady state for each candidate start: the means of the BN
layers from the start to ``depth`` 0.75 moved by alpha 0.3 toward the condition's own means (the first
512 faces in a seeded order; variances kept), as facebn-safe does once its memory is full. For each it
prints accuracy (ORL: rank-1 against the teacher's HR gallery; LFW: 10-fold LR-LR verification accuracy
on the given folds) and label-free signals, kept in each record's ``settings.signals``: the one
facebn-safe chooses by, the cosine between the condition's mean unit embedding and the teacher's anchor
(``aird.adapt.safe.TEACHER_ANCHOR``); with ``--own-anchor`` the cosine to the student's own anchor
(``benchmarks/make_student_anchor.py``); with ``--tail`` how far the inputs of the BN layers past
``depth``, which no candidate adapts, are from their training statistics (``tail_divergence``); with
``--flip`` how much more a face agrees with its mirror image than with other faces (``flip_margin``).

    python benchmarks/facebn_anchor.py --student runs/aird-B/student.safetensors --folds B --own-anchor \\
        --tail --out docs/results/facebn-anchor/anchor-B.json

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

sys.path.insert(0, str(Path(__file__).parent))
from make_student_anchor import anchor_entry  # noqa: E402  (a student's own anchor, when its card has none)

from aird.adapt.facebn import batchnorm_layers  # noqa: E402
from aird.adapt.safe import card_anchor, gaussian_kl, layer_range, load_anchor
from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.data.degrade import Degradation
from aird.distill.data import SPLIT_TEST_FOLDS
from aird.eval.metrics import kfold_accuracy
from aird.eval.protocols import lfw_pairs, orl_identification
from aird.eval.records import write_records
from aird.models.embedder import embed_chips, faces_to_tensor
from aird.models.shipped import read_card
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


def feed_layers(model: torch.nn.Module, layers: list, faces: np.ndarray, size: int, seen) -> None:
    """Run ``faces`` through ``model`` with ``seen(i, x)`` called on the (float64) input of each of ``layers``."""

    def watch(i: int):
        def hook(_module, inputs) -> None:  # returns None: the input goes on unchanged
            seen(i, inputs[0].double())

        return hook

    hooks = [bn.register_forward_pre_hook(watch(i)) for i, bn in enumerate(layers)]
    try:
        with torch.no_grad():
            for i in range(0, len(faces), 64):
                model(faces_to_tensor(faces[i : i + 64], size))
    finally:
        for h in hooks:
            h.remove()


def tail_divergence(model: torch.nn.Module, faces: np.ndarray, size: int, depth: float = 0.75) -> float:
    """How unlike training the inputs of the BN layers past ``depth`` (which no candidate adapts) are on ``faces``:
    the Gaussian KL divergence of each channel's population statistics from its running statistics, averaged
    over channels and layers. A label-free signal like the anchor's, from the model's own statistics."""
    layers = list(batchnorm_layers(model).values())
    tail = layers[layer_range(depth, 1.0, len(layers)).start :]
    moments = [[0.0, 0.0, 0] for _ in tail]

    def accumulate(i: int, x: torch.Tensor) -> None:
        x = x.transpose(0, 1).flatten(1)  # (C, N * H * W)
        moments[i][0] += x.sum(1)
        moments[i][1] += (x * x).sum(1)
        moments[i][2] += x.shape[1]

    feed_layers(model, tail, faces, size, accumulate)
    kls = [
        gaussian_kl(s1 / n, s2 / n - (s1 / n) ** 2, bn.running_mean, bn.running_var + bn.eps).mean()
        for bn, (s1, s2, n) in zip(tail, moments)
    ]
    return float(torch.stack(kls).mean())


def flip_signals(e: np.ndarray, mirrored: np.ndarray) -> dict[str, float]:
    """A face's agreement with its own mirror image, and how far that exceeds its agreement with other faces.

    Identity survives a horizontal flip; capture noise and the shift's artefacts do not line up with their
    mirror image. So statistics under which a face agrees more with its mirror than with other faces
    separate identity from nuisance better: a label-free proxy of discriminability. The margin, not the
    agreement alone, because statistics that pull every face to one vector would maximise the agreement."""
    own = float((e * mirrored).sum(1).mean())
    mean = e.mean(0)
    n = len(e)
    others = float((n * n * (mean @ mean) - n) / (n * (n - 1)))  # mean cosine over pairs i != j
    return {"flip_agreement": own, "flip_margin": own - others}


def steady_state(
    model: torch.nn.Module, faces: np.ndarray, size: int, start: float, depth: float = 0.75, alpha: float = 0.3
):
    """A copy of ``model`` whose BN means from ``start`` to ``depth`` moved by ``alpha`` toward those of ``faces``."""
    adapted = copy.deepcopy(model)
    layers = list(batchnorm_layers(adapted).values())
    adapted_layers = layer_range(start, depth, len(layers))  # as facebn-safe picks them
    sums = [torch.zeros_like(bn.running_mean, dtype=torch.float64) for bn in layers]

    def accumulate(i: int, x: torch.Tensor) -> None:
        sums[i].add_(x.reshape(x.shape[0], x.shape[1], -1).mean(2).sum(0))  # (N, C) or (N, C, H, W)

    feed_layers(adapted, layers, faces, size, accumulate)
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
    ap.add_argument(
        "--own-anchor",
        action="store_true",
        help="also the cosine to the student's own anchor (its card's, else measured as make_student_anchor.py does)",
    )
    ap.add_argument(
        "--tail", action="store_true", help="also how far the unadapted deep BN layers' inputs are from training"
    )
    ap.add_argument(
        "--flip",
        action="store_true",
        help="also how much more a face agrees with its mirror image than with other faces (flip_margin)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = data_root(args.data_root)
    student, meta = load_student(args.student)
    student.eval()
    size = int(meta["input_size"])
    # Each label-free signal: the cosine of a condition's mean embedding to an anchor.
    anchors = {"anchor_cosine": load_anchor()[0].numpy()}
    if args.own_anchor:
        own = card_anchor(read_card(args.student), args.student)
        if own is None:
            own = np.asarray(anchor_entry(student, meta, Path(args.student), root)["vector"], dtype=np.float32)
        anchors["own_anchor_cosine"] = own
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
    columns = [*anchors, *(["tail_kl"] if args.tail else []), *(["flip_agreement", "flip_margin"] if args.flip else [])]
    print("| condition | layers adapted from | accuracy (%) | " + " | ".join(columns) + " |")
    print("|---|---|---:|" + "---:|" * len(columns))
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
            signals = {k: float(mean @ a / np.linalg.norm(mean) / np.linalg.norm(a)) for k, a in anchors.items()}
            if args.tail:
                signals["tail_kl"] = tail_divergence(model, lr, size)
            if args.flip:
                signals.update(flip_signals(e, embed(model, np.ascontiguousarray(lr[:, :, ::-1]), size)))
            label = "off" if start is None else f"{start:g}"
            shown = " | ".join(f"{v:.4f}" for v in signals.values())
            print(f"| {name} | {label} | {100 * acc:.2f} | {shown} |", flush=True)
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
                    "metrics": {metric: acc},
                    "settings": {
                        # label-free signals (cosines may be negative, a KL unbounded): not fractions, not metrics
                        "signals": signals,
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
