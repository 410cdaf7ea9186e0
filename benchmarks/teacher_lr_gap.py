"""How far the HR teacher falls at low resolution: the table that motivates aird.

LFW View 2 10-fold verification (LR-LR and HR gallery vs LR probe), LFW and ORL identification
(HR gallery, LR probes) at 150 (HR), 32, 24, 20, 16, 12 and 8 px.

    python benchmarks/teacher_lr_gap.py [--model dlib_resnet] [--res 32 16 8] [--data-root DIR]

Writes docs/results/teacher_lr_gap.json (records), teacher_lr_gap.md (tables) and PNG plots.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from aird.eval.plots import plot_roc, plot_score_distributions
from aird.eval.records import load_records, markdown_table, write_records
from aird.eval.runner import EvalConfig, run_identification, run_verification
from aird.models.load import load_embedder

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"
RES = [150, 32, 24, 20, 16, 12, 8]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dlib_resnet")
    ap.add_argument("--res", type=int, nargs="+", default=RES)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    command = "python benchmarks/teacher_lr_gap.py " + shlex.join(sys.argv[1:])
    json_path = args.out / "teacher_lr_gap.json"
    embedder = load_embedder(args.model)
    progress = not args.quiet
    curves, dists, thresholds = {}, {}, {}
    for res in args.res:
        r = None if res == 150 else res
        for mode in ["lr-lr"] if r is None else ["lr-lr", "hr-lr"]:
            result = run_verification(embedder, EvalConfig(res=r, pairs=mode), args.data_root, progress)
            write_records(json_path, [result.record], command)
            label = "HR 150 px" if r is None else f"{res} px {mode}"
            curves[label] = (result.scores, result.labels)
            if mode == "lr-lr":
                dists[label] = (result.scores, result.labels)
                thresholds[label] = result.threshold
            print(f"lfw verification {label:>14}: accuracy {result.record['metrics']['accuracy']:.4f}", flush=True)
        for bench in ("lfw", "orl"):
            rec = run_identification(embedder, bench, EvalConfig(res=r), args.data_root, progress).record
            write_records(json_path, [rec], command)
            print(f"{bench} identification {res:>3} px: rank-1 {rec['metrics']['rank1']:.4f}", flush=True)
    plot_roc(curves, args.out / "teacher_lr_gap_roc.png", title=f"LFW verification, {args.model}, by resolution")
    plot_score_distributions(
        dists,
        args.out / "teacher_lr_gap_scores.png",
        thresholds=thresholds,
        title=f"LFW genuine vs impostor cosine, {args.model}, LR-LR",
    )
    records = [r for r in load_records(json_path) if r["model"] == embedder.name]
    ver = [r for r in records if r["task"] == "verification"]
    ident = [r for r in records if r["task"] == "identification"]
    tables = [
        "# The HR teacher at low resolution\n",
        f"Reproduce: `{command}` (records: `teacher_lr_gap.json`; `hr-hr` = both faces HR).\n",
        "## LFW verification, 10-fold accuracy (6,000 pairs)\n",
        markdown_table(ver, ["model", "pairs"], "res", "accuracy"),
        "\n## LFW verification, TAR at FAR = 1e-3\n",
        markdown_table(ver, ["model", "pairs"], "res", "tar@far=1e-3"),
        "\n## Identification rank-1 (HR gallery, LR probes)\n",
        markdown_table(ident, ["model", "benchmark"], "res", "rank1"),
        "\n## LFW open-set DIR at FAR = 1e-2\n",
        markdown_table([r for r in ident if r["benchmark"] == "lfw"], ["model", "benchmark"], "res", "dir@far=1e-2"),
        "\n![ROC](teacher_lr_gap_roc.png)\n\n![scores](teacher_lr_gap_scores.png)\n",
    ]
    text = "\n".join(tables)
    (args.out / "teacher_lr_gap.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
