"""The fast student's ablation: finished runs of configs/fast.yaml and its variants, side by side.

    aird distill --config configs/ablations/fast-3ep.yaml   # and fast-3ep-center, fast-12ep,
                                                            # fast-{wide,deep,nobridge,dlib32,dlib32-prog,both}-12ep,
                                                            # fast-mixup, fast-jitter, fast-4x4
    aird eval --benchmark orl --res 16 --model runs/fast-3ep-all/student.safetensors --out runs/fast-3ep-all/orl.json
    aird eval --benchmark lfw --res 16 --grayscale --model runs/fast-3ep-all/student.safetensors --out runs/fast-3ep-all/grey.json
    python benchmarks/fast_ablation.py --run 3ep=runs/fast-3ep-all --run 3ep-center=runs/fast-3ep-center-all \\
        --run 12ep=runs/fast-12ep-all --run 36ep-v1=runs/aird-fast-all-v1 --run 36ep=runs/aird-fast-all \\
        --run 36ep-mixup=runs/fast-mixup-all --run 36ep-jitter=runs/fast-jitter-all --run 36ep-4x4=runs/fast-4x4-all \\
        --run 12ep-wide=runs/fast-wide-12ep-all --run 12ep-deep=runs/fast-deep-12ep-all \\
        --run 12ep-nobridge=runs/fast-nobridge-12ep-all --run 12ep-dlib32=runs/fast-dlib32-12ep-all \\
        --run 12ep-dlib32-prog=runs/fast-dlib32-prog-12ep-all --run 12ep-both=runs/fast-both-12ep-all

The 3- and 12-epoch runs and ``36ep-v1`` (runs/aird-fast-all-v1, the fast file shipped until 2026-11-30)
learnt from the former shipped student; ``36ep`` (configs/fast.yaml) and the 36-epoch variants from the
shipped student retrained that day.

Each run's LFW records (its results.json, split all) and, when the run directory holds one, its ORL
identification record (orl.json: HR gallery, 16 px probes) and its LFW record with every face monochrome
(grey.json) go into docs/results/fast-ablation.json,
each with ``settings.ablation`` naming its variant; a table of the 16 px figures is printed and written
to docs/results/fast-ablation.md. ORL is the validation set the recipe was chosen on: it is neither
LFW nor in any training pool.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from aird.errors import AirdError
from aird.eval.records import load_records, write_records

REPO = Path(__file__).resolve().parents[1]


def variant(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=RUN_DIR, got {text!r}")
    return label, Path(path)


def collect(label: str, run: Path) -> list[dict]:
    records = [r for r in load_records(run / "results.json") if r.get("split") == "all"]
    for extra in ("orl.json", "grey.json"):  # ORL identification; LFW with every probe monochrome
        if (run / extra).is_file():
            records += load_records(run / extra)
    for r in records:
        r["settings"]["ablation"] = label
        r["model"] = f"{label}/{r['model']}"  # the runs share a config name; the variant keeps them apart
    return records


def row(label: str, records: list[dict]) -> str:
    def metric(task: str, res: int, pairs: str | None, key: str, grey: bool = False) -> str:
        for r in records:
            monochrome = bool((r["settings"].get("degradation") or {}).get("grayscale"))
            if r["task"] == task and r["res"] == res and r.get("pairs") == pairs and monochrome == grey:
                return f"{100 * r['metrics'][key]:.2f}"
        return "—"

    exp = next(r["settings"]["experiment"] for r in records if "experiment" in r["settings"])
    center = exp["losses"].get("ild", {}).get("center", False)
    wall = next(r["settings"]["train_wall_s"] for r in records if "train_wall_s" in r["settings"])
    bridge, lean = (exp.get("bridge") or {}).get("student"), (exp.get("bridge") or {}).get("teacher_weight") or 0
    target = f"{bridge} student (bridge)" if bridge else "HR teacher"
    if bridge and lean:
        target += f" and HR teacher (w {lean:g})"
    mix = (exp.get("bridge") or {}).get("mixup")
    mixup = f"{mix['prob']:g} (α {mix['alpha']:g})" if mix else "no"
    sides = exp["student"].get("progressive") or []
    side = " → ".join(str(s) for s in [*sides, exp["student"]["input_size"]])
    return (
        f"| {label} | `{exp['student']['model']}` | {side} | {target} | {exp['train']['epochs']} | "
        f"{'yes' if center else 'no'} | {mixup} | "
        f"{metric('verification', 16, 'lr-lr', 'accuracy')} | {metric('verification', 16, 'lr-lr', 'accuracy', True)} | "
        f"{metric('verification', 16, 'lr-lr', 'tar@far=1e-3')} | "
        f"{metric('verification', 16, 'hr-lr', 'accuracy')} | {metric('identification', 16, None, 'rank1')} | "
        f"{wall / 60:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=variant, action="append", required=True, help="LABEL=RUN_DIR, repeatable")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "fast-ablation.json")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    try:
        per_run = {label: collect(label, run) for label, run in args.run}
    except AirdError as exc:
        print(f"fast_ablation.py: error: {exc}", file=sys.stderr)
        return 2
    lines = [
        "# The fast student's ablation (`lr_resnet` and its variants)\n",
        f"Reproduce: `python benchmarks/fast_ablation.py {shlex.join(argv)}` after the runs its docstring lists. "
        "LFW: all 6,000 pairs, 10-fold accuracy and TAR at FAR 1e-3 (%); ORL: rank-1 (%) of 16 px probes "
        "against one HR photo per person (the gallery embedded by the same student, from the aligned chip), the "
        "validation set the recipe was chosen on. LFW grey: the same LR-LR pairs with every face monochrome "
        "(`aird eval --grayscale`, the run's grey.json; ORL's photos are grey).\n",
        "| variant | student | input px (by epoch) | f_t | epochs | centred cosine | mixup | LFW 16 px LR-LR | "
        "LFW grey | TAR@1e-3 | LFW 16 px HR-LR | ORL 16 px rank-1 | train min |",
        "|---|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
        *(row(label, recs) for label, recs in per_run.items()),
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    write_records(
        args.out,
        [r for recs in per_run.values() for r in recs],
        "python benchmarks/fast_ablation.py " + shlex.join(argv),
        merge=False,
    )
    args.out.with_suffix(".md").write_text(table)
    print(f"records written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
