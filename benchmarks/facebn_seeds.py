"""FaceBN's stream benchmark over several stream seeds: is a stream's loss the adapter's, or one order's luck?

    python benchmarks/facebn_seeds.py --runs docs/results/facebn-recipe/B docs/results/facebn-seeds/recipe-B/seed1 \\
        docs/results/facebn-seeds/recipe-B/seed2 --out docs/results/facebn-seeds/recipe-B

Each ``--runs`` folder holds one ``benchmarks/facebn.py`` output (``facebn.json``) made with its own
``--seed`` (the order the faces arrive in, the people of each burst, which faces fall in the night half) and
otherwise the same command. For every student, stream and adapted mode, the difference from ``off`` on the
same stream is taken per seed (``off`` of a seed: the same order's unadapted run), then averaged over the
seeds. A stream that loses under every seed is the adapter's doing; one that loses under one seed and gains
under another is within what a single order can tell. Probes (ORL) and folds (LFW) are the same under every
seed, so averaging seeds removes the order's luck, not the sampling of the faces: each seed's probe- or
fold-paired standard error is kept beside it.

Writes ``<out>/facebn-seeds.json`` (one record per student, stream and mode: the metric averaged over the
seeds, each seed's figures in ``settings.per_seed``) and ``<out>/facebn-seeds.md``; prints the tables.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from aird.eval.records import load_records, make_record, paired_difference, write_records

BAR = -0.3  # the bar: never more than 0.3 points below `off`


def seed_of(records: list[dict], folder: Path) -> int:
    """The one stream seed of a facebn.py output's adapted streams."""
    seeds = {
        r["settings"]["adaptation"]["stream_seed"] for r in records if "stream_seed" in r["settings"]["adaptation"]
    }
    if len(seeds) != 1:
        found = ", ".join(map(str, sorted(seeds))) or "none"
        raise SystemExit(f"facebn_seeds.py: {folder} holds streams of seeds {found}; give one folder per --seed run")
    return seeds.pop()


def load_runs(folders: list[Path]) -> dict[int, list[dict]]:
    runs: dict[int, list[dict]] = {}
    for folder in folders:
        path = folder / "facebn.json"
        if not path.is_file():
            raise SystemExit(f"facebn_seeds.py: {path} not found: run benchmarks/facebn.py --seed K --out {folder}")
        records = [r for r in load_records(path) if "@" in r["benchmark"]]
        seed = seed_of(records, folder)
        if seed in runs:
            raise SystemExit(f"facebn_seeds.py: two folders hold stream seed {seed}")
        runs[seed] = records
    return runs


def metric_of(record: dict) -> str:
    return "rank1" if record["task"] == "identification" else "accuracy"


def seed_records(runs: dict[int, list[dict]], command: str) -> list[dict]:
    """One record per (student, stream, adapted mode) present under every seed."""
    cells: dict[tuple, dict[int, dict]] = {}
    for seed, records in runs.items():
        for r in records:
            cells.setdefault((r["model"], r["benchmark"], r["res"], r["adapt"]), {})[seed] = r
    out = []
    for (model, bench, res, adapt), by_seed in cells.items():
        offs = cells.get((model, bench, res, "off"), {})
        seeds = sorted(s for s in by_seed if s in offs)
        if adapt == "off" or len(seeds) != len(runs):
            continue
        first = by_seed[seeds[0]]
        metric = metric_of(first)
        per_seed = {}
        for s in seeds:
            value, off = by_seed[s]["metrics"][metric], offs[s]["metrics"][metric]
            se = paired_difference(by_seed[s], offs[s])
            per_seed[str(s)] = {
                metric: value,
                "off": off,
                "difference": (value - off) * 100,
                "difference_se": se[1] if se else None,
            }
        diffs = [p["difference"] for p in per_seed.values()]
        settings = {
            "stream_seeds": seeds,
            "per_seed": per_seed,
            "difference_mean": float(np.mean(diffs)),
            "off_mean": float(np.mean([p["off"] for p in per_seed.values()])),
            "adaptation": {k: v for k, v in first["settings"]["adaptation"].items() if k != "stream_seed"},
            "student": first["settings"].get("student"),
            "command": command,
        }
        out.append(
            make_record(
                **{
                    k: first[k] for k in ("benchmark", "task", "model", "method", "adapt", "res", "pairs", "split", "n")
                },
                metrics={metric: float(np.mean([p[metric] for p in per_seed.values()]))},
                settings=settings,
            )
        )
    return out


def tables(records: list[dict]) -> list[str]:
    lines: list[str] = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["model"], r["adapt"]), []).append(r)
    summary = [
        "\n## Streams below the bar (−0.3 points against `off`), per seed and on the mean over seeds\n",
        "| student | mode | streams | below, per seed | below on the mean | below under every seed | mean gain |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for (model, adapt), rs in sorted(groups.items()):
        seeds = rs[0]["settings"]["stream_seeds"]
        lines += [
            f"\n## {model}, {adapt} minus `off` (points; seeds {', '.join(map(str, seeds))})\n",
            "| condition | stream | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
            "|---|---|" + "---:|" * (len(seeds) + 1),
        ]
        for r in sorted(rs, key=lambda r: (r["benchmark"].split("@")[0], -r["res"], r["benchmark"])):
            cells = []
            for s in seeds:
                p = r["settings"]["per_seed"][str(s)]
                se = f" ± {p['difference_se']:.1f}" if p["difference_se"] is not None else ""
                cells.append(f"{p['difference']:+.2f}{se}")
            cond, stream = r["benchmark"].split("@")
            mean = r["settings"]["difference_mean"]
            mark = " **below**" if mean < BAR else ""
            lines.append(f"| {cond} {r['res']} px | {stream} | " + " | ".join(cells) + f" | {mean:+.2f}{mark} |")
        per_seed = [sum(r["settings"]["per_seed"][str(s)]["difference"] < BAR for r in rs) for s in seeds]
        on_mean = sum(r["settings"]["difference_mean"] < BAR for r in rs)
        every = sum(all(p["difference"] < BAR for p in r["settings"]["per_seed"].values()) for r in rs)
        gain = np.mean([r["settings"]["difference_mean"] for r in rs])
        summary.append(
            f"| {model} | {adapt} | {len(rs)} | {' / '.join(map(str, per_seed))} | {on_mean} | {every} | {gain:+.2f} |"
        )
    return lines + summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--runs", nargs="+", type=Path, required=True, help="benchmarks/facebn.py --out folders, one per seed"
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for facebn-seeds.json and .md")
    args = ap.parse_args()
    if len(args.runs) < 2:
        ap.error("give at least two --runs folders (stream seeds) to compare")
    command = "python benchmarks/facebn_seeds.py " + shlex.join(sys.argv[1:])
    records = seed_records(load_runs(args.runs), command)
    if not records:
        raise SystemExit("facebn_seeds.py: no stream was run with `off` and a mode under every seed")
    args.out.mkdir(parents=True, exist_ok=True)
    write_records(args.out / "facebn-seeds.json", records, command, merge=False)
    lines = [
        "# FaceBN streams over stream seeds\n",
        f"Reproduce: `{command}` (after the `benchmarks/facebn.py --seed K` runs its folders hold).\n",
        "Each cell: the mode's accuracy (LFW) or rank-1 (ORL) minus `off` on the same stream and seed, in points, "
        "± that seed's standard error paired over the folds or probes (which every seed shares).",
        *tables(records),
    ]
    (args.out / "facebn-seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
