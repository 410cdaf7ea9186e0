"""Every distillation method on the same student, data, epochs and seed; the teacher on LR as reference.

    python benchmarks/distill.py [--methods aird kd ...] [--splits A B] [--config configs/aird.yaml]
                                 [--epochs N] [--runs runs/bench]

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
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from aird.distill.config import load_experiment
from aird.distill.data import SPLIT_TEST_FOLDS
from aird.distill.methods import METHODS
from aird.distill.run import run_experiment
from aird.eval.metrics import merged_verification_metrics
from aird.eval.plots import plot_score_distributions
from aird.eval.records import environment, load_records, make_record, markdown_table, write_records
from aird.eval.runner import EvalConfig, run_verification
from aird.models.teacher import DlibTeacher

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "results"
BASELINES = ["none", "kd", "feature-l2", "cosine", "rkd", "aird-ild", "aird-rld", "aird"]


def method_losses(overrides: dict, method: str) -> dict:
    """The config's per-term settings for the terms this method has; ``none`` (classification only)
    keeps its own cls weight, since the config may switch classification off for the others."""
    return {k: v for k, v in overrides.items() if k in METHODS[method] and not (method == "none" and k == "cls")}


def train_in_parallel(configs: list, jobs: int, quiet: bool) -> None:
    """One ``aird distill`` process per config (each with its config file in its run directory),
    ``jobs`` at a time, the cores split evenly: the same runs as in-process, side by side."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending = list(configs)
    while pending:
        batch, pending = pending[:jobs], pending[jobs:]
        procs = []
        for cfg in batch:
            out = Path(cfg.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "experiment.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
            cmd = ["aird", "distill", "--config", str(out / "experiment.yaml")] + (["--quiet"] if quiet else [])
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            procs.append((cfg, subprocess.Popen(cmd, env=env)))
        for cfg, proc in procs:
            if proc.wait() != 0:
                raise SystemExit(f"training {cfg.name} split {cfg.data.split} failed (exit {proc.returncode})")


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
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "bench")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--jobs", type=int, default=1, help="train this many splits at once, cores shared between them")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    command = "python benchmarks/distill.py " + shlex.join(sys.argv[1:])
    base = load_experiment(args.config)
    json_path = args.out / "distill.json"
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
            train_in_parallel(todo, args.jobs, args.quiet)
        else:
            for cfg in todo:
                run_experiment(cfg, progress=not args.quiet)
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
                    with np.load(run_dir(args.runs, method, s) / f"scores-{res}-{mode}.npz") as z:
                        parts.append((z["scores"], z["labels"], z["folds"]))
                metrics = merged_verification_metrics(parts)
                threshold = metrics.pop("threshold_mean")
                settings = {
                    **rec_a["settings"],
                    "merged_runs": [str(run_dir(args.runs, method, s)) for s in ("A", "B")],
                    "train_wall_s_per_split": [r[0]["settings"].get("train_wall_s") for r in per_split],
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
        if dists:
            plot_score_distributions(
                dists,
                args.out / "distill_scores_16px.png",
                thresholds=thresholds,
                title="LFW 16 px LR-LR: genuine vs impostor cosine (6,000 pairs)",
            )
    write_records(json_path, records, command)
    allrecs = [r for r in load_records(json_path) if r["split"] == "all"]
    lines = [
        "# Distillation: every method, same student, data, epochs and seed\n",
        f"Reproduce: `{command}` (records: `distill.json`; split `all` = both splits' students on their own "
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
    for mode in ("lr-lr", "hr-lr"):
        lines += [
            f"\n## LFW 10-fold accuracy, {mode}\n",
            markdown_table([r for r in allrecs if r["pairs"] == mode], ["method"], "res", "accuracy", "{:.2%}"),
        ]
    lines += [
        "\n## TAR at FAR = 1e-3, lr-lr\n",
        markdown_table([r for r in allrecs if r["pairs"] == "lr-lr"], ["method"], "res", "tar@far=1e-3", "{:.2%}"),
    ]
    lines += ["\n![scores](distill_scores_16px.png)\n"]
    text = "\n".join(lines)
    (args.out / "distill.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
