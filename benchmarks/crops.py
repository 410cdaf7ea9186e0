"""Crops as a camera pipeline gives them: each model on the aligned chip and on detector boxes.

    python benchmarks/crops.py                                   # teacher + shipped student, all 6,000 pairs
    python benchmarks/crops.py --student runs/fast/student.safetensors --no-teacher --no-shipped   # add one
    python benchmarks/crops.py --folds 1-2 --res 16 --quiet      # a quick check on 1,200 pairs

LFW View 2 verification (10-fold accuracy, TAR at FAR 1e-3) at 16 and 12 px, LR-LR and HR-LR (the HR side
by the teacher, aligned, as an enrolment photo), under three probe conditions (docs/evaluation.md):

- ``aligned``: the LR face made from dlib's 5-point aligned chip, as in every other benchmark;
- ``detector``: the LR face cut from dlib's detector box in the original photo, framed like the chip,
  upright (``aird.data.crops``), then made LR by the same degradation;
- ``jittered``: that box also shifted, scaled and turned per image (``--jitter-*`` sets how far).

Records of the last two are benchmarks ``lfw-crop:detector`` and ``lfw-crop:jittered``. Models: the
teacher, the shipped student and every ``--student`` file (a .safetensors from ``aird distill`` or an .onnx
from ``aird export``). Records merge into ``--out`` (default docs/results/crops.json when every pair is
evaluated, else aird-results/crops.json, so a subset never lands in the docs); crops.md beside it is
re-made from all the file's records.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from aird.cli import _finite, _folds
from aird.data.crops import DEFAULT_CROP_JITTER
from aird.data.degrade import RESOLUTIONS
from aird.data.jitter import Jitter
from aird.errors import AirdError
from aird.eval.compare import load_student_embedder
from aird.eval.records import check_results_file, load_records, write_records
from aird.eval.runner import PAIR_MODES, EvalConfig, run_verification
from aird.models.teacher import DlibTeacher

REPO = Path(__file__).resolve().parents[1]
DOCS_OUT = REPO / "docs" / "results" / "crops.json"
SUBSET_OUT = Path("aird-results") / "crops.json"
CONDITIONS = ("aligned", "detector", "jittered")
TAR = "tar@far=1e-3"


def _models(args: argparse.Namespace, teacher: DlibTeacher) -> list[tuple[object, str, dict]]:
    """(embedder, method, extra settings) of each model to evaluate, teacher first."""
    models: list[tuple[object, str, dict]] = [] if args.no_teacher else [(teacher, "teacher", {})]
    paths = ([] if args.no_shipped else [None]) + list(args.student)
    for path in paths:
        s = load_student_embedder(path)
        extra = {"student_file": str(s.path)}
        if s.card.get("fingerprint"):
            extra["card_fingerprint"] = s.card["fingerprint"]
        models.append((s.embedder, s.method, extra))
    if not models:
        raise AirdError("no model left to evaluate: drop --no-teacher or --no-shipped, or add --student PATH")
    names = [m[0].name for m in models]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise AirdError(
            f"two models are named {twice[0]!r}: their records would replace each other; give each a model card name"
        )
    return models


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def crops_table(records: list[dict]) -> str:
    """One row per (model, pairs, res, split): accuracy and TAR@FAR=1e-3 under each crop condition, and the
    accuracy lost from the aligned chip to the jittered box."""
    cell = {}
    for r in records:
        condition = r["settings"].get("crop", {}).get("condition", "aligned")
        cell[(r["model"], r["pairs"], r["res"], r["split"], condition)] = r["metrics"]
    conditions = [c for c in CONDITIONS if any(k[4] == c for k in cell)]
    rows = dict.fromkeys(k[:4] for k in cell)
    head = [f"accuracy {c}" for c in conditions] + ["drop (points)"] + [f"TAR@FAR=1e-3 {c}" for c in conditions]
    lines = [
        "| model | pairs | px | split | " + " | ".join(head) + " |",
        "|---|---|---:|---|" + "---:|" * len(head),
    ]
    for row in sorted(rows, key=lambda k: (k[0], k[1], -k[2], k[3])):
        m = {c: cell.get((*row, c), {}) for c in conditions}
        a, j = m.get("aligned", {}).get("accuracy"), m.get("jittered", {}).get("accuracy")
        drop = "—" if a is None or j is None else f"{100 * (a - j):.2f}"
        texts = [_pct(m[c].get("accuracy")) for c in conditions] + [drop] + [_pct(m[c].get(TAR)) for c in conditions]
        lines.append(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


def page(records: list[dict], command: str) -> str:
    cut = [
        r["settings"]["crop"] for r in records if r["settings"].get("crop", {}).get("condition", "aligned") != "aligned"
    ]
    how = ""
    if cut:
        c, f = cut[0], cut[0]["frame"]
        how = (
            f"Detector: dlib's HOG detector box (the alignment's own detection; the fallback box for "
            f"{c['fallback_boxes']} of {c['boxes_detected'] + c['fallback_boxes']} images), framed like the chip "
            f"(centre moved by ({f['dx']}, {f['dy']}) box sides, side x {f['side']}), upright, cut from the "
            "original photo, then the same LR degradation as the aligned chip."
        )
        jittered = [c for c in cut if c["condition"] == "jittered"]
        if jittered:
            j = jittered[0]["jitter"]
            how += (
                f" Jittered: that box moved per image by up to {j['shift']} of its side, scaled in {j['scale']} "
                f"and turned up to {j['rotate']} degrees (seed {jittered[0]['seed']})."
            )
        how += "\n\n"
    return (
        "# Aligned chips against detector crops\n\n"
        "LFW View 2 verification; hr-lr = the HR face by the teacher from the aligned chip (an enrolment "
        "photo), the LR face by the model; the condition applies to the LR side. Figures in %; drop = aligned "
        "minus jittered accuracy. Records: `crops.json` (each with the command that made it in "
        f"`settings.command`; the latest: `{command}`).\n\n" + how + crops_table(records)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path, action="append", default=[], help="another student file (repeatable)")
    ap.add_argument("--no-teacher", action="store_true", help="leave the teacher out (its records stay in --out)")
    ap.add_argument("--no-shipped", action="store_true", help="leave the shipped student out")
    ap.add_argument("--res", type=int, nargs="+", default=[16, 12], choices=RESOLUTIONS)
    ap.add_argument("--pairs", nargs="+", default=list(PAIR_MODES), choices=PAIR_MODES)
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--folds", type=_folds, default=None, help="LFW folds, e.g. 1-2 (default: all ten, 6,000 pairs)")
    ap.add_argument("--pairs-file", type=Path, default=None, help="pairs in LFW's format (tests); default pairs.txt")
    ap.add_argument("--jitter-shift", type=_finite, default=DEFAULT_CROP_JITTER.shift)
    ap.add_argument("--jitter-scale", type=_finite, nargs=2, default=list(DEFAULT_CROP_JITTER.scale))
    ap.add_argument("--jitter-rotate", type=_finite, default=DEFAULT_CROP_JITTER.rotate)
    ap.add_argument("--seed", type=int, default=0, help="seed of the degradation and of each image's box jitter")
    ap.add_argument("--out", type=Path, default=None, help=f"results file (default: {DOCS_OUT} for all pairs)")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--quiet", action="store_true")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    command = "python benchmarks/crops.py " + shlex.join(argv)
    every_pair = args.pairs_file is None and (args.folds is None or args.folds == list(range(1, 11)))
    out = args.out or (DOCS_OUT if every_pair else SUBSET_OUT)
    progress = not args.quiet
    try:
        check_results_file(out)
        jitter = Jitter(args.jitter_shift, tuple(args.jitter_scale), args.jitter_rotate)
        teacher = DlibTeacher("torch")
        models = _models(args, teacher)
        for res in args.res:
            for mode in args.pairs:
                for condition in args.conditions:
                    for embedder, method, extra in models:
                        cfg = EvalConfig(
                            res=res,
                            pairs=mode,
                            folds=args.folds,
                            pairs_file=str(args.pairs_file) if args.pairs_file else None,
                            seed=args.seed,
                            out_size=getattr(embedder, "input_size", None),
                            method=method,
                            crop=condition,
                            crop_jitter=jitter,
                        )
                        rec = run_verification(embedder, cfg, args.data_root, progress, gallery_embedder=teacher).record
                        rec["settings"].update(extra)
                        write_records(out, [rec], command)
                        m = rec["metrics"]
                        print(
                            f"{rec['model']:<28} {res:>2} px {mode} {condition:<9} n={rec['n']}: accuracy "
                            f"{m['accuracy']:.4f}, TAR@FAR=1e-3 {m[TAR]:.4f}",
                            flush=True,
                        )
        records = [r for r in load_records(out) if r["task"] == "verification"]
    except AirdError as exc:
        print(f"crops.py: error: {exc}", file=sys.stderr)
        return 2
    text = page(records, command)
    out.with_suffix(".md").write_text(text)
    print(crops_table(records))
    print(f"records in {out}, table in {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
