"""The fast student against the number of its training faces: is data what holds it below its bridge?

    python benchmarks/fast_data.py

Each run is ``configs/ablations/fast-data-<p>.yaml``: the 12-epoch fast recipe (``fast-12ep.yaml``) on a
seeded p% share of the training faces (``data.subsample``, drawn alike from every pool after the leak
filter), trained for as many steps as 12 epochs of all of them, so the runs differ in faces, not in
updates. Train them first (``aird distill --config configs/ablations/fast-data-<p>.yaml`` for p = 12, 25,
50, 100; about 9 minutes each on 2 cores).

Per run: LFW 16 px LR-LR and HR-LR accuracy over all 6,000 pairs (the run's own records), paired over the
10 folds against the run on every face; and how closely the fast student follows its bridge (the
shipped student at 150 px, whose embedding of the same LR face is the fast student's target): the mean
cosine between the two networks' embeddings of the same 16 px faces, on faces the run trained on, on
faces of the same pools it never saw (the rest of the pools; none for the run on every face), and on
LFW faces of pairs.txt people (held out from every run). A student that follows its bridge on its own
faces and not on unseen ones is short of faces, not of capacity.

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

from aird.config import from_dict
from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.data.degrade import Degradation, to_network_input
from aird.data.lfw import LFW
from aird.distill.config import ExperimentConfig
from aird.distill.data import SPLIT_TEST_FOLDS, TrainingSet, subsample
from aird.distill.run import run_scores, training_set
from aird.errors import AirdError
from aird.eval.metrics import kfold_accuracy
from aird.eval.records import environment, load_records, make_record, paired_difference, write_records
from aird.models.embedder import faces_to_tensor
from aird.models.student import load_student
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
RUNS = [ROOT / "runs" / f"fast-data-{p}-all" for p in (12, 25, 50, 100)]
SHIPPED_RECORDS = OUT / "students.json"
FACES = 768  # per face set: the LR faces both networks embed
RES = 16
SETS = ("trained on", "unseen, same pools", "LFW test people")


def run_config(run: Path) -> ExperimentConfig:
    path = run / "config.json"
    if not path.is_file():
        raise SystemExit(
            f"{run}: no config.json -- train it first: aird distill --config configs/ablations/{run.name[:-4]}.yaml"
        )
    return from_dict(ExperimentConfig, json.loads(path.read_text()), str(path))


def lr_faces(chips: np.ndarray, tag: str) -> np.ndarray:
    """16 px LR faces of ``chips`` (area-shrunk, at their native side), one seeded draw per face."""
    degradation = Degradation(res=(RES,), down=("area",), up=None, seed=0)
    return degradation.batch(chips, [f"{tag}-{i}" for i in range(len(chips))])


def embed(model: torch.nn.Module, faces: np.ndarray, side: int, batch: int = 64) -> np.ndarray:
    """Unit embeddings of LR ``faces`` resized to the network's ``side`` (float32, no gradient)."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(faces), batch):
            x = faces_to_tensor(np.stack([to_network_input(f, side) for f in faces[i : i + batch]]))
            out.append(torch.nn.functional.normalize(model(x).float(), dim=1))
    return torch.cat(out).numpy()


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
        cos = (embed(student, faces, int(meta["input_size"])) * embed(bridge[0], faces, bridge[1])).sum(1)
        agreement[name] = {
            "mean": float(cos.mean()),
            "faces": len(cos),
            "percentiles": {str(q): round(float(np.percentile(cos, q)), 4) for q in (5, 50, 95)},
        }
    for r in records:
        r["model"] = cfg.name
        r["settings"].update(subsample=cfg.data.subsample, training_faces=len(used))
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


