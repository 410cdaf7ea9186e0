"""Every distillation method on the same student, data, epochs and seed; the teacher on LR as reference.

    python benchmarks/distill.py [--methods aird kd ...] [--splits A B] [--config configs/aird.yaml]
                                 [--epochs N] [--runs runs/bench] [--tag NAME]

For each method and split, trains with the config (method swapped, everything else equal) unless the
run already has results (so methods can run one by one and merge), then merges both splits' per-pair
scores into the 6,000-pair ``split: all`` figure (each fold's threshold chosen on the other folds of its
own split). Writes docs/results/distill.json, distill.md and score-distribution plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.data.degrade import Degradation
from aird.data.lfw import LFW
from aird.distill.config import load_experiment
from aird.distill.data import SPLIT_TEST_FOLDS
from aird.distill.methods import METHODS
from aird.distill.run import run_experiment, run_in_subprocesses, run_scores
from aird.eval.metrics import kfold_accuracy, merged_verification_metrics
from aird.eval.plots import plot_score_distributions
from aird.eval.records import environment, load_records, make_record, markdown_table, paired_fold_table, write_records
from aird.eval.runner import EvalConfig, run_verification
from aird.eval.speed import measure_speed
from aird.models.embedder import TorchEmbedder
from aird.models.student import load_student
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "results"
BASELINES = ["none", "kd", "feature-l2", "cosine", "rkd", "aird-ild", "aird-rld", "aird"]


def method_losses(overrides: dict, method: str) -> dict:
    """The config's per-term settings for the terms this method has; ``none`` (classification only)
    keeps its own cls weight, since the config may switch classification off for the others."""
    return {k: v for k, v in overrides.items() if k in METHODS[method] and not (method == "none" and k == "cls")}


def embedding_speed(student_file: Path, res: int, faces: int = 512) -> dict:
    """Faces/s at batch 64 and latency at batch 1, over every core, on real LFW faces degraded to ``res``
    and resized to the student's input: a figure for an idle machine (the benchmark's last step)."""
    student, meta = load_student(student_file)
    size = int(meta["input_size"])
    lfw = LFW(data_root(None))
    paths = [it.path for it in lfw.folder().items[:faces]]
    chips = align_images(paths, align_settings_for("lfw"), progress=False)
    deg = Degradation(res=res, out_size=size, seed=0)
    lr = np.stack([deg(c, d) for c, d in zip(chips.chips, chips.digests)])
    embedder = TorchEmbedder(student, "speed", size, batch_size=64)
    speed = measure_speed({"student": embedder}, lr, threads=os.cpu_count() or 1)["student"]
    return {**speed["metrics"], "speed_threads": speed["settings"]["threads"]}


def run_dir(runs: Path, method: str, split: str) -> Path:
    return runs / f"{method}-{split}"


def teacher_parts(res: int, mode: str, root: Path | None) -> tuple[list, dict]:
    teacher = DlibTeacher("torch")
    parts, settings = [], {}
    for split, folds in SPLIT_TEST_FOLDS.items():
        r = run_verification(teacher, EvalConfig(res=res, pairs=mode, folds=folds), root, progress=False)
        parts.append((r.scores, r.labels, r.folds))
        settings = r.record["settings"]
    return parts, settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "aird.yaml")
    ap.add_argument("--methods", nargs="+", default=BASELINES, choices=sorted(METHODS))
    ap.add_argument("--splits", nargs="+", default=["A", "B"], choices=["A", "B"])
    ap.add_argument("--epochs", type=int, default=None, help="override the config's epochs (same for every method)")
    ap.add_argument("--runs", type=Path, default=None, help="run directories (default runs/bench[-TAG])")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--tag",
        default="",
        help="name a study run with another config: its runs and its distill-TAG.{json,md,png} stay apart",
    )
    ap.add_argument("--jobs", type=int, default=1, help="train this many splits at once, cores shared between them")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--speed",
        action="store_true",
        help="also time each student's embedding (batch 64 and 1; run on an idle machine)",
    )
    args = ap.parse_args()
    command = "python benchmarks/distill.py " + shlex.join(sys.argv[1:])
    base = load_experiment(args.config)
    stem = f"distill-{args.tag}" if args.tag else "distill"
    args.runs = args.runs or REPO / "runs" / ("bench-" + args.tag if args.tag else "bench")
    json_path = args.out / f"{stem}.json"
    records = []
    for method in args.methods:
        todo = []
        for split in args.splits:
            out = run_dir(args.runs, method, split)
            if (out / "results.json").is_file():
                print(f"{method} split {split}: results exist in {out}, reusing")
                continue
            cfg = dataclasses.replace(
                base,
                name=method,
                method=method,
                losses=method_losses(base.losses, method),
                data=dataclasses.replace(base.data, split=split),
                out_dir=str(out),
            )
            if args.epochs:
                cfg.train = dataclasses.replace(cfg.train, epochs=args.epochs)
            todo.append(cfg)
        if args.jobs > 1 and len(todo) > 1:
            # resume: a study stopped part-way (Ctrl-C, a crash) continues where it stopped
            run_in_subprocesses(todo, args.jobs, args.quiet, resume=True)
        else:
            for cfg in todo:
                run_experiment(cfg, resume=True, progress=not args.quiet)
        for split in args.splits:
            for rec in load_records(run_dir(args.runs, method, split) / "results.json"):
                records.append({**rec, "split": split})
    # split "all": both splits' students, 6,000 pairs
    if sorted(args.splits) == ["A", "B"]:
        dists, thresholds = {}, {}
        for method in args.methods:
            per_split = [load_records(run_dir(args.runs, method, s) / "results.json") for s in ("A", "B")]
            for rec_a in per_split[0]:
                res, mode = rec_a["res"], rec_a["pairs"]
                parts = []
                for s in ("A", "B"):
                    part = run_scores(run_dir(args.runs, method, s), res, mode)
                    if part is None:
                        raise SystemExit(
                            f"distill.py: {run_dir(args.runs, method, s)} saved no scores for {res} px {mode}; "
                            "move the run away so that it is trained and evaluated again"
                        )
                    parts.append(part)
                metrics = merged_verification_metrics(parts)
                threshold = metrics.pop("threshold_mean")
                if args.speed and mode == "lr-lr":
                    speed = embedding_speed(run_dir(args.runs, method, "A") / "student.safetensors", res)
                    metrics.update({k: v for k, v in speed.items() if k != "speed_threads"})
                    rec_a["settings"]["speed_threads"] = speed["speed_threads"]
                settings = {
                    **rec_a["settings"],
                    "merged_runs": [str(run_dir(args.runs, method, s)) for s in ("A", "B")],
                    "train_wall_s_per_split": [r[0]["settings"].get("train_wall_s") for r in per_split],
                    # folds 1-10 in order, for paired comparisons between methods
                    "fold_accuracies": [a for p in parts for a in kfold_accuracy(*p)["fold_accuracies"]],
                }
                records.append(
                    make_record(
                        **{
                            **rec_a,
                            "split": "all",
                            "n": sum(len(p[0]) for p in parts),
                            "metrics": metrics,
                            "settings": settings,
                        }
                    )
                )
                if res == 16 and mode == "lr-lr" and method == "aird":
                    dists["AIRD student, 16 px LR-LR"] = (
                        np.concatenate([p[0] for p in parts]),
                        np.concatenate([p[1] for p in parts]),
                    )
                    thresholds["AIRD student, 16 px LR-LR"] = threshold
        for res in base.eval.res:
            for mode in base.eval.pairs:
                parts, settings = teacher_parts(res, mode, None)
                metrics = merged_verification_metrics(parts)
                threshold = metrics.pop("threshold_mean")
                records.append(
                    make_record(
                        benchmark="lfw",
                        task="verification",
                        model="dlib_resnet",
                        method="teacher",
                        adapt="off",
                        res=res,
                        pairs=mode,
                        split="all",
                        n=6000,
                        metrics=metrics,
                        settings={**settings, "environment": environment()},
                    )
                )
                if res == 16 and mode == "lr-lr":
                    dists["teacher on LR, 16 px LR-LR"] = (
                        np.concatenate([p[0] for p in parts]),
                        np.concatenate([p[1] for p in parts]),
                    )
                    thresholds["teacher on LR, 16 px LR-LR"] = threshold
        if len(dists) == 2:  # only when this call (re)trained or reused the AIRD runs
            plot_score_distributions(
                dists,
                args.out / f"{stem}_scores_16px.png",
                thresholds=thresholds,
                title="LFW 16 px LR-LR: genuine vs impostor cosine (6,000 pairs)",
            )
    write_records(json_path, records, command)
    allrecs = [r for r in load_records(json_path) if r["split"] == "all"]
    lines = [
        "# Distillation: every method, same student, data, epochs and seed\n",
        f"Reproduce: `{command}` (records: `{stem}.json`; split `all` = both splits' students on their own "
        "test folds, 6,000 pairs).\n",
        f"Budget, the same for every method: student `{base.student.model}` at {base.student.input_size} px, "
        f"{args.epochs or base.train.epochs} epochs of batch {base.train.batch_size}, seed {base.train.seed}, "
        f"training resolutions {base.degradation.res}, pools {base.data.pools}. Methods are named as in "
        "`aird/distill/methods.py`; the config's loss settings apply to the terms each method has.\n",
    ]
    walls = {r["method"]: r["settings"].get("train_wall_s_per_split") for r in allrecs if r["method"] != "teacher"}
    lines.append(
        "Training wall time per split (s, split A / B): "
        + "; ".join(f"{m} {w[0]:.0f} / {w[1]:.0f}" for m, w in walls.items() if w and None not in w)
        + "\n"
    )
    timed = [r for r in allrecs if "faces_per_s" in r["metrics"]]
    if timed:
        lines += [
            "\n## Embedding speed of the student, LR faces (faces/s at batch 64, all cores)\n",
            markdown_table(timed, ["method"], "res", "faces_per_s", "{:,.0f}"),
            "\nLatency at batch 1, p50 (ms):\n",
            markdown_table(timed, ["method"], "res", "p50_ms", "{:.2f}"),
        ]
    for mode in ("lr-lr", "hr-lr"):
        lines += [
            f"\n## LFW 10-fold accuracy, {mode}\n",
            markdown_table([r for r in allrecs if r["pairs"] == mode], ["method"], "res", "accuracy", "{:.2%}"),
        ]
    paired = paired_fold_table(allrecs, "aird")
    if paired:
        lines += [
            "\n## aird minus each method, paired over the 10 folds (points, mean ± standard error)\n",
            "Each fold's test pairs are the same for every method, so the fold-by-fold difference is the "
            "fair test; a gap inside about two standard errors is not a measured difference.\n",
            paired,
        ]
    lines += [
        "\n## TAR at FAR = 1e-3, lr-lr\n",
        markdown_table([r for r in allrecs if r["pairs"] == "lr-lr"], ["method"], "res", "tar@far=1e-3", "{:.2%}"),
    ]
    if (args.out / f"{stem}_scores_16px.png").is_file():
        lines += [f"\n![scores]({stem}_scores_16px.png)\n"]
    text = "\n".join(lines)
    (args.out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
