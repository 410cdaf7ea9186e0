"""The paper's figure 4: t-SNE maps of LR faces of ten ORL people, for the teacher and each student.

    python benchmarks/tsne.py --student lr_resnet=runs/lr-resnet-all/student.safetensors

Every image of the chosen people (--people, default s1 to s10: 100 faces), aligned as aird aligns ORL,
cut down to --res px (default 16, area) and up-sampled to each model's input, is embedded by the
teacher (dlib_resnet on the LR face), the shipped student (--no-shipped leaves it out) and each
--student given. The unit embeddings go through
scikit-learn's t-SNE (the same perplexity, seed and PCA start for every model): one panel per model,
points coloured by person.

A picture alone does not compare, so each model also gets figures measured in the embedding space
itself, not in the map: leave-one-out nearest-neighbour accuracy (cosine; the record's ``rank1``: each
face against every other face of the chosen people) and the silhouette of the people (cosine, -1 to 1;
``settings.silhouette``); the silhouette in the 2-D map is there for reference (``silhouette_map``).

Writes docs/results/tsne.json (records in the RESULTS.md shape, benchmark ``orl-loo``, holding each map's
coordinates, so the figure is redrawn from the file) and docs/results/tsne.png.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.data.degrade import Degradation
from aird.data.orl import load_orl
from aird.errors import AirdError, ConfigError
from aird.eval.compare import named_students, with_shipped
from aird.eval.plots import plot_embedding_maps
from aird.eval.records import environment, load_records, make_record, write_records
from aird.models.embedder import Embedder, embed_chips
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "orl-loo"  # ORL faces, each against all others of the chosen people (leave one out)
DEFAULT_PEOPLE = [f"s{k}" for k in range(1, 11)]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def loo_nearest_neighbour(emb: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of faces whose most similar other face (cosine) is of the same person."""
    sim = unit(emb) @ unit(emb).T
    np.fill_diagonal(sim, -np.inf)
    return float((labels[sim.argmax(1)] == labels).mean())


def cluster_figures(emb: np.ndarray, labels: np.ndarray, perplexity: float, seed: int) -> dict:
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    x = unit(emb.astype(np.float64))
    # On unit vectors the euclidean distance is a monotone function of the cosine.
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return {
        "rank1": loo_nearest_neighbour(emb, labels),
        "silhouette": float(silhouette_score(x, labels, metric="cosine")),
        "silhouette_map": float(silhouette_score(xy, labels)),
        "xy": xy,
    }


def split_name(people: list[str]) -> str:
    return "people:" + ",".join(people)


def run(args: argparse.Namespace, command: str) -> int:
    try:
        import sklearn
    except ImportError:
        raise ConfigError("the t-SNE benchmark needs scikit-learn: pip install 'aird[bench]'") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.quiet
    root = data_root(args.data_root)
    folder = load_orl(root)
    known = list(dict.fromkeys(it.identity for it in folder.items))
    missing = [p for p in args.people if p not in known]
    if missing:
        raise ConfigError(f"--people {missing[0]!r} is not an ORL person under {folder.root} ({known[0]}, ...)")
    if len(args.people) < 2:
        raise ConfigError("--people: name two people or more (the figures compare people)")
    items = [it for it in folder.items if it.identity in args.people]
    labels = np.array([it.identity for it in items])
    chips = align_images([it.path for it in items], align_settings_for("orl"), progress=progress)
    n = len(items)
    perplexity = min(args.perplexity, (n - 1) / 3)  # t-SNE needs perplexity well under the number of points
    models: dict[str, tuple[Embedder, str, int | None]] = {"dlib_resnet": (DlibTeacher("torch"), "teacher", None)}
    specs = args.student or []
    for label, s in named_students(specs if args.no_shipped else with_shipped(specs)).items():
        if label in models:
            raise ConfigError(f"a student may not be named {label!r}: the teacher's panel has that name")
        models[label] = (s.embedder, s.method, s.embedder.input_size)
    records = []
    for label, (embedder, method, size) in models.items():
        deg = Degradation(res=args.res, out_size=size, seed=args.seed)
        emb = embed_chips(embedder, chips, deg, progress, desc=f"{label} {args.res} px")
        fig = cluster_figures(emb, labels, perplexity, args.seed)
        rec = make_record(
            benchmark=BENCHMARK,
            task="identification",
            model=label,
            method=method,
            adapt="off",
            res=args.res,
            pairs=None,
            split=split_name(args.people),
            n=n,
            metrics={"rank1": fig["rank1"]},
            settings={
                "protocol": "each LR face against every other LR face of the chosen people: nearest neighbour "
                "by cosine (rank1); silhouette of the people, cosine, in the embedding space",
                "silhouette": round(fig["silhouette"], 5),
                "silhouette_map": round(fig["silhouette_map"], 5),
                "people": args.people,
                "faces": [str(Path(it.path).relative_to(folder.root)) for it in items],
                "labels": labels.tolist(),
                "xy": np.round(fig["xy"], 3).tolist(),
                "tsne": {
                    "perplexity": perplexity,
                    "init": "pca",
                    "metric": "euclidean on unit embeddings",
                    "random_state": args.seed,
                    "scikit_learn": sklearn.__version__,
                },
                "model_fingerprint": embedder.fingerprint(),
                "degradation": deg.settings(),
                "alignment": {"images": n, "no_face_detected": chips.n_fallback},
                "data_root": str(root),
                "seed": args.seed,
                "environment": environment(),
            },
        )
        records.append(rec)
        print(
            f"{label:>16}: leave-one-out 1-NN {fig['rank1']:.3f}, silhouette {fig['silhouette']:+.3f} "
            f"(in the map {fig['silhouette_map']:+.3f})",
            flush=True,
        )
    json_path = args.out / "tsne.json"
    write_records(json_path, records, command, merge=False)
    records = load_records(json_path)  # the figure is drawn from the file, as written
    panels = {
        f"{r['model']}\n1-NN {r['metrics']['rank1']:.0%}, silhouette {r['settings']['silhouette']:+.2f}": (
            np.array(r["settings"]["xy"]),
            r["settings"]["labels"],
        )
        for r in records
    }
    plot_embedding_maps(
        panels,
        args.out / "tsne.png",
        title=f"t-SNE of {args.res} px faces of {len(args.people)} ORL people ({n} faces)",
    )
    print(f"records written to {json_path}; figure {args.out / 'tsne.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--student",
        action="append",
        metavar="[NAME=]PATH",
        help="a student file (repeat for several)",
    )
    ap.add_argument("--no-shipped", action="store_true", help="leave the shipped student out (it is in by default)")
    ap.add_argument("--people", nargs="+", default=DEFAULT_PEOPLE, help="ORL people (default: s1 to s10)")
    ap.add_argument("--res", type=int, default=16, help="side of the LR faces (px)")
    ap.add_argument("--perplexity", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results", help="folder for tsne.{json,png}")
    ap.add_argument("--quiet", action="store_true")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    try:
        return run(args, "python benchmarks/tsne.py " + shlex.join(argv))
    except AirdError as exc:
        print(f"tsne.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
