"""The teacher and every given student side by side, in one process: embedding speed and LFW accuracy.

    python benchmarks/students.py --teacher --student lr_resnet=runs/lr-resnet-all/student.safetensors \\
        --onnx lr_resnet

The shipped student is always measured (first, and the main one; --no-shipped leaves it out), beside the
teacher (--teacher) and every --student given.

Speed: faces/s at batch 64 (median of --repeats passes over --speed-faces faces, after a warm-up) and
batch-1 latency (p50, p99), torch and OpenCV held to --threads threads (default 2: the issue's two
cores), every model timed in turn within each repeat. The faces are real LFW faces cut down to
--speed-res px (default 16) as a camera's detector hands them over; each model's own resampling to its
input size is part of the time. Each model's speed is also given as a ratio to the main student
(--main; default the shipped student, else the first one given).

Accuracy: LFW verification through the evaluation runner (aird.eval.runner.run_verification), 10-fold
accuracy and TAR at FAR 1e-3, at --res px LR-LR (default 16 12 8) and --hr-lr-res px HR-LR (default 16;
the HR side by the teacher), on every pair of --folds (default all 10: split ``all``, 6,000 pairs).
A student trained on LFW's split ``all`` (people of pairs.txt held out) is evaluated fairly here; one
trained on split A or B is not (its training people appear in the other split's folds).

``--onnx NAME`` also exports that student to ONNX and measures it on onnxruntime (same threads) as a
point of its own (model ``NAME-onnx``): speed, and accuracy at --speed-res px LR-LR. ``--int8 NAME``
quantizes that export to int8 (``aird.models.export.quantize_int8``: static, per-channel weights, ranges
calibrated on --int8-calibration CelebA faces, a training pool) and measures it as ``NAME-int8`` in every
accuracy cell, since quantization changes what it computes (its cosine to the float model is recorded).
Per-layer sensitivity keeps the fewest residual blocks float that bring the int8 graph's embeddings of as
many other CelebA faces to mean cosine --int8-target-cosine to the float graph's; ``--int8-whole`` also
measures the graph quantized whole (all but the embedding layer) as ``NAME-int8-whole``. The exports read
channels-last faces (--onnx-layout, default nhwc: the faster on a CPU) and their sessions' idle threads
sleep instead of spinning, so that the sessions timed in turn in one process do not slow each other.

Writes docs/results/students.json (records in the RESULTS.md shape: ``metrics.faces_per_s`` on every
record of a model, the speed settings and the ratio to the main student in ``settings.speed``, each
fold's accuracy in ``settings.fold_accuracies``), students.md (the table, and every model minus the main
student paired over the folds) and students.png (accuracy at --speed-res px LR-LR against faces/s). With
--speed-only it measures speed alone, prints it and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.data.degrade import Degradation
from aird.errors import AirdError, ConfigError
from aird.eval.compare import named_students, with_shipped
from aird.eval.metrics import cosine_similarity
from aird.eval.plots import plot_accuracy_speed
from aird.eval.protocols import lfw_pairs
from aird.eval.records import check_results_file, load_records, paired_fold_table, write_records
from aird.eval.runner import EvalConfig, run_verification
from aird.eval.speed import LATENCY_FACES, SPEED_BATCH, SPEED_REPEATS, SPEED_WARMUP, measure_speed
from aird.models.embedder import Embedder
from aird.models.export import INPUT_LAYOUTS
from aird.models.shipped import SHIPPED_PATH
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

REPO = Path(__file__).resolve().parents[1]
TAR = "tar@far=1e-3"
GOAL_SPEED = 2000.0  # issue 10: a fast student embeds at least this many 16 px faces/s on 2 cores, batch 64
GOAL_POINTS = 2.0  # ... and stays within this many points of the main student at 16 px LR-LR


@dataclass
class Model:
    label: str  # the records' "model"
    embedder: Embedder
    method: str
    input_size: int | None  # None: the 150 px chip (the teacher)
    backend: str = "torch"
    path: Path | None = None
    extra: dict = field(default_factory=dict)  # settings every record of this model carries
    twin: Embedder | None = None  # the PyTorch student an --onnx point was exported from


def load_students(specs: list[str], batch_size: int, threads: int) -> list[Model]:
    from aird.models.export import OnnxEmbedder

    models = []
    for label, s in named_students(specs, batch_size).items():
        extra = {"student_file": str(s.path)}
        if s.card.get("fingerprint"):
            extra["card_fingerprint"] = s.card["fingerprint"]
        embedder, backend = s.embedder, "torch"
        if isinstance(embedder, OnnxEmbedder):  # a graph from 'aird export': held to the same threads
            embedder, backend = OnnxEmbedder(s.path, batch_size, threads=threads, spin=False), "onnxruntime"
        models.append(Model(label, embedder, s.method, embedder.input_size, backend, s.path, extra))
    return models


def main_label(students: list[Model], asked: str | None) -> str:
    labels = [m.label for m in students]
    if asked is not None:
        if asked not in labels:
            raise ConfigError(f"--main {asked!r} is not one of the students ({', '.join(labels)})")
        return asked
    shipped = [m.label for m in students if m.path is not None and m.path.resolve() == SHIPPED_PATH.resolve()]
    return (shipped or labels)[0]


def speed_faces(root: Path, folds: list[int] | None, pairs_file: str | None, n: int, res: int, progress: bool):
    """``n`` real LFW faces (the evaluated pairs' images, repeated if fewer) cut down to ``res`` px."""
    images = lfw_pairs(root, folds, pairs_file).images()[:n]
    chips = align_images(images, align_settings_for("lfw"), progress=progress)
    lr = Degradation(res=res, up=None, seed=0).batch(chips.chips, chips.digests)
    return np.resize(lr, (n, *lr.shape[1:]))  # np.resize repeats the faces to n


def onnx_models(
    students: list[Model], names: list[str], folder: Path, threads: int, batch_size: int, layout: str
) -> list[Model]:
    from aird.models.export import OnnxEmbedder, export_model

    by_label = {m.label: m for m in students}
    out = []
    for name in names:
        if name not in by_label:
            raise ConfigError(f"--onnx {name!r} is not one of the students ({', '.join(by_label)})")
        m = by_label[name]
        if m.backend != "torch":
            raise ConfigError(f"--onnx {name!r}: {m.path} is already an ONNX graph; it is measured as it is")
        graph = export_model(m.path, folder / f"{name}-onnx.onnx", layout=layout)
        emb = OnnxEmbedder(graph, batch_size, threads=threads, spin=False)
        extra = {**m.extra, "onnx_opset": 17}
        out.append(Model(f"{name}-onnx", emb, m.method, emb.input_size, "onnxruntime", m.path, extra, m.embedder))
    return out


def calibration_faces(root: Path, n: int, res: int, progress: bool) -> np.ndarray:
    """``n`` CelebA faces (a training pool, identities disjoint from LFW) cut down to ``res`` px: int8
    ranges are calibrated on them, never on the LFW faces the graph is evaluated on."""
    from aird.data.extra import celeba_items

    paths = celeba_items(root)[0][:n]
    chips = align_images(paths, align_settings_for("celeba"), progress=progress)
    return Degradation(res=res, up=None, seed=0).batch(chips.chips, chips.digests)


def int8_models(
    students: list[Model],
    names: list[str],
    folder: Path,
    threads: int,
    batch_size: int,
    calibration: np.ndarray,
    held_out: np.ndarray,
    target_cosine: float,
    whole: bool,
    layout: str,
) -> list[Model]:
    """``NAME-int8`` per name (per-layer sensitivity at ``target_cosine``), and ``NAME-int8-whole`` with ``whole``."""
    from aird.models.export import OnnxEmbedder, export_model, quantize_int8

    by_label = {m.label: m for m in students}
    out = []
    for name in names:
        if name not in by_label or by_label[name].backend != "torch":
            raise ConfigError(f"--int8 {name!r} is not one of the PyTorch students ({', '.join(by_label)})")
        m = by_label[name]
        graph = export_model(m.path, folder / f"{name}.onnx", layout=layout)
        variants = [("int8", {"held_out": held_out, "target_cosine": target_cosine})]
        variants += [("int8-whole", {})] if whole else []
        for suffix, options in variants:
            quantized = quantize_int8(graph, folder / f"{name}-{suffix}.onnx", calibration, **options)
            emb = OnnxEmbedder(quantized, batch_size, threads=threads, spin=False)
            extra = {**m.extra, "onnx_opset": 17, "quantized": "int8 (onnxruntime static, QDQ, per-channel weights)"}
            extra["int8_calibration"] = f"{len(calibration)} CelebA faces (a training pool), not LFW"
            if options:
                extra["int8_float_units"] = json.loads(emb.metadata["int8_float_units"])
                extra["int8_sensitivity"] = json.loads(emb.metadata["int8_sensitivity"])
                extra["int8_held_out"] = f"{len(held_out)} other CelebA faces"
                extra["int8_held_out_cosine"] = float(emb.metadata["int8_held_out_cosine"])
                extra["int8_target_cosine"] = target_cosine
            else:
                extra["int8_float_units"] = []  # only the embedding layer, as always
            label = f"{name}-{suffix}"
            out.append(Model(label, emb, m.method, emb.input_size, "onnxruntime-int8", m.path, extra, m.embedder))
    return out


def speed_table(models: list[Model], speed: dict, main: str) -> str:
    ref = speed[main]["metrics"]["faces_per_s"]
    batch = speed[main]["settings"]["batch_size"]
    lines = [
        f"| model | backend | input px | faces/s (batch {batch}) | x main | p50 ms (batch 1) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m in models:
        f = speed[m.label]["metrics"]
        lines.append(
            f"| {m.label} | {m.backend} | {m.input_size or 150} | {f['faces_per_s']:,.0f} "
            f"| {f['faces_per_s'] / ref:.2f} | {f.get('p50_ms', float('nan')):.2f} |"
        )
    return "\n".join(lines) + "\n"


def results_table(records: list[dict], speed_res: int) -> str:
    """One row per model: speed, its ratio to the main student, accuracy per cell, TAR at speed_res LR-LR."""
    cells = sorted({(r["pairs"], r["res"]) for r in records}, key=lambda c: (c[0] != "lr-lr", -c[1]))
    head = (
        "| model | method | faces/s | x main | p50 ms | "
        + " | ".join(f"{res} px {mode}" for mode, res in cells)
        + f" | TAR@FAR=1e-3 {speed_res} px lr-lr |"
    )
    lines = [head, "|---|---|---:|---:|---:|" + "---:|" * (len(cells) + 1)]
    by_model: dict[str, dict] = {}
    for r in records:
        by_model.setdefault(r["model"], {})[(r["pairs"], r["res"])] = r
    for model, recs in by_model.items():
        any_rec = next(iter(recs.values()))
        m, sp = any_rec["metrics"], any_rec["settings"].get("speed", {})
        acc = [recs.get(c, {}).get("metrics", {}).get("accuracy") for c in cells]
        tar = recs.get(("lr-lr", speed_res), {}).get("metrics", {}).get(TAR)
        lines.append(
            f"| {model} | {any_rec['method']} | {m['faces_per_s']:,.0f} | {sp.get('ratio_to_main', float('nan')):.2f} "
            f"| {m.get('p50_ms', float('nan')):.2f} | "
            + " | ".join("—" if a is None else f"{100 * a:.2f}" for a in acc)
            + f" | {'—' if tar is None else f'{100 * tar:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path, speed_res: int, main: str, goal_speed: float, goal_points: float) -> None:
    points = {
        r["model"]: (r["metrics"]["faces_per_s"], r["metrics"]["accuracy"])
        for r in records
        if r["pairs"] == "lr-lr" and r["res"] == speed_res and "accuracy" in r["metrics"]
    }
    goal_acc = points[main][1] - goal_points / 100 if main in points and goal_points else None
    first = records[0]
    plot_accuracy_speed(
        points,
        path,
        title=f"LFW {speed_res} px LR-LR ({first['n']:,} pairs) against speed "
        f"(batch {first['settings']['speed']['batch_size']}, threads: {first['settings']['speed']['threads']})",
        ylabel=f"accuracy, {speed_res} px LR-LR",
        xlabel=f"{speed_res} px faces embedded per second (log scale)",
        min_speed=goal_speed or None,
        min_accuracy=goal_acc,
        min_accuracy_label=f"{main} - {goal_points:g} points",
    )


def run(args: argparse.Namespace, command: str) -> int:
    progress = not args.quiet
    if not args.speed_only:
        check_results_file(args.out / "students.json")  # an unwritable output fails now, not after the run
    root = data_root(args.data_root)
    pairs_file = str(args.pairs_file) if args.pairs_file else None
    teacher = DlibTeacher("torch", batch_size=args.batch)
    specs = args.student or []
    students = load_students(specs if args.no_shipped else with_shipped(specs), args.batch, args.threads)
    main = main_label(students, args.main)
    models = ([Model("dlib_resnet", teacher, "teacher", None)] if args.teacher else []) + students
    with tempfile.TemporaryDirectory() as tmp:
        models += onnx_models(students, args.onnx or [], Path(tmp), args.threads, args.batch, args.onnx_layout)
        if args.int8:
            n = args.int8_calibration
            celeba = calibration_faces(root, 2 * n, args.speed_res, progress)
            models += int8_models(
                students,
                args.int8,
                Path(tmp),
                args.threads,
                args.batch,
                calibration=celeba[:n],
                held_out=celeba[n:],
                target_cosine=args.int8_target_cosine,
                whole=args.int8_whole,
                layout=args.onnx_layout,
            )
        faces = speed_faces(root, args.folds, pairs_file, args.speed_faces, args.speed_res, progress)
        speed = measure_speed(
            {m.label: m.embedder for m in models},
            faces,
            batch_size=args.batch,
            repeats=args.repeats,
            warmup=SPEED_WARMUP,
            latency_faces=args.latency_faces,
            threads=args.threads,
        )
        ref = speed[main]["metrics"]["faces_per_s"]
        for m in models:
            speed[m.label]["settings"].update(
                res=args.speed_res,
                backend=m.backend,
                input_size=m.input_size or 150,
                ratio_to_main=round(speed[m.label]["metrics"]["faces_per_s"] / ref, 4),
                main=main,
                faces_source="LFW pairs' images, aligned, area down-sampled (no up-sampling: the embedder resamples)",
            )
            if m.backend.startswith("onnxruntime"):  # idle sessions' spinning threads would slow the timed one
                speed[m.label]["settings"]["onnxruntime_thread_spinning"] = m.embedder.spin
                speed[m.label]["settings"]["onnx_input_layout"] = m.embedder.layout
            if m.twin is not None:
                cos = cosine_similarity(m.embedder.embed(faces[:64]), m.twin.embed(faces[:64]))
                key = "int8_cosine_to_float" if m.backend == "onnxruntime-int8" else "onnx_parity_min_cosine"
                m.extra[key] = float(cos.min())
                if m.backend == "onnxruntime-int8":
                    m.extra["int8_mean_cosine_to_float"] = float(cos.mean())
        print(speed_table(models, speed, main), flush=True)
        if args.speed_only:
            return 0
        threads = args.threads
        torch.set_num_threads(threads)  # the accuracy runs keep to the speed runs' thread budget
        records = []
        for m in models:
            cells = [(r, "lr-lr") for r in args.res] + [(r, "hr-lr") for r in args.hr_lr_res]
            if m.twin is not None and m.backend == "onnxruntime":  # same function as its module: one cell shows it
                cells = [(args.speed_res, "lr-lr")]
            for res, mode in cells:
                cfg = EvalConfig(
                    res=res, pairs=mode, folds=args.folds, out_size=m.input_size, method=m.method, pairs_file=pairs_file
                )
                rec = run_verification(m.embedder, cfg, root, progress, gallery_embedder=teacher).record
                rec["settings"].update(
                    embedder_name=m.embedder.name, backend=m.backend, speed=speed[m.label]["settings"], **m.extra
                )
                rec["metrics"].update(speed[m.label]["metrics"])
                records.append({**rec, "model": m.label})
                print(
                    f"{m.label:>16} {res:>3} px {mode}: accuracy {rec['metrics']['accuracy']:.4f}, "
                    f"{TAR} {rec['metrics'][TAR]:.4f}",
                    flush=True,
                )
    out = args.out
    json_path = out / "students.json"
    write_records(json_path, records, command, merge=False)
    records = load_records(json_path)  # the table and the plot are made from the file, as written
    plot(records, out / "students.png", args.speed_res, main, args.goal_speed, args.goal_points)
    table = results_table(records, args.speed_res)
    first = records[0]
    sp = first["settings"]["speed"]
    doc = [
        "# Students side by side: speed and LFW accuracy\n",
        f"Reproduce: `{command}` (records: `students.json`; plot: `students.png`).\n",
        f"Speed: {sp['face_px']} px faces, batch {sp['batch_size']}, threads: {sp['threads']} (torch, OpenCV, "
        f"onnxruntime), median of {sp['repeats']} passes over {sp['faces']} faces after a warm-up; p50 at batch 1; "
        f"x main = faces/s over those of `{sp['main']}`, measured in the same run. Accuracy: LFW "
        f"{len(first['settings']['folds'])}-fold, {first['n']:,} pairs (split {first['split']}), in %; hr-lr = the "
        "HR face by the teacher.\n",
        table,
        f"Each model minus `{main}`, paired over the folds (mean ± standard error, points):\n",
        paired_fold_table(records, main, by="model", minus_reference=True) + "\n",
        "![accuracy against speed](students.png)\n",
    ]
    (out / "students.md").write_text("\n".join(doc))
    print(table)
    print(f"records written to {json_path}; table {out / 'students.md'}; plot {out / 'students.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--student",
        action="append",
        metavar="[NAME=]PATH",
        help="a student file (.safetensors or an exported .onnx; repeat for several)",
    )
    ap.add_argument("--no-shipped", action="store_true", help="leave the shipped student out (it is in by default)")
    ap.add_argument("--teacher", action="store_true", help="also measure the teacher (dlib_resnet, PyTorch port)")
    ap.add_argument("--main", default=None, help="the student the others' speed is divided by (default: shipped)")
    ap.add_argument("--onnx", action="append", metavar="NAME", help="also measure this student on onnxruntime")
    ap.add_argument(
        "--int8", action="append", metavar="NAME", help="also measure this student quantized to int8 (onnxruntime)"
    )
    ap.add_argument(
        "--int8-calibration", type=int, default=512, metavar="N", help="CelebA faces calibrating int8 (default 512)"
    )
    ap.add_argument(
        "--int8-target-cosine",
        type=float,
        default=0.998,
        metavar="C",
        help="held-out cosine to the float graph that per-layer sensitivity keeps blocks float for (default 0.998)",
    )
    ap.add_argument(
        "--int8-whole", action="store_true", help="also measure the graph quantized whole (NAME-int8-whole)"
    )
    ap.add_argument(
        "--onnx-layout",
        choices=INPUT_LAYOUTS,
        default="nhwc",
        help="input layout of the --onnx and --int8 exports (default %(default)s, the faster on a CPU)",
    )
    ap.add_argument("--res", type=int, nargs="+", default=[16, 12, 8], help="LR-LR resolutions (px)")
    ap.add_argument("--hr-lr-res", type=int, nargs="*", default=[16], help="HR-LR resolutions (px)")
    ap.add_argument("--speed-res", type=int, default=16, help="side of the timed faces and of the plotted accuracy")
    ap.add_argument("--threads", type=int, default=2, help="torch/OpenCV/onnxruntime threads (default %(default)s)")
    ap.add_argument("--batch", type=int, default=SPEED_BATCH)
    ap.add_argument("--repeats", type=int, default=SPEED_REPEATS)
    ap.add_argument("--speed-faces", type=int, default=512)
    ap.add_argument("--latency-faces", type=int, default=LATENCY_FACES)
    ap.add_argument("--folds", type=int, nargs="+", default=None, help="LFW folds (default all 10; at least 2)")
    ap.add_argument("--pairs-file", type=Path, default=None, help="another pairs file (tests); default pairs.txt")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--goal-speed", type=float, default=GOAL_SPEED, help="faces/s goal line on the plot (0: none)")
    ap.add_argument("--goal-points", type=float, default=GOAL_POINTS, help="accuracy goal line: main minus this")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results", help="folder for students.{json,md,png}")
    ap.add_argument("--speed-only", action="store_true", help="measure and print speed only; write nothing")
    ap.add_argument("--quiet", action="store_true")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    if args.speed_res not in args.res:
        ap.error(f"--speed-res {args.speed_res} must be one of --res {args.res} (its accuracy is the plotted one)")
    try:
        return run(args, "python benchmarks/students.py " + shlex.join(argv))
    except AirdError as exc:
        print(f"students.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
