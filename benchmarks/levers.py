"""What each lever of the recipe gives: a base config with one change at a time, on one split (A by default).

The levers are defined against the LFW-only recipe the studies started from (configs/ablations/aird-lfw.yaml,
the default ``--config``): ``pools-no-utkface`` from it is today's main config, configs/aird.yaml.

    python benchmarks/levers.py [--levers main tau-0.1 ...] [--config configs/ablations/aird-lfw.yaml] [--jobs 2]
    python benchmarks/levers.py --config configs/ablations/aird-lfw.yaml --main-run runs/aird-A --runs runs/levers-main \
        --levers main epochs-20 pools --tag recipe     (the current main config: docs/results/recipe.md;
                                                        --split B --main-run runs/aird-B --tag recipe-B)

Split A by default (train: LFW people outside folds 1-5; test: folds 1-5, 3,000 pairs, each fold's
threshold chosen on the other four; ``--split B``: folds 6-10), so each lever costs one training run;
the main run is the one ``benchmarks/distill.py`` trains for the split (``runs/bench/aird-A``) and is
reused when present.
Levers that change only evaluation settings reuse the main run's weights. Runs that already have
results are reused, so levers can run one by one and merge. Writes docs/results/<tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from aird.config import from_dict
from aird.distill.config import ExperimentConfig, load_experiment
from aird.distill.run import evaluate_student, run_experiment, run_in_subprocesses, run_scores
from aird.eval.metrics import kfold_accuracy
from aird.eval.records import load_records, markdown_table, paired_fold_table, write_records
from aird.models.student import load_student
from aird.models.teacher import DlibTeacher

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "results"

# name: (what changes, dotted config overrides)
LEVERS: dict[str, tuple[str, dict]] = {
    "main": ("the main config", {}),
    "flip-fuse": ("test embedding fused with the mirrored face's (same weights)", {"eval.flip_fuse": True}),
    "centred": (
        "L_IlD and L_RlD on features minus the mean teacher feature",
        {"losses.ild.center": True, "losses.rld.center": True},
    ),
    "tau-0.1": ("L_RlD temperature 0.1 (main 0.05)", {"losses.rld.tau": 0.1}),
    "tau-0.02": ("L_RlD temperature 0.02 (main 0.05)", {"losses.rld.tau": 0.02}),
    "queue-0": ("L_RlD over the batch only, no queue (main 1,024)", {"train.queue_size": 0}),
    "queue-4096": ("L_RlD queue of 4,096 teacher features (main 1,024)", {"train.queue_size": 4096}),
    "b-1": ("+ the KD term of L_IlD (b = 1; main 0)", {"losses.ild.b": 1.0}),
    "epochs-12": ("12 epochs (main 6)", {"train.epochs": 12}),
    "res-16": ("trained at 16 px only (main 8, 12, 16, 20 px)", {"degradation.res": [16]}),
    "no-flip": ("no flip augmentation", {"data.flip": False}),
    # 3 epochs over about twice the faces: about the main run's number of steps
    "celeba": (
        "+ CelebA pool, leak-filtered, 3 epochs (about the main's steps)",
        {"data.pools": ["lfw", "celeba"], "data.leak_threshold": 0.95, "train.epochs": 3},
    ),
    # What each extra pool adds on its own, at about the main's steps (recipe.md); the unfiltered UTKFace
    # lever measures what the leak filter costs or hides (it drops 15.5% of UTKFace at 0.95, leak.md)
    "utkface": (
        "+ UTKFace pool (unlabelled), leak-filtered, 3 epochs (about the main's steps)",
        {"data.pools": ["lfw", "utkface"], "data.leak_threshold": 0.95, "train.epochs": 3},
    ),
    "utkface-unfiltered": (
        "+ UTKFace pool (unlabelled), no leak filter, 3 epochs",
        {"data.pools": ["lfw", "utkface"], "data.leak_threshold": 1.0, "train.epochs": 3},
    ),
    # The two halves of "every pool, a schedule long enough": 6 epochs over every pool take about the
    # steps of 20 over LFW alone, so epochs-20 is also the pools' equal-steps reference.
    "epochs-20": ("20 epochs (main 6): about the steps of 6 over every pool", {"train.epochs": 20}),
    # UTKFace's share inside the longer schedule: every pool but UTKFace, at about the steps of `pools`
    "pools-no-utkface": (
        "+ CelebA pool only, leak-filtered, 9 epochs (about the steps of `pools`)",
        {"data.pools": ["lfw", "celeba"], "data.leak_threshold": 0.95, "train.epochs": 9},
    ),
    "pools": (
        "+ CelebA and UTKFace pools, leak-filtered, 6 epochs (3.3x the main's steps)",
        {"data.pools": ["lfw", "celeba", "utkface"], "data.leak_threshold": 0.95},
    ),
}


def with_overrides(base: ExperimentConfig, overrides: dict, **top) -> ExperimentConfig:
    """``base`` with dotted-key overrides, re-validated like a YAML."""
    tree = json.loads(json.dumps(dataclasses.asdict(base)))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    tree.update(top)
    return from_dict(ExperimentConfig, tree)


def eval_only(overrides: dict) -> bool:
    return bool(overrides) and all(k.startswith("eval.") for k in overrides)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "ablations" / "aird-lfw.yaml")
    ap.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "levers")
    ap.add_argument("--main-run", type=Path, default=REPO / "runs" / "bench" / "aird-A")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--jobs", type=int, default=1, help="train this many levers at once, cores shared between them")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--split", choices=["A", "B"], default="A", help="the split every lever trains and tests on")
    ap.add_argument("--tag", default="levers", help="output file names: <out>/<tag>.json and <tag>.md")
    args = ap.parse_args()
    command = "python benchmarks/levers.py " + shlex.join(sys.argv[1:])
    base = load_experiment(args.config)
    main_cfg = with_overrides(base, {"data.split": args.split}, out_dir=str(args.main_run))
    folds = "1-5" if args.split == "A" else "6-10"
    configs = {}
    for lever in ["main"] + [x for x in args.levers if x != "main"]:
        _, overrides = LEVERS[lever]
        if lever == "main":
            configs[lever] = main_cfg
        else:
            name = f"{base.name}-{lever}"
            configs[lever] = with_overrides(main_cfg, overrides, name=name, out_dir=str(args.runs / lever))

    def done(cfg: ExperimentConfig) -> bool:
        return (cfg.run_dir() / "results.json").is_file()

    if done(main_cfg):
        ran = json.loads((main_cfg.run_dir() / "config.json").read_text())
        # through the current schema: a setting added since the run (at its default) is no difference
        ran = json.loads(json.dumps(dataclasses.asdict(from_dict(ExperimentConfig, ran))))
        # the name and directory only place and label the run: the same settings train the same weights
        for key in ("out_dir", "name"):
            ran.pop(key, None)
        wanted = json.loads(json.dumps(dataclasses.asdict(main_cfg)))
        for key in ("out_dir", "name"):
            wanted.pop(key)
        if ran != wanted:
            raise SystemExit(f"{main_cfg.run_dir()} was trained with another config than {args.config}; move it away")
    train = [c for lever, c in configs.items() if not done(c) and not eval_only(LEVERS[lever][1])]
    if args.jobs > 1 and len(train) > 1:
        # resume: a study stopped part-way (Ctrl-C, a crash) continues where it stopped
        run_in_subprocesses(train, args.jobs, args.quiet, resume=True)
    else:
        for cfg in train:
            run_experiment(cfg, resume=True, progress=not args.quiet)
    main_records = load_records(main_cfg.run_dir() / "results.json")
    teacher = None
    for lever, cfg in configs.items():
        if done(cfg) or not eval_only(LEVERS[lever][1]):
            continue
        cfg.run_dir().mkdir(parents=True, exist_ok=True)
        teacher = teacher or DlibTeacher("torch")
        student, _ = load_student(main_cfg.run_dir() / "student.safetensors")
        records = evaluate_student(cfg, student, teacher, progress=not args.quiet)
        trained = main_records[0]["settings"]
        for rec in records:
            rec["settings"].update(
                {k: trained[k] for k in ("train_wall_s", "world_size", "steps", "data")},
                weights=str(main_cfg.run_dir() / "student.safetensors"),
            )
        write_records(cfg.run_dir() / "results.json", records, command=command)

    records = []
    for lever, cfg in configs.items():
        what, overrides = LEVERS[lever]
        for rec in load_records(cfg.run_dir() / "results.json"):
            rec["settings"].update(lever=lever, lever_change=what, lever_overrides=overrides)
            records.append({**rec, "model": lever, "split": args.split})
    for rec in records:  # each fold's accuracy from the run's saved scores, for the paired table
        scores = run_scores(configs[rec["model"]].run_dir(), rec["res"], rec["pairs"])
        if scores is not None:
            rec["settings"]["fold_accuracies"] = kfold_accuracy(*scores)["fold_accuracies"]
    json_path = args.out / f"{args.tag}.json"
    write_records(json_path, records, command)
    allrecs = load_records(json_path)
    order = [x for x in LEVERS if any(r["model"] == x for r in allrecs)]
    allrecs.sort(key=lambda r: order.index(r["model"]))
    lines = [
        f"# Levers: the main config with one change at a time (split {args.split})\n",
        f"Reproduce: `{command}` (levers may run a few at a time with `--levers NAME ...`; each record keeps "
        f"its command; records: `{json_path.name}`). Split {args.split}: trained on LFW people outside "
        f"folds {folds}, tested on folds {folds} (3,000 pairs; each fold's threshold chosen on the other four). "
        f"`main` is `{args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config}`; every other row changes one thing:\n",
        "| lever | what changes | steps | train wall (s) |",
        "|---|---|---:|---:|",
    ]
    for lever in order:
        rec = next(r for r in allrecs if r["model"] == lever)
        s = rec["settings"]
        lines.append(f"| {lever} | {LEVERS[lever][0]} | {s.get('steps', '—')} | {s.get('train_wall_s', '—')} |")
    for mode in ("lr-lr", "hr-lr"):
        lines += [
            f"\n## 10-fold accuracy (folds {folds}), {mode}\n",
            markdown_table([r for r in allrecs if r["pairs"] == mode], ["model"], "res", "accuracy", "{:.2%}"),
        ]
    lines += [
        "\n## TAR at FAR = 1e-3, lr-lr\n",
        markdown_table([r for r in allrecs if r["pairs"] == "lr-lr"], ["model"], "res", "tar@far=1e-3", "{:.2%}"),
    ]
    paired = paired_fold_table(allrecs, "main", by="model", minus_reference=True)
    if paired:
        lines += [
            f"\n## Each lever minus main, paired over folds {folds} (points, mean ± standard error)\n",
            "A difference inside about two standard errors is not a measured difference.\n",
            paired,
        ]
    text = "\n".join(lines) + "\n"
    (args.out / f"{args.tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
