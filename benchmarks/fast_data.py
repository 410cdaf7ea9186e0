"""The fast student against the number of its training faces: is data what holds it below its bridge?

    python benchmarks/fast_data.py

Runs, trained first (about 9 minutes each on 2 cores at 12 epochs' steps, 30 to 45 at 36):

- ``configs/ablations/fast-data-<p>.yaml`` for p = 12, 25, 50, 100: the 12-epoch fast recipe
  (``fast-12ep.yaml``) on a seeded p% share of the training faces (``data.subsample``, drawn alike from
  every pool after the leak filter), for as many steps as 12 epochs of every face, so that they differ
  in faces, not in updates;
- ``configs/ablations/fast-data-50-36ep.yaml`` and ``configs/fast.yaml`` (the shipped fast file's run,
  ``runs/aird-fast-all``): half and every face at the shipped schedule's steps (36 epochs of every face);
- ``configs/ablations/fast-72ep.yaml``: every face for 72 epochs, whether the schedule still pays.

Per run: LFW 16 px LR-LR and HR-LR accuracy over all 6,000 pairs (the run's own records), paired over the
10 folds against the run of its step budget on every face; and how closely the fast student follows its
bridge (the shipped student at 150 px, whose embedding of the same LR face is its target): the mean cosine
between the two networks' embeddings of the same 16 px faces, on faces the run trained on, on faces of the
same pools it never saw (none for a run on every face), and on LFW faces of pairs.txt people (held out
from every run). A student that follows its bridge on its own faces and not on unseen ones is short of
faces rather than of capacity.

Records: ``docs/results/fast-data.json`` (each run's 16 px records; the LR-LR one carries
``metrics["cosine_to_bridge:trained|unseen|lfw"]``), ``fast-data.md`` and ``fast-data.png``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from make_student_anchor import unit_embeddings  # noqa: E402  (unit embeddings, one place)

from aird.config import from_dict
from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.data.degrade import Degradation
from aird.data.lfw import LFW
from aird.distill.config import ExperimentConfig
from aird.distill.data import SPLIT_TEST_FOLDS, TrainingSet, subsample
from aird.distill.run import run_scores, training_set
from aird.errors import AirdError
from aird.eval.metrics import kfold_accuracy
from aird.eval.records import environment, load_records, make_record, paired_difference, write_records
from aird.models.student import load_student
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
# At the steps of 12 epochs of every face, four sizes; at 36 (the shipped recipe), half and every face; at 72, every face.
RUNS = [ROOT / "runs" / f"fast-data-{p}-all" for p in (12, 25, 50, 100)] + [
    ROOT / "runs" / "fast-data-50-36ep-all",
    ROOT / "runs" / "aird-fast-all",  # configs/fast.yaml: the shipped fast file's run
    ROOT / "runs" / "fast-72ep-all",  # configs/ablations/fast-72ep.yaml: every face, twice the shipped steps
]
SHIPPED_RECORDS = OUT / "students.json"
FACES = 768  # per face set: the LR faces both networks embed
RES = 16
SETS = ("trained on", "unseen, same pools", "LFW test people")


def run_config(run: Path) -> ExperimentConfig:
    path = run / "config.json"
    if not path.is_file():
        raise SystemExit(
            f"{run}: no config.json -- train the run first (aird distill --config <its config>; the configs are "
            "listed at the top of benchmarks/fast_data.py), or leave it out with --run"
        )
    return from_dict(ExperimentConfig, json.loads(path.read_text()), str(path))


def lr_faces(chips: np.ndarray, tag: str) -> np.ndarray:
    """16 px LR faces of ``chips`` (area-shrunk, at their native side), one seeded draw per face."""
    degradation = Degradation(res=(RES,), down=("area",), up=None, seed=0)
    return degradation.batch(chips, [f"{tag}-{i}" for i in range(len(chips))])


def pick(n: int, count: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, count), replace=False))


def face_sets(full: TrainingSet, used: TrainingSet, lfw_chips: np.ndarray) -> dict[str, np.ndarray]:
    """HR chips of each face set: faces the run trained on, pool faces it never saw, LFW test people."""
    seen = set(used.digests)
    unseen = np.array([i for i, d in enumerate(full.digests) if d not in seen], dtype=np.int64)
    sets = {SETS[0]: used.chips[pick(len(used), FACES)], SETS[2]: lfw_chips}
    if len(unseen):
        sets[SETS[1]] = full.chips[unseen[pick(len(unseen), FACES)]]
    return sets


def lfw_test_chips(root: Path) -> np.ndarray:
    """The first image of ``FACES`` pairs.txt people (held out from every split ``all`` run), aligned."""
    lfw = LFW(root)
    people = sorted(lfw.fold_identities(SPLIT_TEST_FOLDS["all"]))
    first: dict[str, Path] = {}
    for item in lfw.folder().items:
        if item.identity in people:
            first.setdefault(item.identity, item.path)
    chosen = [first[p] for p in people]
    paths = [chosen[i] for i in pick(len(chosen), FACES)]
    return align_images(paths, align_settings_for("lfw", 150), progress=False).chips


def agreement_key(face_set: str) -> str:
    return "cosine_to_bridge:" + {SETS[0]: "trained", SETS[1]: "unseen", SETS[2]: "lfw"}[face_set]


def run_records(
    run: Path, command: str, bridge: tuple[torch.nn.Module, int], full: TrainingSet, lfw_chips: np.ndarray
) -> list[dict]:
    """The run's 16 px LFW records; the LR-LR one also carries the mean cosine to the bridge on each face set."""
    started = time.time()
    cfg = run_config(run)
    used = subsample(full, cfg.data.subsample, cfg.train.seed)  # the faces the run trained on
    records = [r for r in load_records(run / "results.json") if r["res"] == RES]
    if {r["pairs"] for r in records} != {"lr-lr", "hr-lr"}:
        raise SystemExit(f"{run}/results.json lacks its {RES} px LR-LR or HR-LR record: is the run finished?")
    student, meta = load_student(run / "student.safetensors")
    student.eval()
    agreement = {}
    for name, chips in face_sets(full, used, lfw_chips).items():
        faces = lr_faces(chips, name)
        cos = (
            (unit_embeddings(student, faces, int(meta["input_size"])) * unit_embeddings(bridge[0], faces, bridge[1]))
            .sum(1)
            .numpy()
        )
        agreement[name] = {
            "mean": float(cos.mean()),
            "faces": len(cos),
            "percentiles": {str(q): round(float(np.percentile(cos, q)), 4) for q in (5, 50, 95)},
        }
    for r in records:
        r["model"] = cfg.name
        r["settings"].update(
            subsample=cfg.data.subsample,
            training_faces=len(used),
            # the step budget, in epochs of every face: runs of one budget differ in faces, not in updates
            budget_epochs=round(cfg.train.epochs * cfg.data.subsample),
        )
        scores = run_scores(run, RES, r["pairs"])  # per-pair scores: the fold accuracies the pairing needs
        r["settings"]["fold_accuracies"] = kfold_accuracy(*scores)["fold_accuracies"]
        if r["pairs"] == "lr-lr":
            r["metrics"].update({agreement_key(k): v["mean"] for k, v in agreement.items()})
            r["settings"]["cosine_to_bridge"] = {
                "what": "cosine between the fast student's and its bridge's unit embeddings of the same LR face",
                "bridge": cfg.bridge.student,
                "degradation": {"res": RES, "down": "area", "seed": 0},
                "face_sets": agreement,
                "wall_s": round(time.time() - started, 1),
                "environment": environment(),
                "command": command,
            }
    return [make_record(**r) for r in records]


