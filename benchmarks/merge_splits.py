"""Students trained once per split, merged into the 6,000-pair figure and paired against a reference.

    python benchmarks/merge_splits.py --student main=runs/bench-recipe/aird-A,runs/bench-recipe/aird-B \\
        --student flip-fuse=runs/levers-recipe/flip-fuse,runs/levers-recipe-B/flip-fuse \\
        --reference main --out docs/results/recipe-flip-all.json

Each ``--student LABEL=RUN_A,RUN_B`` names the split-A and split-B run directories of one student (as
``benchmarks/distill.py`` and ``benchmarks/levers.py`` leave them: ``results.json`` and
``scores-<res>-<pairs>.npz``). For every resolution and pair mode both runs scored, the per-pair scores are
merged into one ``split: all`` record (each fold's threshold chosen on the other folds of its own split;
TAR pooled over all 6,000 pairs) carrying the ten fold accuracies, and each student is paired over the
10 folds against ``--reference``. Prints the tables; writes ``--out`` and the same tables beside it (.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from aird.distill.run import run_scores
from aird.eval.metrics import kfold_accuracy, merged_verification_metrics
from aird.eval.records import load_records, make_record, markdown_table, paired_fold_table, write_records

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("A", "B")


def student_spec(text: str) -> tuple[str, tuple[Path, Path]]:
    label, sep, runs = text.partition("=")
    dirs = runs.split(",")
    if not sep or not label or len(dirs) != 2 or not all(dirs):
        raise argparse.ArgumentTypeError(f"expected LABEL=RUN_A,RUN_B, got {text!r}")
    return label, (Path(dirs[0]), Path(dirs[1]))


def merged_records(label: str, runs: tuple[Path, Path]) -> list[dict]:
    for split, run in zip(SPLITS, runs):
        if not (run / "results.json").is_file():
            raise SystemExit(
                f"merge_splits.py: {run} has no results.json: train or evaluate the split-{split} run first"
            )
    by_split = [load_records(run / "results.json") for run in runs]
    records = []
    for rec in by_split[0]:
        res, mode = rec["res"], rec["pairs"]
        parts = [run_scores(run, res, mode) for run in runs]
        if any(p is None for p in parts):
            continue
        metrics = merged_verification_metrics(parts)
        metrics.pop("threshold_mean")
        settings = {
            **rec["settings"],
            "merged_runs": [str(r) for r in runs],
            "fold_accuracies": [a for p in parts for a in kfold_accuracy(*p)["fold_accuracies"]],
        }
        fields = {**rec, "model": label, "split": "all", "n": sum(len(p[0]) for p in parts)}
        records.append(make_record(**{**fields, "metrics": metrics, "settings": settings}))
    if not records:
        raise SystemExit(f"merge_splits.py: {runs[0]} and {runs[1]} share no scored resolution and pair mode")
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=student_spec, action="append", required=True, help="LABEL=RUN_A,RUN_B")
    ap.add_argument("--reference", required=True, help="the LABEL every other student is paired against")
    ap.add_argument("--out", type=Path, required=True, help="results JSON (tables go beside it as .md)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    labels = [label for label, _ in args.student]
    if args.reference not in labels:
        ap.error(f"--reference {args.reference!r} is none of the students {labels}")
    command = "python benchmarks/merge_splits.py " + shlex.join(argv)
    records = [r for label, runs in args.student for r in merged_records(label, runs)]
    lines = [f"# Both splits merged (all 6,000 pairs)\n\nReproduce: `{command}`\n"]
    for metric, title in (("accuracy", "10-fold accuracy"), ("tar@far=1e-3", "TAR at FAR = 1e-3")):
        for mode in dict.fromkeys(r["pairs"] for r in records):
            rows = [r for r in records if r["pairs"] == mode]
            lines += [f"## {title}, {mode}\n", markdown_table(rows, ["model"], "res", metric, "{:.2%}"), ""]
    lines += [
        f"## Each student minus `{args.reference}`, paired over the 10 folds (points, mean ± standard error)\n",
        paired_fold_table(records, args.reference, by="model", minus_reference=True),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_records(args.out, records, command, merge=False)
    args.out.with_suffix(".md").write_text(text)
    print(f"records written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
