"""The leak-threshold study: what the extra pools' leak filter drops at each threshold, against what a
same-person filter would need.

    python benchmarks/leak.py [--split all] [--pools celeba utkface]

For every image of each extra pool, the teacher's cosine to its nearest image of a test person (the
split's test folds) is what ``aird.distill.data.leak_filter`` compares with ``data.leak_threshold``.
This script prints and records (docs/results/leak.json, leak.md, leak.png) how many images each
threshold drops, beside the reference it should be read against: the teacher's HR-HR cosines of LFW's
same-person pairs (every pair of two images of one person among the test people). A threshold above most
same-person cosines catches near-copies only; one near them catches other photos of the same people,
and strangers with them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.data.lfw import LFW
from aird.distill.data import SPLIT_TEST_FOLDS, _pool_items
from aird.eval.metrics import similarity_matrix
from aird.eval.records import git_commit
from aird.io import write_json
from aird.models.embedder import embed_chips
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)


def nearest(extra: np.ndarray, test: np.ndarray, chunk: int = 2048) -> np.ndarray:
    return np.concatenate(
        [similarity_matrix(extra[i : i + chunk], test).max(axis=1) for i in range(0, len(extra), chunk)]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="all", choices=sorted(SPLIT_TEST_FOLDS))
    ap.add_argument("--pools", nargs="+", default=["celeba", "utkface"], choices=["celeba", "utkface"])
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "leak.json")
    ap.add_argument("--quiet", action="store_true")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    root, progress = data_root(args.data_root), not args.quiet
    teacher = DlibTeacher("torch")
    lfw = LFW(root)
    people = lfw.fold_identities(SPLIT_TEST_FOLDS[args.split])
    items = [it for it in lfw.folder().items if it.identity in people]
    chips = align_images([it.path for it in items], align_settings_for("lfw", 150), progress=progress)
    test = embed_chips(teacher, chips, None, progress, desc="teacher on test people")
    names = np.array([it.identity for it in items])
    sims = similarity_matrix(test, test)
    upper = np.triu(np.ones_like(sims, dtype=bool), 1)
    same = sims[upper & (names[:, None] == names[None, :])]
    reference = {q: float(np.quantile(same, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)}

    pools = {}
    for pool in args.pools:
        paths, _ = _pool_items(root, pool, args.split)
        pchips = align_images(paths, align_settings_for(pool, 150), progress=progress, desc=f"aligning {pool}")
        near = nearest(embed_chips(teacher, pchips, None, progress, desc=f"teacher on {pool}"), test)
        pools[pool] = {
            "images": len(near),
            "dropped": {f"{t:.2f}": int((near >= t).sum()) for t in THRESHOLDS},
            "nearest_quantiles": {f"{q:.2f}": float(np.quantile(near, q)) for q in (0.5, 0.9, 0.99, 0.999)},
            "nearest": near.round(5).tolist(),
        }

    head = "| threshold | " + " | ".join(f"{p} dropped of {v['images']:,}" for p, v in pools.items()) + " |"
    lines = [
        f"# The leak filter: images dropped at each threshold (split {args.split})\n",
        f"Reproduce: `python benchmarks/leak.py {shlex.join(argv)}`. The teacher's cosine of each extra image to "
        f"its nearest image of the {len(people):,} test people ({len(items):,} images). For reference, LFW "
        f"same-person HR-HR cosines among those people ({len(same):,} pairs): "
        + ", ".join(f"{int(100 * q)}th percentile {v:.3f}" for q, v in reference.items())
        + ".\n",
        head,
        "|---:|" + "---:|" * len(pools),
        *(
            f"| {t:.2f} | "
            + " | ".join(
                f"{v['dropped'][f'{t:.2f}']:,} ({v['dropped'][f'{t:.2f}'] / v['images']:.1%})" for v in pools.values()
            )
            + " |"
            for t in THRESHOLDS
        ),
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    doc = {
        "command": "python benchmarks/leak.py " + shlex.join(argv),
        "git_commit": git_commit(),
        "split": args.split,
        "test_people": len(people),
        "test_images": len(items),
        "same_person_hr_hr_quantiles": {f"{q:.2f}": v for q, v in reference.items()},
        "same_person_pairs": int(len(same)),
        "pools": pools,
    }
    write_json(args.out, doc)
    args.out.with_suffix(".md").write_text(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0.6, 1.0, 81)
    ax.hist(same, bins=bins, density=True, alpha=0.5, label="LFW same-person pairs (HR-HR)")
    for pool, v in pools.items():
        ax.hist(v["nearest"], bins=bins, density=True, histtype="step", lw=1.5, label=f"{pool}: nearest test person")
    ax.axvline(0.95, color="k", ls="--", lw=1, label="leak_threshold 0.95 (configs)")
    ax.set_xlabel("teacher cosine")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(f"Leak filter (split {args.split})")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"written {args.out}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
