"""Centred cosine at test time: does subtracting a student's mean embedding before the cosine help?

    python benchmarks/centering.py --student aird/models/assets/aird_fast.safetensors \\
        --student runs/bench-recipe/aird-A/student.safetensors --student runs/bench-recipe/aird-B/student.safetensors

A distilled student's LR embeddings sit in a narrow cone (the fast student's unit embeddings have a median
cosine of about 0.9 to their mean), so the cosine between two faces is mostly that shared part. Centring
removes it: each unit embedding minus the mean unit embedding of its side, normalised again. The means are
fixed before any test face is seen, from the faces ``benchmarks/make_student_anchor.py`` uses (the first
image of each LFW person absent from pairs.txt): the student's LR side on them degraded with its own
training mix of resolutions and filters, the HR side (dlib's teacher, which enrols HR galleries in every
figure here and in ``aird.load()``) on the HR chips. Nothing is tuned.

Conditions, each scored plain and centred on the same embeddings: LFW LR-LR at 16 / 12 / 8 px and HR-LR
at 16 px on the student's own test folds (10-fold accuracy, paired over the folds), and ORL 16 px
identification against the teacher's HR gallery (rank-1, paired over the probes). Records:
``docs/results/centering.json`` (model ``<student>`` and ``<student>+centred``) and ``centering.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from make_student_anchor import held_out_lr_faces, unit_embeddings  # noqa: E402  (the anchor's faces)

from aird.data.align import align_settings_for  # noqa: E402
from aird.data.chips import align_images  # noqa: E402
from aird.distill.data import SPLIT_TEST_FOLDS  # noqa: E402
from aird.eval.metrics import (  # noqa: E402
    cosine_similarity,
    identification_metrics,
    kfold_accuracy,
    similarity_matrix,
    verification_metrics,
)
from aird.eval.protocols import lfw_pairs, orl_identification  # noqa: E402
from aird.eval.records import environment, make_record, paired_difference, write_records  # noqa: E402
from aird.eval.runner import EvalConfig  # noqa: E402
from aird.models.embedder import TorchEmbedder, embed_chips  # noqa: E402
from aird.models.shipped import read_card  # noqa: E402
from aird.models.student import load_student  # noqa: E402
from aird.models.teacher import DlibTeacher  # noqa: E402
from aird.paths import data_root  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"
LR_LR = (16, 12, 8)
HR_LR = (16,)
MEAN_FACES = 1000


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def centred(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return unit(unit(x) - mean)


def side_means(model: torch.nn.Module, meta: dict, path: Path, teacher: DlibTeacher, root: Path) -> dict:
    """The mean unit embedding of the student's LR side and of the teacher's HR side, on held-out faces."""
    _, chips, faces = held_out_lr_faces(meta, path, root, MEAN_FACES)
    return {
        "lr": unit_embeddings(model, faces, int(meta["input_size"])).mean(0).numpy(),
        "hr": unit(teacher.embed(chips).astype(np.float64)).mean(0),
        "faces": len(chips),
    }


def student_records(spec: str, teacher: DlibTeacher, root: Path, command: str) -> list[dict]:
    started = time.time()
    path = Path(spec)
    model, meta = load_student(path)
    size = int(meta["input_size"])
    config = json.loads(meta.get("config") or "{}")
    split = config.get("data", {}).get("split", "all")
    name = read_card(path).get("name") or f"{path.parent.name}-student"
    base = TorchEmbedder(model, name, size)
    means = side_means(model, meta, path, teacher, root)
    cos = float(means["lr"] @ means["hr"] / np.linalg.norm(means["lr"]) / np.linalg.norm(means["hr"]))
    common = {
        "student": spec,
        "centring": {
            "lr_mean_norm": round(float(np.linalg.norm(means["lr"])), 4),
            "hr_mean_norm": round(float(np.linalg.norm(means["hr"])), 4),
            "cosine_lr_hr_means": round(cos, 4),
            "faces": f"{means['faces']} held-out LFW faces (first image of people absent from pairs.txt)",
            "lr_side": "the student, on those faces degraded with its training mix",
            "hr_side": "the teacher (dlib_resnet), on the HR chips",
        },
        "environment": environment(),  # with the git commit
        "command": command,
    }
    records = []

    def keep(fields: dict, plain: dict, centre: dict, extra_plain: dict, extra_centre: dict) -> None:
        for label, metrics, extra in ((name, plain, extra_plain), (f"{name}+centred", centre, extra_centre)):
            scoring = "centred cosine" if label.endswith("+centred") else "cosine"
            settings = {**common, "scoring": scoring, **extra, "wall_s": round(time.time() - started, 1)}
            records.append(make_record(**fields, model=label, metrics=metrics, settings=settings))

    folds = SPLIT_TEST_FOLDS[split]
    pairs = lfw_pairs(root, folds)
    chips = align_images(pairs.images(), align_settings_for("lfw"), progress=False)
    index = chips.index()
    left = np.array([index[p] for p in pairs.left])
    right = np.array([index[p] for p in pairs.right])
    labels = pairs.same.astype(int)
    hr = embed_chips(teacher, chips, None, False)
    for res in sorted(set(LR_LR) | set(HR_LR), reverse=True):
        probe = embed_chips(base, chips, EvalConfig(res=res, out_size=size).degradation(), False)
        for mode in ("lr-lr", "hr-lr"):
            if res not in (LR_LR if mode == "lr-lr" else HR_LR):
                continue
            gal, gal_mean = (probe, means["lr"]) if mode == "lr-lr" else (hr, means["hr"])
            out = {}
            for how, (g, p) in {
                "plain": (gal, probe),
                "centred": (centred(gal, gal_mean), centred(probe, means["lr"])),
            }.items():
                scores = cosine_similarity(g[left], p[right])
                metrics = verification_metrics(scores, labels, pairs.fold)
                metrics.pop("threshold_mean", None)
                extra = {"fold_accuracies": kfold_accuracy(scores, labels, pairs.fold)["fold_accuracies"]}
                out[how] = (metrics, extra)
            fields = dict(
                benchmark="lfw", task="verification", method="aird", adapt="off", res=res, pairs=mode, split=split
            )
            keep({**fields, "n": len(labels)}, out["plain"][0], out["centred"][0], out["plain"][1], out["centred"][1])
    orl = orl_identification(root)
    chips = align_images(orl.paths, align_settings_for("orl"), progress=False)
    orl = orl.without_missing(chips.index())
    ids = np.array(orl.labels)
    hr = embed_chips(teacher, chips, None, False)
    probe = embed_chips(base, chips, EvalConfig(res=16, out_size=size).degradation(), False)
    out = {}
    for how, (g, p) in {
        "plain": (hr, probe),
        "centred": (centred(hr, means["hr"]), centred(probe, means["lr"])),
    }.items():
        sim = similarity_matrix(p[orl.probes], g[orl.gallery])
        hits = ids[orl.gallery][sim.argmax(1)] == ids[orl.probes]
        metrics = identification_metrics(sim, ids[orl.probes], ids[orl.gallery], None)
        out[how] = (metrics, {"probe_hits": "".join("1" if h else "0" for h in hits), "gallery_model": teacher.name})
    fields = dict(benchmark="orl", task="identification", method="aird", adapt="off", res=16, pairs=None, split="all")
    keep({**fields, "n": len(orl.probes)}, out["plain"][0], out["centred"][0], out["plain"][1], out["centred"][1])
    return records


def table(records: list[dict]) -> list[str]:
    lines = [
        "| student | condition | plain | centred | centred − plain (points) | TAR@1e-3 plain → centred |",
        "|---|---|---:|---:|---:|---|",
    ]
    by = {(r["model"], r["benchmark"], r["res"], r["pairs"]): r for r in records}
    for (model, bench, res, mode), plain in by.items():
        if model.endswith("+centred"):
            continue
        cent = by[(f"{model}+centred", bench, res, mode)]
        metric = "rank1" if plain["task"] == "identification" else "accuracy"
        d = paired_difference(cent, plain)
        diff = f"{d[0]:+.2f} ± {d[1]:.2f}" if d else "—"
        tar = plain["metrics"].get("tar@far=1e-3")
        tar_text = f"{tar:.1%} → {cent['metrics']['tar@far=1e-3']:.1%}" if tar is not None else "—"
        cond = f"ORL {res} px (teacher's HR gallery)" if bench == "orl" else f"LFW {mode} {res} px ({plain['split']})"
        lines.append(
            f"| {model} | {cond} | {plain['metrics'][metric]:.2%} | {cent['metrics'][metric]:.2%} | {diff} | {tar_text} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", action="append", required=True, help="a student .safetensors (repeat)")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT / "centering.json")
    args = ap.parse_args()
    command = "python benchmarks/centering.py " + shlex.join(sys.argv[1:])
    root = data_root(args.data_root)
    torch.set_num_threads(2)
    teacher = DlibTeacher("torch", batch_size=64)
    records = [r for spec in args.student for r in student_records(spec, teacher, root, command)]
    write_records(args.out, records, command, merge=False)
    lines = [
        "# Centred cosine at test time\n",
        f"Reproduce: `{command}`. Records: `{args.out.name}`. Each difference is paired over the student's test "
        "folds (LFW) or the probes (ORL); the means are fixed from held-out faces before any test face "
        "(`benchmarks/centering.py`'s docstring).\n",
        *table(records),
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
