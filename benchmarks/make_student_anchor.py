"""Measure a student's own anchor for ``facebn-safe`` and write it into the student file's model card.

``facebn-safe`` chooses, per stream, the batch-norm layers whose adapted statistics bring the stream's
mean embedding nearest an anchor direction (docs/facebn.md). For a student distilled into the teacher's
space that is the teacher's anchor (benchmarks/make_teacher_anchor.py). A student trained towards another
space (the fast student is bridge-distilled to the shipped student's LR embeddings) aims elsewhere: its
anchor is where its own embeddings of in-domain LR faces point, under its training statistics. This script
measures that direction and stores it in the card (``adapt_anchor``), where ``aird.load()`` and
``benchmarks/facebn.py`` pick it up. Only the card changes: the weights, and so the fingerprint, stay.

Faces: the ones the teacher's anchor and the BN statistics use (the first image of LFW people absent from
pairs.txt; seeded order; faces dlib's detector finds), degraded with the student's own training mix of
resolutions and down-sampling filters (from the run config in the file), one draw per face.

    python benchmarks/make_student_anchor.py --student aird/models/assets/aird_fast.safetensors \\
        [--data-root DIR] [--count 1000] [--seed 0] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from make_bn_stats import detected_chips, held_out_faces  # noqa: E402  (the anchor's and BN statistics' faces)

from aird.adapt.safe import CARD_ANCHOR, card_anchor  # noqa: E402
from aird.data.degrade import Degradation  # noqa: E402
from aird.data.lfw import LFW  # noqa: E402
from aird.models.embedder import faces_to_tensor  # noqa: E402
from aird.models.shipped import read_card, write_card  # noqa: E402
from aird.models.student import load_student  # noqa: E402
from aird.paths import data_root  # noqa: E402


def training_degradation(meta: dict[str, str], path: Path, seed: int) -> Degradation:
    """The resolutions and filters the student was trained on (its file's run config), one draw per face."""
    config = json.loads(meta.get("config") or "{}").get("degradation")
    if not config:
        raise SystemExit(f"{path}: the file holds no training config (degradation); it was not written by aird distill")
    return Degradation(
        res=tuple(config["res"]), down=tuple(config["down"]), out_size=int(meta["input_size"]), seed=seed
    )


def unit_embeddings(model: torch.nn.Module, faces: np.ndarray, size: int, batch: int = 64) -> torch.Tensor:
    """(N, D) float64: the model's unit embeddings of ``faces`` (its training statistics, no gradient)."""
    with torch.inference_mode():
        emb = torch.cat([model(faces_to_tensor(faces[i : i + batch], size)) for i in range(0, len(faces), batch)])
    return torch.nn.functional.normalize(emb.double(), dim=1)


def own_anchor(model: torch.nn.Module, faces: np.ndarray, size: int, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, each face's cosine to it): the mean direction of the model's unit embeddings of ``faces``."""
    unit = unit_embeddings(model, faces, size, batch)
    mean = unit.mean(0)
    anchor = mean / mean.norm()
    return anchor.float().numpy(), (unit @ anchor).numpy()


def held_out_lr_faces(
    meta: dict[str, str], path: Path, root: Path, count: int = 1000, seed: int = 0
) -> tuple[Degradation, np.ndarray, np.ndarray]:
    """(degradation, HR chips, LR faces): the anchor's held-out LFW faces, degraded with the student's training mix."""
    degradation = training_degradation(meta, path, seed)
    chips = detected_chips(held_out_faces(LFW(root), seed), count)
    return degradation, chips, degradation.batch(chips, [f"anchor-{i}" for i in range(len(chips))])


def anchor_entry(
    model: torch.nn.Module, meta: dict[str, str], path: Path, root: Path, count: int = 1000, seed: int = 0
) -> dict:
    """The card's ``adapt_anchor`` entry for the student ``model`` (file ``path``, metadata ``meta``)."""
    size = int(meta["input_size"])
    degradation, chips, faces = held_out_lr_faces(meta, path, root, count, seed)
    anchor, cos = own_anchor(model, faces, size)
    print(
        f"{len(chips)} faces at {degradation.res} px; cosine of a face to the anchor: median {np.median(cos):.4f}, "
        f"5th percentile {np.percentile(cos, 5):.4f}",
        flush=True,
    )
    return {
        "vector": [round(float(v), 7) for v in anchor],
        "what": "mean direction of the student's own unit embeddings of in-domain LR faces (training statistics)",
        "faces": "LFW deep-funneled: first image of each person absent from pairs.txt; dlib 5-point chips, 150 px",
        "n_images": len(chips),
        "seed": seed,
        "degradation": {"res": list(degradation.res), "down": list(degradation.down), "size": size},
        "median_cosine": round(float(np.median(cos)), 4),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": f"python benchmarks/make_student_anchor.py --student {path}",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path, required=True, help="student .safetensors whose card gets the anchor")
    ap.add_argument("--data-root", default=None, help="folder holding lfw/ (default: AIRD_DATA or ../shared/data)")
    ap.add_argument("--count", type=int, default=1000, help="faces to measure on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="measure and print, leave the file as it is")
    args = ap.parse_args(argv)

    torch.set_num_threads(2)
    model, meta = load_student(args.student)
    entry = anchor_entry(model, meta, args.student, data_root(args.data_root), args.count, args.seed)
    card = read_card(args.student)
    old = card_anchor(card, args.student)
    if old is not None and len(old) == len(entry["vector"]):
        new = np.asarray(entry["vector"])
        print(f"cosine to the anchor the card held: {float(old @ new / np.linalg.norm(old) / np.linalg.norm(new)):.6f}")
    if args.dry_run:
        return 0
    write_card(args.student, {**card, CARD_ANCHOR: entry})
    print(f"wrote the anchor into {args.student}'s card ({CARD_ANCHOR}); weights unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
