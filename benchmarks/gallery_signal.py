"""Could a camera's gain from adaptation be told without labels, from the gallery's scores? (not adopted)

    python benchmarks/gallery_signal.py [--models shipped fast pruned] [--out docs/results/adapt-check]

``aird adapt-check`` needs each crop's person. A label-free stand-in would read only what a deployment
sees: how its probes score against the gallery. On the ORL cameras of ``benchmarks/adapt_check.py`` (16
and 12 px, five capture shifts, two orders, ``facebn-safe`` at one crop per step), for every shipped
student, each stream is embedded adapted and plain, and three label-free figures are set beside the rank-1
change: the probes' mean best score (cosine to their nearest gallery person), their mean margin (best minus
second best) and the share the model card's threshold accepts at FAR 1e-3. A useful signal would fall where
rank-1 falls.

The same streams also answer a second question: does a hedge between the two embeddings (each probe's
adapted and plain embeddings averaged, weight ``w`` on the adapted one, then normalised) keep the gain and
spare the cameras where adapting loses? Its rank-1 change is in ``settings.averaged_rank1_change``.

Writes ``<out>/gallery-signal.json`` (one record per student, camera and order: the rank-1 change in
``metrics``, the signals' changes in ``settings``) and ``gallery-signal.md``; prints the table. About 4
minutes per student on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from adapt_check import RESOLUTIONS, SHIFTS, enrol_orl, orl_chips, write_camera  # noqa: E402 - the same cameras

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "results" / "adapt-check"
SIGNALS = ("best_score", "margin", "accepted")
AVERAGE_WEIGHTS = (0.5, 0.7)  # weight on the adapted embedding; 1 is adapting, 0 is off
BAR = -0.3


def figures(gallery, faces: list, labels: list[str]) -> dict[str, float]:
    """Rank-1 (labels) and the label-free figures of one pass, as fractions."""
    results = gallery.search(faces, top_k=2)
    best = np.array([r.candidates[0].score for r in results])
    second = np.array([r.candidates[1].score for r in results])
    return {
        "rank1": float(np.mean([r.candidates[0].name == lab for r, lab in zip(results, labels)])),
        "best_score": float(best.mean()),
        "margin": float((best - second).mean()),
        "accepted": float(np.mean([r.status == "match" for r in results])),
    }


def averaged(adapted: list, plain: list, w: float) -> list:
    """Each probe with ``w`` × its adapted embedding + (1 − w) × its plain one, normalised."""
    if [f.source for f in adapted] != [f.source for f in plain]:
        raise RuntimeError("the adapted and plain passes differ in their faces")
    out = []
    for a, p in zip(adapted, plain):
        e = w * a.embedding + (1 - w) * p.embedding
        out.append(dataclasses.replace(p, embedding=(e / np.linalg.norm(e)).astype(np.float32)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["shipped", "fast", "pruned"])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    import aird
    from aird.data.folders import natural_key
    from aird.eval.records import environment, make_record, write_records
    from aird.io import atomic_path
    from aird.paths import data_root

    root = data_root(args.data_root)
    chips = orl_chips(root)
    command = shlex.join(["python", "benchmarks/gallery_signal.py", *(argv if argv is not None else sys.argv[1:])])
    records = []
    for model in args.models:
        recognizer = aird.load(model, adapt="facebn-safe", batch_size=1)
        with tempfile.TemporaryDirectory() as tmp:
            gallery = enrol_orl(recognizer, Path(tmp) / "orl.db", chips)
            for res in RESOLUTIONS:
                for shift, params in SHIFTS.items():
                    files = write_camera(Path(tmp) / f"orl-{res}px-{shift}", chips, res, params)
                    for order in ("name", "folder"):
                        stream_files = (
                            sorted(files, key=lambda f: (natural_key(f), str(f))) if order == "name" else files
                        )
                        labels = [f.parent.name for f in stream_files]
                        stream = f"signal-{res}-{shift}-{order}"
                        adapted, _ = recognizer.represent_files(stream_files, cropped=True, stream=stream)
                        plain, _ = recognizer.represent_files(stream_files, cropped=True)
                        recognizer.streams.reset(stream)
                        a, o = figures(gallery, adapted, labels), figures(gallery, plain, labels)
                        change = {k: 100 * (a[k] - o[k]) for k in a}
                        hedge = {
                            str(w): 100 * (figures(gallery, averaged(adapted, plain, w), labels)["rank1"] - o["rank1"])
                            for w in AVERAGE_WEIGHTS
                        }
                        records.append(
                            make_record(
                                benchmark=f"camera:orl-{res}px-{shift}@{order}/b1",
                                task="identification",
                                model=recognizer.name,
                                method=str(recognizer.card.get("method") or "unknown"),
                                adapt="facebn-safe",
                                res=res,
                                pairs=None,
                                split="all",
                                n=len(labels),
                                metrics={"rank1": a["rank1"]},
                                settings={
                                    "model_fingerprint": recognizer.fingerprint,
                                    "off": o,
                                    "adapted": a,
                                    "change_points": change,
                                    "averaged_rank1_change": hedge,
                                    "degradation": {"res": res, "down": "area", "up": None, **params},
                                    "adaptation": {
                                        **recognizer.streams.settings(),
                                        "order": order,
                                        "test_batch_size": 1,
                                    },
                                    "environment": environment(),
                                },
                            )
                        )
                        print(
                            f"{recognizer.name:<14} orl-{res}px-{shift:<9} {order:<6} "
                            + " ".join(f"{k} {v:+6.2f}" for k, v in change.items())
                            + " ".join(f" averaged w={w} {v:+6.2f}" for w, v in hedge.items()),
                            flush=True,
                        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_records(args.out / "gallery-signal.json", records, command, merge=False)
    change = np.array([[r["settings"]["change_points"][k] for k in ("rank1", *SIGNALS)] for r in records])
    losing = change[:, 0] < BAR
    lines = [
        "# Label-free signals from the gallery against the rank-1 change of adapting (not adopted)",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{len(records)} camera streams ({', '.join(dict.fromkeys(r['model'] for r in records))}; ORL cameras of "
        "`benchmarks/adapt_check.py`, `facebn-safe`, one crop per step). Changes are adapted minus plain, in "
        "points (scores: cosine × 100).",
        "",
        "| signal | correlation with the rank-1 change | falls on the streams where rank-1 falls | falls anywhere |",
        "|---|---:|---:|---:|",
    ]
    for i, name in enumerate(SIGNALS, 1):
        corr = float(np.corrcoef(change[:, 0], change[:, i])[0, 1])
        lines.append(
            f"| {name} | {corr:+.2f} | {int((change[losing, i] < 0).sum())} of {int(losing.sum())} "
            f"| {int((change[:, i] < 0).sum())} of {len(records)} |"
        )
    lines += [
        "",
        "The hedge: each probe's adapted and plain embeddings averaged (weight w on the adapted one), rank-1 "
        "against `off`, in points, per student (w = 1 is adapting).",
        "",
        "| model | w | mean | streams below −0.3 | worst |",
        "|---|---:|---:|---:|---:|",
    ]
    for model in dict.fromkeys(r["model"] for r in records):
        mine = [r["settings"] for r in records if r["model"] == model]
        for w in ("1", *map(str, AVERAGE_WEIGHTS)):
            v = np.array([s["change_points"]["rank1"] if w == "1" else s["averaged_rank1_change"][w] for s in mine])
            lines.append(f"| {model} | {w} | {v.mean():+.2f} | {int((v < BAR).sum())} | {v.min():+.2f} |")
    weights = [str(w) for w in AVERAGE_WEIGHTS]
    summary = len(lines)  # what is printed: the two summary tables, not the per-camera one
    lines += [
        "",
        "| model | camera | rank-1 | " + " | ".join(SIGNALS) + " | " + " | ".join(f"w={w}" for w in weights) + " |",
        "|---|---|---:|" + "---:|" * (len(SIGNALS) + len(weights)),
    ]
    for r in records:
        c, h = r["settings"]["change_points"], r["settings"]["averaged_rank1_change"]
        lines.append(
            f"| {r['model']} | {r['benchmark'].removeprefix('camera:')} | {c['rank1']:+.2f} | "
            + " | ".join(f"{c[k]:+.2f}" for k in SIGNALS)
            + " | "
            + " | ".join(f"{h[w]:+.2f}" for w in weights)
            + " |"
        )
    with atomic_path(args.out / "gallery-signal.md") as md:
        md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:summary]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
