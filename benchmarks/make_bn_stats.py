"""Measure the batch-norm statistics shipped for ``get_model("dlib_resnet_bn")``.

Faces: the first image of LFW people who appear nowhere in pairs.txt (so no View 2 fold ever sees
them), in a seeded random order, aligned to dlib's 150 px chips; images where the detector finds no
face are skipped. Writes aird/models/assets/dlib_resnet_bn_stats.npz (float32, a few tens of KB).

    python benchmarks/make_bn_stats.py [--data-root DIR] [--count 1000] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aird.data.chips import align_images
from aird.data.lfw import LFW
from aird.models.bn_restore import (
    BN_STATS_ASSET,
    batchnorm_from_stats,
    load_bn_stats,
    measure_affine_inputs,
    save_bn_stats,
)
from aird.models.dlib_resnet import chips_to_tensor, load_dlib_resnet
from aird.paths import data_root


def held_out_faces(lfw: LFW, seed: int) -> list[Path]:
    """First image of every LFW person absent from pairs.txt, in a seeded random order."""
    in_pairs = lfw.fold_identities(list(range(1, 11)))
    firsts = [items[0].path for person, items in lfw.folder().by_identity().items() if person not in in_pairs]
    order = np.random.default_rng(seed).permutation(len(firsts))
    return [firsts[i] for i in order]


def provenance(model, n_images: int, seed: int) -> dict[str, object]:
    """What an asset measured on these faces records about them (also make_teacher_anchor.py's)."""
    return {
        "n_images": n_images,
        "seed": seed,
        "dat_sha256": model.source_sha256,
        "faces": "LFW deep-funneled: first image of each person absent from pairs.txt; dlib 5-point chips, "
        "150 px, padding 0.25",
    }


def detected_chips(paths: list[Path], count: int) -> np.ndarray:
    """Align in chunks until ``count`` faces were detected (or the images run out)."""
    chips: list[np.ndarray] = []
    start = 0
    while len(chips) < count and start < len(paths):
        chunk = paths[start : start + max(64, int((count - len(chips)) * 1.05))]
        start += len(chunk)
        aligned = align_images(chunk, desc="aligning held-out LFW faces")
        chips.extend(aligned.chips[aligned.detected])
    return np.stack(chips[:count])


def held_out_parser(doc: str | None, out: Path) -> argparse.ArgumentParser:
    """The options of a script that measures an asset on the held-out faces (also make_teacher_anchor.py's)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None, help="folder holding lfw/ (default: AIRD_DATA or ../shared/data)")
    parser.add_argument("--count", type=int, default=1000, help="faces to measure on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=out)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = held_out_parser(__doc__, BN_STATS_ASSET).parse_args(argv)

    lfw = LFW(data_root(args.data_root))
    paths = held_out_faces(lfw, args.seed)
    chips = detected_chips(paths, args.count)
    print(f"{len(paths)} LFW people are absent from pairs.txt; measuring on {len(chips)} detected faces")
    if len(chips) < args.count:
        print(f"warning: only {len(chips)} of the {args.count} faces asked for were available", file=sys.stderr)

    model = load_dlib_resnet()
    x = chips_to_tensor(chips)
    t0 = time.perf_counter()
    stats = measure_affine_inputs(model, x, batch_size=32)
    print(f"measured {len(stats)} affine layers in {time.perf_counter() - t0:.0f} s")
    save_bn_stats(args.out, stats, **provenance(model, len(chips), args.seed))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} KiB)")

    # The restored model, from the file just written, must compute the same function in eval mode.
    restored = batchnorm_from_stats(model, load_bn_stats(args.out)[0])
    with torch.no_grad():
        diff = (restored(x[:16].float()) - model(x[:16].float())).abs().max().item()
    print(f"eval-mode max |BN model - port| on 16 faces: {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