def budgets(records: list[dict]) -> dict[int, list[dict]]:
    """The LR-LR records by step budget, fewest faces first."""
    out: dict[int, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["settings"]["training_faces"]):
        if r["pairs"] == "lr-lr":
            out.setdefault(r["settings"]["budget_epochs"], []).append(r)
    return dict(sorted(out.items()))


def table(records: list[dict]) -> str:
    """One row per run; each paired over the folds with the run of its budget on every face."""
    full = {}
    for r in records:
        key = (r["settings"]["budget_epochs"], r["pairs"])
        if key not in full or r["settings"]["training_faces"] > full[key]["settings"]["training_faces"]:
            full[key] = r
    lines = [
        "| run | steps: epochs of every face | share | training faces | LR-LR 16 px | − every face | HR-LR 16 px | "
        "− every face | " + " | ".join(f"cosine to bridge, {s}" for s in SETS) + " |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(SETS),
    ]
    for budget, lr_lr in budgets(records).items():
        for rec in lr_lr:
            st = rec["settings"]
            cells = [rec["model"], str(budget), f"{st['subsample']:g}", f"{st['training_faces']:,}"]
            for r in (rec, next(x for x in records if x["model"] == rec["model"] and x["pairs"] == "hr-lr")):
                ref = full[(budget, r["pairs"])]
                d = paired_difference(r, ref) if r is not ref else None
                cells += [f"{r['metrics']['accuracy'] * 100:.2f}", f"{d[0]:+.2f} ± {d[1]:.2f}" if d else ""]
            cells += [
                f"{rec['metrics'][agreement_key(s)]:.4f}" if agreement_key(s) in rec["metrics"] else "" for s in SETS
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def doublings(lr_lr: list[dict]) -> list[str]:
    """Each step from one size to the next of a budget: points gained per doubling of the faces."""
    out = []
    for a, b in zip(lr_lr, lr_lr[1:]):
        fa, fb = a["settings"]["training_faces"], b["settings"]["training_faces"]
        gain = (b["metrics"]["accuracy"] - a["metrics"]["accuracy"]) * 100
        out.append(f"{fa:,} -> {fb:,} faces: {gain:+.2f} ({gain / np.log2(fb / fa):+.2f} per doubling)")
    return out


def schedule(records: list[dict]) -> list[str]:
    """Each budget's run on the most faces against the next budget's, paired over the folds: what more steps
    over the same faces give."""
    largest = {b: rs[-1] for b, rs in budgets(records).items()}
    out = []
    for (b0, r0), (b1, r1) in zip(largest.items(), list(largest.items())[1:]):
        if r0["settings"]["training_faces"] == r1["settings"]["training_faces"]:
            d = paired_difference(r1, r0)
            out.append(
                f"- {r1['settings']['training_faces']:,} faces, {b0} -> {b1} epochs, 16 px LR-LR: {d[0]:+.2f} ± {d[1]:.2f}."
            )
    return out


def bridge_accuracy() -> float | None:
    """The shipped student's 16 px LR-LR accuracy, as ``docs/results/students.json`` measured it."""
    for r in load_records(SHIPPED_RECORDS):
        if (
            r["model"] == "aird-shipped"
            and r["res"] == RES
            and r.get("pairs") == "lr-lr"
            and "accuracy" in r["metrics"]
        ):
            return r["metrics"]["accuracy"] * 100
    return None


def plot(records: list[dict], bridge: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (budget, lr_lr), color in zip(budgets(records).items(), ("C0", "C1", "C4", "C5")):
        faces = [r["settings"]["training_faces"] for r in lr_lr]
        acc = [r["metrics"]["accuracy"] * 100 for r in lr_lr]
        se = [np.std(r["settings"]["fold_accuracies"], ddof=1) * 100 / np.sqrt(10) for r in lr_lr]
        label = f"steps of {budget} epochs of every face"
        left.errorbar(faces, acc, yerr=se, marker="o", capsize=3, color=color, label=label)
        for s, marker, ls in zip(SETS, "os^", ("-", "--", ":")):
            pts = [
                (f, r["metrics"][agreement_key(s)]) for f, r in zip(faces, lr_lr) if agreement_key(s) in r["metrics"]
            ]
            if pts:
                right.plot(*zip(*pts), marker=marker, ls=ls, color=color, label=f"{s} ({budget} epochs)")
    if bridge is not None:
        left.axhline(bridge, color="C2", label=f"its bridge, the shipped student ({bridge:.2f})")
        left.axhline(bridge - 2, color="C3", ls="--", label=f"the issue's bar: bridge − 2 ({bridge - 2:.2f})")
    for ax, ylabel in (
        (left, "LFW 16 px LR-LR accuracy (%), 6,000 pairs"),
        (right, "mean cosine to the bridge's embedding, 16 px"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training faces")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("The fast student (lr_resnet) against the number of its training faces")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", action="append", type=Path, help="a finished run, repeatable (default: the runs listed above)"
    )
    parser.add_argument("--out", type=Path, default=OUT / "fast-data.json")
    args = parser.parse_args(argv)
    runs = args.run or RUNS
    command = "python benchmarks/fast_data.py" + "".join(f" --run {shlex.quote(str(r))}" for r in args.run or [])
    torch.set_num_threads(2)
    try:
        root = data_root(None)
        configs = [run_config(run) for run in runs]
        recipe = {(c.data.split, json.dumps(asdict(c.data) | {"subsample": 1.0}), c.bridge.student) for c in configs}
        if len(recipe) > 1:
            raise SystemExit("the runs differ in more than data.subsample (split, pools, leak filter or bridge)")
        full = training_set(
            replace(configs[0], data=replace(configs[0].data, subsample=1.0)), DlibTeacher("torch"), False
        )
        bridge_model, bridge_meta = load_student(configs[0].bridge.path())
        bridge = (bridge_model.eval(), int(bridge_meta["input_size"]))
        lfw_chips = lfw_test_chips(root)
        records = []
        for run in runs:
            records += run_records(run, command, bridge, full, lfw_chips)
            print(f"{run.name}: done", flush=True)
    except AirdError as exc:
        raise SystemExit(str(exc)) from None
    write_records(args.out, records, command, merge=False)
    bridge_acc = bridge_accuracy()
    text = table(records)
    notes = []
    for budget, lr_lr in budgets(records).items():
        steps = doublings(lr_lr)
        if steps:
            notes.append(f"- Steps of {budget} epochs of every face, 16 px LR-LR: " + "; ".join(steps) + ".")
    notes += schedule(records)
    note = "\n".join(notes)
    args.out.with_suffix(".md").write_text(
        "# The fast student against the number of its training faces\n\n"
        f"`{command}` (records: `{args.out.name}`; plot: `{args.out.with_suffix('.png').name}`)\n\n"
        f"{text}\n\n{note}\n\n"
        f"Cosine columns: the mean cosine between the fast student's and its bridge's unit embeddings of the same "
        f"{RES} px face (area-shrunk), over {FACES} faces of each set.\n"
    )
    plot(records, bridge_acc, args.out.with_suffix(".png"))
    print(text)
    print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
