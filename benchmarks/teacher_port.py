"""The PyTorch port of dlib's ResNet against dlib-bin itself: parity, LFW accuracy, speed.

    python benchmarks/teacher_port.py [--data-root DIR] [--timing-faces 256]

Parity is measured on every aligned LFW chip of the View 2 pairs whose face dlib detected (HR, 150 px):
cosine between the two backends' 128-D descriptors. Accuracy: LFW 10-fold, HR, both backends.
Speed: faces per second embedding aligned chips on this machine's CPUs (torch threads = all cores),
batch 1 and batch 64, after a warm-up; p50/p99 latency per call at batch 1.
Writes docs/results/teacher_port.json and teacher_port.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.eval.protocols import lfw_pairs
from aird.eval.records import environment, load_records, make_record, write_records
from aird.eval.runner import EvalConfig, run_verification
from aird.models.embedder import embed_chips
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"


def throughput(teacher: DlibTeacher, chips: np.ndarray, batch: int) -> dict:
    teacher.embed(chips[: max(batch, 2)])  # warm-up: first-call allocations and kernel selection
    times = []
    done = 0
    start = time.perf_counter()
    for i in range(0, len(chips) - batch + 1, batch):
        t0 = time.perf_counter()
        teacher.embed(chips[i : i + batch])
        times.append(time.perf_counter() - t0)
        done += batch
    total = time.perf_counter() - start
    out = {f"b{batch}_faces_per_s": done / total}
    if batch == 1:
        out.update(p50_ms=float(np.percentile(times, 50) * 1e3), p99_ms=float(np.percentile(times, 99) * 1e3))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--timing-faces", type=int, default=256)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    command = "python benchmarks/teacher_port.py " + shlex.join(sys.argv[1:])
    root = data_root(args.data_root)
    torch.set_num_threads(os.cpu_count() or 1)
    backends = {"dlib": DlibTeacher("dlib"), "torch": DlibTeacher("torch")}
    pairs = lfw_pairs(root)
    chips = align_images(pairs.images(), align_settings_for("lfw"))
    emb = {name: embed_chips(t, chips, None, desc=f"{name} on HR") for name, t in backends.items()}
    a, b = emb["dlib"][chips.detected], emb["torch"][chips.detected]
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    parity = {
        "cos_min": float(cos.min()),
        "cos_median": float(np.median(cos)),
        "max_abs_diff": float(np.abs(a - b).max()),
    }
    print(f"parity on {len(cos)} chips: min cos {parity['cos_min']:.9f}, median {parity['cos_median']:.9f}")
    records = []
    timing_chips = chips.chips[: args.timing_faces]
    for name, teacher in backends.items():
        result = run_verification(teacher, EvalConfig(res=None), root)
        speed = {}
        for batch in (1, 64):
            n = min(len(timing_chips), 64 if name == "dlib" and batch == 1 else len(timing_chips))
            speed.update(throughput(teacher, timing_chips[:n], batch))
        metrics = {**result.record["metrics"], **speed}
        if name == "torch":
            metrics.update(cos_min=parity["cos_min"], cos_median=parity["cos_median"])
        settings = {
            **result.record["settings"],
            "backend": name,
            "torch_threads": torch.get_num_threads(),
            "timing_faces": len(timing_chips),
            "parity_chips": int(len(cos)),
            "parity_max_abs_diff": parity["max_abs_diff"],
            "environment": environment(),
        }
        records.append(make_record(**{**result.record, "metrics": metrics, "settings": settings}))
        print(
            f"{name:>6}: LFW HR accuracy {metrics['accuracy']:.4f}; {speed['b1_faces_per_s']:.1f} faces/s at batch 1, "
            f"{speed['b64_faces_per_s']:.1f} at batch 64"
        )
    json_path = args.out / "teacher_port.json"
    write_records(json_path, records, command)
    recs = {r["settings"]["backend"]: r for r in load_records(json_path)}
    d, t = recs["dlib"]["metrics"], recs["torch"]["metrics"]
    lines = [
        "# dlib's ResNet face descriptor: dlib-bin vs the aird PyTorch port\n",
        f"Reproduce: `{command}` (records: `teacher_port.json`).\n",
        "| | dlib-bin | PyTorch port |",
        "|---|---|---|",
        f"| LFW 10-fold accuracy, HR 150 px (6,000 pairs) | {d['accuracy']:.2%} | {t['accuracy']:.2%} |",
        f"| TAR at FAR 1e-3 | {d['tar@far=1e-3']:.2%} | {t['tar@far=1e-3']:.2%} |",
        f"| faces/s, batch 1 | {d['b1_faces_per_s']:.1f} | {t['b1_faces_per_s']:.1f} |",
        f"| faces/s, batch 64 | {d['b64_faces_per_s']:.1f} | {t['b64_faces_per_s']:.1f} |",
        f"| latency p50 / p99 at batch 1 (ms) | {d['p50_ms']:.1f} / {d['p99_ms']:.1f} | {t['p50_ms']:.1f} / {t['p99_ms']:.1f} |",
        f"\nParity over {recs['torch']['settings']['parity_chips']} aligned LFW chips: cosine min "
        f"{t['cos_min']:.9f}, median {t['cos_median']:.9f}; max abs difference "
        f"{recs['torch']['settings']['parity_max_abs_diff']:.2e}. Port speed-up at batch 64: "
        f"{t['b64_faces_per_s'] / d['b64_faces_per_s']:.1f}x. CPU: {os.cpu_count()} cores, torch threads "
        f"{recs['torch']['settings']['torch_threads']}.\n",
    ]
    (args.out / "teacher_port.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
