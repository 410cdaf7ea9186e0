"""Gallery search latency: top-5 people for one probe at 10k, 100k and 1M entries, exact and faiss.

    python benchmarks/gallery.py [--sizes 10000 100000 1000000] [--queries 200] [--threads 2]

Each gallery holds random unit vectors (128-D, one entry per person); each probe is a gallery entry plus
noise (cosine about 0.9 to it: a planted true match), as a face search sees it. Timed: ``SearchIndex.search``
(the call ``Gallery.identify`` makes per face), one probe at a time after a warm-up, p50 / p99 over the
queries. ``exact`` is a float32 matrix product over the in-memory copy; ``faiss`` is faiss-cpu's exact flat
index below ``aird.gallery.COMPRESSED_MIN`` entries and 8-bit scalar-quantized codes from there (every
entry scanned at a quarter of the bytes, the candidates re-scored exactly), so its records also carry
``recall_at_5`` (of the exact top 5) and ``planted_top1`` (the planted match ranked first).

Records (benchmark ``gallery-search``) are merged into docs/results/serve.json; ``split`` names the gallery
size, ``res`` carries the embedding dimension (no face is involved).
"""

from __future__ import annotations

import os
import sys

# Thread counts must be fixed before numpy loads its BLAS.
_THREADS = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "2"
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _THREADS

import argparse  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from aird.eval.records import environment, write_records  # noqa: E402
from aird.gallery import COMPRESSED_MIN, SearchIndex  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "serve.json"
DIM = 128
TOP_K = 5


def size_name(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def time_queries(index: SearchIndex, probes: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    index.search(probes[0], TOP_K)  # warm-up
    found, times = [], []
    for q in probes:
        t0 = time.perf_counter()
        hits = index.search(q, TOP_K)
        times.append(time.perf_counter() - t0)
        found.append([owner for owner, _, _ in hits])
    return found, np.array(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200, help="probes timed per gallery (at most 50 at 1M and up)")
    ap.add_argument("--indexes", nargs="+", default=["exact", "faiss"], choices=["exact", "faiss"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    command = "python benchmarks/gallery.py " + shlex.join(sys.argv[1:])
    if "faiss" in args.indexes:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    env = environment()
    records = []
    for n in args.sizes:
        vectors = unit_rows(rng.standard_normal((n, DIM), dtype=np.float32))
        owners = np.arange(n)
        queries = min(args.queries, 50) if n >= 1_000_000 else args.queries
        planted = rng.choice(n, queries, replace=False)
        probes = unit_rows(
            vectors[planted] + 0.48 / np.sqrt(DIM) * rng.standard_normal((queries, DIM), dtype=np.float32)
        )
        exact_found = None
        for kind in ["exact"] + [k for k in args.indexes if k != "exact"]:
            t0 = time.perf_counter()
            index = SearchIndex(DIM, kind).build(vectors, owners)
            build_s = time.perf_counter() - t0
            found, ms = time_queries(index, probes)
            if kind == "exact":
                exact_found = found
                if "exact" not in args.indexes:
                    continue
            structure = "flat (exact)" if kind == "exact" or n < COMPRESSED_MIN else "8-bit codes, exact re-score"
            metrics = {
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "build_s": build_s,
                "planted_top1": float(np.mean([f[0] == p for f, p in zip(found, planted)])),
            }
            if kind != "exact":
                metrics["recall_at_5"] = float(
                    np.mean([len(set(f) & set(e)) / TOP_K for f, e in zip(found, exact_found)])
                )
            records.append(
                dict(
                    benchmark="gallery-search",
                    task="identification",
                    model=f"gallery-index:{kind}",
                    method="none",
                    adapt="off",
                    res=DIM,
                    pairs=None,
                    split=size_name(n),
                    n=queries,
                    metrics=metrics,
                    settings={
                        "gallery_size": n,
                        "index": kind,
                        "structure": structure,
                        "top_k": TOP_K,
                        "embedding_dim": DIM,
                        "entries_per_person": 1,
                        "probe": "a gallery entry plus Gaussian noise (cosine ~0.9), one probe per call",
                        "threads": args.threads,
                        "load_average": os.getloadavg()[0],
                        "seed": args.seed,
                        **env,
                    },
                )
            )
            print(
                f"{size_name(n):>5} {kind:<6} {structure:<18} p50 {metrics['p50_ms']:8.2f} ms  p99 {metrics['p99_ms']:8.2f} ms  "
                f"build {build_s:6.2f} s  planted top-1 {metrics['planted_top1']:.2f}"
                + (f"  recall@5 {metrics['recall_at_5']:.2f}" if "recall_at_5" in metrics else ""),
                flush=True,
            )
            del index
    write_records(args.out, records, command=command)
    print(f"records merged into {args.out}")


if __name__ == "__main__":
    main()
