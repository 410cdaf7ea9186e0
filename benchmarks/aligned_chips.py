"""How an already-aligned face chip becomes the teacher's 150 px dlib chip (a pool with ``aligned: true``).

    python benchmarks/aligned_chips.py [--people 120] [--data-root DIR]

LFW photos are cut to insightface-style 112 x 112 crops (a similarity transform putting the eye centres,
from dlib's landmarks, on insightface's ArcFace template), then turned into dlib chips four ways:

- ``photo``: the reference, dlib's chip of the original photo (detector, landmarks, chip);
- ``aligned``: what aird does for a pool with ``aligned: true``: dlib's detector on the crop, the whole
  crop as the face box where it finds none, the landmark predictor in that box, dlib's chip;
- ``whole-chip``: the landmark predictor in the whole crop, no detector;
- ``resize``: the crop resized to 150 px, unaligned.

For each: the teacher's cosine to the photo chip's embedding (how much of the teacher's view survives),
and verification over every pair of the faces (two photos each of ``--people`` LFW people: one genuine
pair per person, every other pair an impostor). Writes docs/results/aligned_chips.json and .md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import cv2
import dlib
import numpy as np
import torch

from aird.data.align import FaceAligner, align_settings_for, dlib_model_file
from aird.data.images import load_rgb
from aird.data.lfw import LFW
from aird.eval.metrics import eer, roc_auc, similarity_matrix, tar_at_far
from aird.eval.records import environment, write_records
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"
ARCFACE_EYES = np.array([[38.2946, 51.6963], [73.5318, 51.5014]])  # insightface's 112 px template
CROP = 112


def insightface_crop(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112 px crop insightface's norm_crop would cut, from the eye centres (black outside the photo)."""
    eyes = np.array([landmarks[0:2].mean(0), landmarks[2:4].mean(0)])
    eyes = eyes[np.argsort(eyes[:, 0])]
    src, dst = eyes[1] - eyes[0], ARCFACE_EYES[1] - ARCFACE_EYES[0]
    scale = np.linalg.norm(dst) / np.linalg.norm(src)
    angle = np.arctan2(dst[1], dst[0]) - np.arctan2(src[1], src[0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = ARCFACE_EYES[0] - rot @ eyes[0]
    return cv2.warpAffine(image, np.hstack([rot, shift[:, None]]), (CROP, CROP), flags=cv2.INTER_LINEAR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--people", type=int, default=120)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    command = ("python benchmarks/aligned_chips.py " + shlex.join(sys.argv[1:])).strip()
    torch.set_num_threads(1)
    groups = [items for items in LFW(data_root(args.data_root)).folder().by_identity().values() if len(items) >= 2]
    step = max(1, len(groups) // args.people)
    photo = FaceAligner(align_settings_for("lfw"))
    aligned = FaceAligner(align_settings_for("lfw", aligned=True))
    predictor = dlib.shape_predictor(str(dlib_model_file("shape_predictor_5_face_landmarks.dat")))
    chips: dict[str, list[np.ndarray]] = {"photo": [], "aligned": [], "whole-chip": [], "resize": []}
    person: list[int] = []
    missed = 0
    for items in groups[::step]:
        faces = [photo.align(load_rgb(it.path)) for it in items[:2]]
        if not all(f.detected for f in faces):
            continue  # the reference needs the detector's own chip
        if len(person) // 2 == args.people:
            break
        for face, it in zip(faces, items[:2]):
            crop = insightface_crop(load_rgb(it.path), face.landmarks)
            recut = aligned.align(crop)
            missed += not recut.detected
            shape = predictor(crop, dlib.rectangle(0, 0, CROP - 1, CROP - 1))
            chips["photo"].append(face.chip)
            chips["aligned"].append(recut.chip)
            chips["whole-chip"].append(np.asarray(dlib.get_face_chip(crop, shape, size=150, padding=0.25)))
            chips["resize"].append(cv2.resize(crop, (150, 150), interpolation=cv2.INTER_CUBIC))
            person.append(len(person) // 2)
    people = np.array(person)
    teacher = DlibTeacher("torch")
    emb = {name: teacher.embed(np.stack(c)) for name, c in chips.items()}
    iu = np.triu_indices(len(people), 1)
    labels = people[iu[0]] == people[iu[1]]
    records = []
    for name, e in emb.items():
        scores = similarity_matrix(e, e)[iu]
        to_photo = np.sum(e * emb["photo"], 1) / np.linalg.norm(e, axis=1) / np.linalg.norm(emb["photo"], axis=1)
        metrics = {
            "auc": roc_auc(scores, labels),
            "eer": eer(scores, labels),
            "tar@far=1e-2": tar_at_far(scores, labels, 1e-2),
            "tar@far=1e-3": tar_at_far(scores, labels, 1e-3),
            "cos_to_photo_mean": float(to_photo.mean()),
            "cos_to_photo_min": float(to_photo.min()),
        }
        settings = {
            "chips": name,
            "people": int(people.max() + 1),
            "genuine_pairs": int(labels.sum()),
            "impostor_pairs": int((~labels).sum()),
            "detector_missed_crops": int(missed),
            "environment": environment(),
        }
        records.append(
            dict(
                benchmark=f"lfw-crops:insightface-112:{name}",
                task="verification",
                model="dlib_resnet",
                method="teacher",
                adapt="off",
                res=150,
                pairs="hr-hr",
                split=f"{people.max() + 1}x2",
                n=len(labels),
                metrics=metrics,
                settings=settings,
            )
        )
        print(
            f"{name:>10}: cos to photo chip {to_photo.mean():.4f} (min {to_photo.min():.4f}), AUC {metrics['auc']:.4f}"
        )
    written = write_records(args.out / "aligned_chips.json", records, command, merge=False)
    lines = [
        "# Aligned chips into dlib chips (`aligned: true` pools)\n",
        f"Reproduce: `{command}` (records: `aligned_chips.json`). {len(people)} LFW photos of "
        f"{people.max() + 1} people cut to insightface-style 112 px crops (eye centres on the ArcFace template); "
        "the teacher on each way of making the 150 px chip, against the photo's own chip, and verification over "
        f"every pair of those faces ({labels.sum()} genuine, {(~labels).sum():,} impostor). dlib's detector "
        f"missed the face in {missed} of the crops.\n",
        "| chips | cosine to the photo chip, mean | lowest | AUC | EER | TAR at FAR 1e-3 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in written:
        m = r["metrics"]
        lines.append(
            f"| {r['settings']['chips']} | {m['cos_to_photo_mean']:.4f} | {m['cos_to_photo_min']:.4f} | "
            f"{m['auc']:.4f} | {m['eer']:.2%} | {m['tar@far=1e-3']:.1%} |"
        )
    lines.append("")
    (args.out / "aligned_chips.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
