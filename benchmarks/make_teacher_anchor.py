"""Measure the teacher's anchor shipped for ``facebn-safe``'s layer selection: the direction of the mean
unit HR embedding that dlib's ResNet gives training faces (``aird.adapt.safe.TEACHER_ANCHOR``).

A distilled student is trained to put each LR face where the teacher puts its HR face, so a stream the
student reads well has embeddings whose mean points where the teacher's HR embeddings' mean points;
facebn-safe adapts the batch-norm layers that bring its stream's mean closest to this direction
(docs/facebn.md, "Choosing the layers by the teacher's anchor").

Faces: the ones ``make_bn_stats.py`` measures on (the first image of LFW people absent from pairs.txt, so
no View 2 fold ever sees them; seeded order; faces dlib's detector finds), aligned to 150 px chips. Writes
aird/models/assets/dlib_teacher_anchor.npz (128 float32 and how they were made).

    python benchmarks/make_teacher_anchor.py [--data-root DIR] [--count 1000] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from make_bn_stats import (  # noqa: E402  (the BN statistics' faces and options)
    detected_chips,
    held_out_faces,
    held_out_parser,
    provenance,
)

from aird.adapt.safe import TEACHER_ANCHOR, save_anchor  # noqa: E402
from aird.data.lfw import LFW  # noqa: E402
from aird.models.dlib_resnet import chips_to_tensor, load_dlib_resnet  # noqa: E402
from aird.paths import data_root  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = held_out_parser(__doc__, TEACHER_ANCHOR).parse_args(argv)

    torch.set_num_threads(2)
    chips = detected_chips(held_out_faces(LFW(data_root(args.data_root)), args.seed), args.count)
    model = load_dlib_resnet()
    with torch.no_grad():
        emb = torch.cat([model(x) for x in chips_to_tensor(chips).split(64)])
    unit = torch.nn.functional.normalize(emb.double(), dim=1)
    mean = unit.mean(0)
    anchor = (mean / mean.norm()).float().numpy()
    cos = (unit @ torch.from_numpy(anchor).double()).numpy()
    print(
        f"{len(chips)} faces; |mean unit embedding| {float(mean.norm()):.4f}; cosine of a face to the anchor: "
        f"median {np.median(cos):.4f}, 5th percentile {np.percentile(cos, 5):.4f}"
    )
    save_anchor(args.out, anchor, **provenance(model, len(chips), args.seed))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