def table(records: list[dict]) -> str:
    by_run: dict[str, dict] = {}
    for r in records:
        row = by_run.setdefault(
            r["model"], {"faces": r["settings"]["training_faces"], "share": r["settings"]["subsample"]}
        )
        row[r["pairs"]] = r
        row.update({s: r["metrics"][agreement_key(s)] for s in SETS if agreement_key(s) in r["metrics"]})
    full = max(by_run.values(), key=lambda row: row["faces"])
    lines = [
        "| run | share | training faces | LR-LR 16 px | − every face | HR-LR 16 px | − every face | "
        + " | ".join(f"cosine to bridge, {s}" for s in SETS)
        + " |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(SETS),
    ]
    for name, row in sorted(by_run.items(), key=lambda kv: kv[1]["faces"]):
        cells = [name, f"{row['share']:g}", f"{row['faces']:,}"]
        for mode in ("lr-lr", "hr-lr"):
            r = row.get(mode)
            cells.append(f"{r['metrics']['accuracy'] * 100:.2f}" if r else "")
            d = paired_difference(r, full[mode]) if r and row is not full else None
            cells.append(f"{d[0]:+.2f} ± {d[1]:.2f}" if d else "")
        cells += [f"{row[s]:.4f}" if s in row else "" for s in SETS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def points_per_doubling(records: list[dict]) -> tuple[float, float] | None:
    """Least-squares slope and intercept of 16 px LR-LR accuracy (points) on log2(training faces); None
    with fewer than two sizes of training set."""
    rows = [
        (r["settings"]["training_faces"], r["metrics"]["accuracy"] * 100) for r in records if r.get("pairs") == "lr-lr"
    ]
    if len({f for f, _ in rows}) < 2:
        return None
    x, y = np.log2([f for f, _ in rows]), np.array([a for _, a in rows])
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


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
    verif = sorted((r for r in records if r.get("pairs") == "lr-lr"), key=lambda r: r["settings"]["training_faces"])
    faces = [r["settings"]["training_faces"] for r in verif]
    acc = [r["metrics"]["accuracy"] * 100 for r in verif]
    se = [np.std(r["settings"]["fold_accuracies"], ddof=1) * 100 / np.sqrt(10) for r in verif]
    left.errorbar(faces, acc, yerr=se, marker="o", capsize=3, label="fast student (lr_resnet, 12-epoch steps)")
    fit = points_per_doubling(records)
    if fit:
        xs = np.geomspace(min(faces), max(faces) * 8, 50)
        left.plot(xs, fit[0] * np.log2(xs) + fit[1], ":", color="grey", label=f"fit: {fit[0]:+.2f} points per doubling")
    if bridge is not None:
        left.axhline(bridge, color="C2", label=f"its bridge, the shipped student ({bridge:.2f})")
        left.axhline(bridge - 2, color="C3", ls="--", label=f"the issue's bar: bridge − 2 ({bridge - 2:.2f})")
    left.set_xscale("log", base=2)
    left.set_xlabel("training faces")
    left.set_ylabel("LFW 16 px LR-LR accuracy (%), 6,000 pairs")
    left.legend(fontsize=8, loc="lower right")
    left.grid(alpha=0.3)
    for s, marker in zip(SETS, "os^"):
        pts = sorted(
            (r["settings"]["training_faces"], r["metrics"][agreement_key(s)])
            for r in verif
            if agreement_key(s) in r["metrics"]
        )
        if pts:
            right.plot(*zip(*pts), marker=marker, label=s)
    right.set_xscale("log", base=2)
    right.set_xlabel("training faces")
    right.set_ylabel("mean cosine to the bridge's embedding, 16 px")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle("The fast student against the number of its training faces")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", type=Path, help="a finished fast-data run (default: the four)")
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
    fit = points_per_doubling(records)
    bridge_acc = bridge_accuracy()
    text = table(records)
    note = ""
    if fit:
        slope, intercept = fit
        note = f"Fit over the runs: {slope:+.2f} points of 16 px LR-LR accuracy per doubling of the training faces."
    if fit and bridge_acc is not None:
        need = 2 ** ((bridge_acc - 2 - intercept) / slope) if slope > 0 else float("inf")
        note += (
            f" The bar (the bridge's {bridge_acc:.2f} − 2) would be reached at about {need:,.0f} faces if the line held,"
            " an extrapolation, not a measurement."
        )
    args.out.with_suffix(".md").write_text(
        "# The fast student against the number of its training faces\n\n"
        f"`{command}` (records: `{args.out.name}`; plot: `{args.out.with_suffix('.png').name}`)\n\n"
        f"{text}\n\n{note}\n"
    )
    plot(records, bridge_acc, args.out.with_suffix(".png"))
    print(text)
    print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
