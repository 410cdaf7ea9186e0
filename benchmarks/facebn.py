"""FaceBN on real distribution shift: every adaptation mode on a distilled student.

    python benchmarks/facebn.py [--run runs/bench/aird-A] [--quick]

- LFW -> ORL: ORL identification at 16 and 12 px (teacher-enrolled HR gallery, adapted LR probes).
- LFW capture shifts the student never saw, 16 px LR-LR on the run's test folds: grayscale, blur,
  JPEG 20, sensor noise, low light, and all five at once (``mixed``); plus in-domain LFW.
- Sensitivity (facebn-ema): test batch 1, 8, 32, 128 and momentum 0.01 .. 0.5, on ``mixed`` and ORL 16 px.
- A per-layer plot of BN statistics: training, shifted data, after FaceBN.
Writes docs/results/facebn.json, facebn.md and facebn_bn_stats.png.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from aird.adapt.embedder import AdaptedEmbedder
from aird.adapt.facebn import FaceBN
from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.distill.data import SPLIT_TEST_FOLDS
from aird.distill.trainer import load_checkpoint
from aird.eval.protocols import orl_identification
from aird.eval.records import load_records, markdown_table, write_records
from aird.eval.runner import EvalConfig, run_identification, run_verification
from aird.models.embedder import TorchEmbedder, faces_to_tensor
from aird.models.heads import CosineClassifier
from aird.models.student import load_student
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "results"
SHIFTS: dict[str, dict] = {
    "none": {},
    "grayscale": {"grayscale": True},
    "blur": {"blur_sigma": 2.0},
    "jpeg20": {"jpeg_quality": 20},
    "noise": {"noise_std": 12.0},
    "lowlight": {"gamma": 2.5},
}
SHIFTS["mixed"] = {k: v for s in list(SHIFTS.values()) for k, v in s.items()}
MODES = ["off", "facebn-batch", "facebn-ema", "adabn", "facebn-alpha", "tent"]


def student_head(run: Path) -> CosineClassifier:
    state = load_checkpoint(run / "checkpoint.pt")["student_head"]
    head = CosineClassifier(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return head.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "bench" / "aird-A")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--quick", action="store_true", help="skip the sensitivity sweep")
    ap.add_argument("--tables-only", action="store_true", help="only redraw the tables and plot from facebn.json")
    args = ap.parse_args()
    command = "python benchmarks/facebn.py " + shlex.join(sys.argv[1:])
    root = data_root(args.data_root)
    student, meta = load_student(args.run / "student.safetensors")
    if args.tables_only:
        plot_bn_stats(student, int(meta["input_size"]), root, args.out / "facebn_bn_stats.png")
        write_tables(args.out / "facebn.json", load_records_command(args.out / "facebn.json"), args.out / "facebn.md")
        return
    size = int(meta["input_size"])
    name = f"{args.run.name}-student"
    split = "A" if args.run.name.endswith("-A") else "B"
    folds = SPLIT_TEST_FOLDS[split]
    teacher = DlibTeacher("torch")
    base = TorchEmbedder(student, name, size)
    head = student_head(args.run)
    json_path = args.out / "facebn.json"

    def embedder(mode: str, batch: int = 32, momentum: float = 0.1):
        if mode == "off":
            return base
        kwargs = {
            "facebn-ema": {"momentum": momentum},
            "facebn-alpha": {"alpha": 0.1},
            "tent": {"head": head, "logit_scale": 30.0, "lr": 1e-4},
        }.get(mode, {})
        return AdaptedEmbedder(student, name, mode, size, batch, **kwargs)

    def record(rec: dict, benchmark: str, adapt: str) -> dict:
        rec.update(benchmark=benchmark, adapt=adapt, method="aird")
        rec["settings"]["student_run"] = str(args.run)
        return rec

    records: list[dict] = []

    def keep(rec: dict) -> None:
        records.append(rec)
        write_records(json_path, [rec], command)
        m = rec["metrics"]
        figure = m.get("accuracy", m.get("rank1"))
        print(
            f"{rec['benchmark']:<22} {rec['model']:<16} {rec['adapt']:<34} {rec['res']:>3} px  {figure:.4f}", flush=True
        )

    for res in (16, 12):
        cfg = EvalConfig(res=res, out_size=size)
        keep(record(run_identification(teacher, "orl", cfg, root, False).record, "orl", "off") | {"method": "teacher"})
        for mode in MODES:
            r = run_identification(
                embedder(mode),
                "orl",
                EvalConfig(res=res, out_size=size, adapt=mode),
                root,
                False,
                gallery_embedder=teacher,
            )
            keep(record(r.record, "orl", mode))
    for shift, kwargs in SHIFTS.items():
        bench = "lfw" if shift == "none" else f"lfw-shift:{shift}"
        cfg = EvalConfig(res=16, folds=folds, out_size=size, **kwargs)
        t = run_verification(teacher, cfg, root, False).record
        keep(record(t, bench, "off") | {"method": "teacher"})
        for mode in MODES:
            r = run_verification(
                embedder(mode), EvalConfig(res=16, folds=folds, out_size=size, adapt=mode, **kwargs), root, False
            )
            keep(record(r.record, bench, mode))
    if not args.quick:
        for batch, momentum in [(1, 0.1), (8, 0.1), (128, 0.1), (32, 0.01), (32, 0.05), (32, 0.2), (32, 0.5)]:
            tag = f"facebn-ema(batch={batch},momentum={momentum})"
            r = run_verification(
                embedder("facebn-ema", batch, momentum),
                EvalConfig(res=16, folds=folds, out_size=size, adapt=tag, **SHIFTS["mixed"]),
                root,
                False,
            )
            keep(record(r.record, "lfw-shift:mixed", tag))
            r = run_identification(
                embedder("facebn-ema", batch, momentum),
                "orl",
                EvalConfig(res=16, out_size=size, adapt=tag),
                root,
                False,
                gallery_embedder=teacher,
            )
            keep(record(r.record, "orl", tag))
    plot_bn_stats(student, size, root, args.out / "facebn_bn_stats.png")
    write_tables(json_path, command, args.out / "facebn.md")


def plot_bn_stats(student: torch.nn.Module, size: int, root: Path, path: Path) -> None:
    """Per BN layer: channel-averaged mean and variance of its input under training statistics,
    measured on ORL 16 px faces (shifted data), and after FaceBN-ema has seen those faces."""
    from aird.data.degrade import Degradation
    from aird.eval.plots import plot_layer_statistics

    split = orl_identification(root)
    chips = align_images(split.paths, align_settings_for("orl"), progress=False)
    faces = Degradation(res=16, out_size=size).batch(chips.chips, chips.digests)
    x = faces_to_tensor(faces)
    measure = FaceBN(student, mode="batch")
    seen: dict[str, tuple[float, float]] = {}
    hooks = [
        bn.register_forward_pre_hook(
            lambda m, inp, n=n: seen.__setitem__(n, (inp[0].mean().item(), inp[0].var().item()))
        )
        for n, bn in measure.layers.items()
    ]
    measure(x)
    for h in hooks:
        h.remove()
    ema = FaceBN(student, mode="ema", momentum=0.1)
    for i in range(0, len(x), 32):
        ema(x[i : i + 32])
    after = ema.state_dict()["default"]
    names = list(measure.layers)
    plot_layer_statistics(
        {
            "training statistics (LFW, LR faces)": (
                [measure.layers[n].running_mean.mean().item() for n in names],
                [measure.layers[n].running_var.mean().item() for n in names],
            ),
            "ORL 16 px batch statistics (shifted)": ([seen[n][0] for n in names], [seen[n][1] for n in names]),
            "after FaceBN-ema (momentum 0.1, batches of 32)": (
                [after[f"{n}.running_mean"].mean().item() for n in names],
                [after[f"{n}.running_var"].mean().item() for n in names],
            ),
        },
        path,
        title="Student BN statistics: training vs ORL (shifted) vs after FaceBN",
    )


def load_records_command(path: Path) -> str:
    """The command stored with the records (the run that measured them, not a table redraw)."""
    import json

    return json.loads(path.read_text())["command"]


def write_tables(json_path: Path, command: str, md: Path) -> None:
    recs = load_records(json_path)
    base = [r for r in recs if "(" not in r["adapt"]]
    sweep = [r for r in recs if "(" in r["adapt"]]
    lines = [
        "# FaceBN: test-time adaptation on real distribution shift\n",
        f"Reproduce: `{command}` (records: `facebn.json`). Student: the AIRD run named in each record's "
        "`settings.student_run`; LFW figures are on that run's own test folds (3,000 pairs).\n",
        "\n## LFW 16 px LR-LR accuracy under capture shifts (columns: adaptation)\n",
        markdown_table(
            [r for r in base if r["task"] == "verification"], ["benchmark", "method"], "adapt", "accuracy", "{:.2%}"
        ),
        "\n## ORL identification rank-1 (LFW-trained student; HR gallery by the teacher)\n",
        markdown_table(
            [r for r in base if r["task"] == "identification"], ["res", "method"], "adapt", "rank1", "{:.2%}"
        ),
        "\n## Sensitivity of facebn-ema (test batch, momentum)\n",
        markdown_table([r for r in sweep if r["task"] == "verification"], ["adapt"], "benchmark", "accuracy", "{:.2%}")
        if sweep
        else "(not run)",
        markdown_table([r for r in sweep if r["task"] == "identification"], ["adapt"], "benchmark", "rank1", "{:.2%}")
        if sweep
        else "",
        "\n![BN statistics](facebn_bn_stats.png)\n",
    ]
    md.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
