"""Package a finished run of configs/shipped.yaml (or configs/fast.yaml) into a student that ships with aird.

    aird distill --config configs/shipped.yaml                        # trains runs/aird-shipped-all
    python benchmarks/shipped.py --run runs/aird-shipped-all          # package, calibrate, measure, document
    python benchmarks/shipped.py --run runs/aird-shipped-all --check  # is this run the shipped student?
    python benchmarks/shipped.py --which fast --run runs/aird-fast-all  # the fast student (docs/fast.md)

Packaging (1) stores the weights in float16 when that keeps LFW accuracy at 16 px (LR-LR and HR-LR, all
6,000 pairs) within 0.1 point of float32, else in float32; (2) calibrates cosine thresholds at FAR 1e-2
and 1e-3 for lr-lr, hr-lr (HR side by the teacher) and hr-hr on every cross-person pair of the images of
LFW's pairs.txt (people held out of training); (3) writes the model card into the file's metadata
(aird/models/assets/aird_shipped.safetensors); (4) evaluates the shipped student and the teacher on LFW
(16 and 12 px, both pair modes) into docs/results/shipped.json and writes docs/shipped.md.

``--check`` packages the run's weights in the shipped file's dtype and compares fingerprints (exit 0 on a
match, 1 otherwise). Training is bit-exact only on the same CPU model with the same thread count; on
another machine the fingerprint differs and the check compares the run's LFW figures with the card's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from aird.data.align import align_settings_for
from aird.data.chips import align_images
from aird.errors import AirdError, DataError
from aird.eval.calibrate import CALIBRATION_FARS, far_label, far_thresholds
from aird.eval.compare import compare_to_teacher, comparison_table
from aird.eval.metrics import cosine_similarity
from aird.eval.protocols import lfw_pairs
from aird.eval.records import git_commit, load_records, markdown_table, write_records
from aird.eval.runner import PAIR_MODES, EvalConfig, run_verification
from aird.models.embedder import Embedder, TorchEmbedder, embed_chips
from aird.models.shipped import (
    BUILD_COMMAND,
    FAST_BUILD_COMMAND,
    FAST_PATH,
    PRUNED_BUILD_COMMAND,
    PRUNED_PATH,
    SHIPPED_NAME,
    SHIPPED_PATH,
    read_card,
)
from aird.models.student import file_fingerprint, load_student, save_student
from aird.models.teacher import DlibTeacher
from aird.paths import data_root

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"float16": torch.float16, "float32": torch.float32}
FP16_TOLERANCE = 0.001  # largest accuracy loss (a fraction: 0.1 point) that float16 may cost
CHECK_RES = 16  # the resolution of the float16 check and of the thresholds
SHIPPED_RES = (16, 12)
SIZE_GOAL_MB = 12.0
THRESHOLD_MODES = ("lr-lr", "hr-lr", "hr-hr")
ARCHITECTURES = {
    "dlib_resnet_bn": " (dlib's ResNet with batch norm restored, initialised from the teacher)",
    "lr_resnet": " (a small ResNet reading the LR face at 16 px, bridge-distilled from the shipped student)",
    "dlib_resnet_slim50": " (the shipped student with half of every residual block's inner channels, reading the "
    "LR face at 104 px, fine-tuned from the full one by bridge distillation)",
}


def _shipped(out: Path, command: str, page: str, config: str, run: str, role: str, name: str | None = None) -> dict:
    """What a shipped student is: its file, build command, page and records (docs/<page>.md, results/<page>.json),
    the config and run that make it, what the page says it is for, and the name it ships under (default: its run's)."""
    return dict(out=out, command=command, page=page, config=config, run=run, role=role, name=name)


WHICH = {
    "shipped": _shipped(
        SHIPPED_PATH,
        BUILD_COMMAND,
        "shipped",
        "configs/shipped.yaml",
        "runs/aird-shipped-all",
        "is the model `aird` uses when no `--model` is given (`aird compare`, the verbs, the service)",
    ),
    "fast": _shipped(
        FAST_PATH,
        FAST_BUILD_COMMAND,
        "fast",
        "configs/fast.yaml",
        "runs/aird-fast-all",
        'is the fast student: `--model fast` on the command line, `aird.load("fast")` in Python',
    ),
    "pruned": _shipped(
        PRUNED_PATH,
        PRUNED_BUILD_COMMAND,
        "pruned",
        "configs/ablations/prune-slim50-12ep.yaml",
        "runs/prune-slim50-12ep-all",
        'is the pruned student: `--model pruned` on the command line, `aird.load("pruned")` in Python; exported '
        "to int8 (`aird export --model pruned --int8 FACES`) it embeds about 2,500 faces/s on 2 cores "
        '(docs/method.md, "Both bars at once")',
        name="aird-pruned",
    ),
}
HELD_OUT = "every person of LFW's pairs.txt (all 10 folds, split 'all'): all 6,000 pairs are a fair test"


def read_run(run: Path) -> tuple[dict, dict, list[dict]]:
    """config.json, data.json and the LFW records (split all) of a finished ``aird distill`` run."""
    docs = []
    for name in ("config.json", "data.json"):
        try:
            docs.append(json.loads((run / name).read_text()))
        except FileNotFoundError:
            raise DataError("not found; is this a finished 'aird distill' run directory?", run / name) from None
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc})", run / name) from None
    records = [r for r in load_records(run / "results.json") if r["task"] == "verification" and r["split"] == "all"]
    if not records:
        raise DataError("holds no LFW records on split 'all'; train with data.split: all", run / "results.json")
    return docs[0], docs[1], records


def lfw_figures(records: list[dict]) -> dict:
    """``{"lr-lr": {"16": accuracy, ...}, "hr-lr": {...}}`` from verification records."""
    out: dict = {}
    for r in records:
        out.setdefault(r["pairs"], {})[str(r["res"])] = round(r["metrics"]["accuracy"], 5)
    return out


def lfw_embeddings(embedder: Embedder, cfg: EvalConfig, root: Path, progress: bool) -> tuple[np.ndarray, list[str]]:
    """Embeddings of every image of the pairs file and each one's person, by the eval runner's transform
    (so its embedding cache serves both)."""
    pairs = lfw_pairs(root, cfg.folds, cfg.pairs_file)
    images = pairs.images()
    person = dict(zip(pairs.left + pairs.right, pairs.left_identity + pairs.right_identity))
    chips = align_images(images, align_settings_for("lfw", cfg.chip_size), progress=progress)
    desc = f"{embedder.name} {cfg.res or 'HR'} px"
    return embed_chips(embedder, chips, cfg.degradation(), progress, desc=desc), [person[p] for p in images]


def dtype_check(
    module: torch.nn.Module,
    meta: dict,
    name: str,
    teacher: Embedder,
    root: Path,
    pairs_file: str | None,
    progress: bool,
) -> dict:
    """LFW accuracy at CHECK_RES of float32 and float16 weights (both pair modes), and the cosine between
    their embeddings; ``weights_dtype`` is float16 when it loses at most FP16_TOLERANCE in each mode."""
    size = int(meta["input_size"])
    with tempfile.TemporaryDirectory() as tmp:
        half = Path(tmp) / "half.safetensors"
        save_student(half, module, meta["model"], size, dtype=torch.float16)
        module16, _ = load_student(half)
    out: dict = {"res": CHECK_RES, "accuracy": {m: {} for m in PAIR_MODES}}
    lr = {}
    for label, mod in (("float32", module), ("float16", module16)):
        # Named as in training, so the run's own evaluation cache serves the float32 side.
        embedder = TorchEmbedder(mod, name, size)
        for mode in PAIR_MODES:
            cfg = EvalConfig(res=CHECK_RES, pairs=mode, out_size=size, pairs_file=pairs_file)
            rec = run_verification(embedder, cfg, root, progress, gallery_embedder=teacher).record
            out["accuracy"][mode][label] = rec["metrics"]["accuracy"]
        lr_cfg = EvalConfig(res=CHECK_RES, out_size=size, pairs_file=pairs_file)
        lr[label], _ = lfw_embeddings(embedder, lr_cfg, root, progress)
    cos = cosine_similarity(lr["float32"], lr["float16"])
    out["embedding_cosine"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    losses = [a["float32"] - a["float16"] for a in out["accuracy"].values()]
    out["weights_dtype"] = "float16" if max(losses) <= FP16_TOLERANCE else "float32"
    out["rule"] = f"float16 if it loses at most {100 * FP16_TOLERANCE:.1f} point of accuracy at {CHECK_RES} px"
    return out


def calibrate(student: Embedder, teacher: Embedder, root: Path, pairs_file: str | None, progress: bool) -> dict:
    """Thresholds at CALIBRATION_FARS for lr-lr, hr-lr and hr-hr on every pair of the pairs file's images."""
    size = getattr(student, "input_size", None)
    lr_cfg = EvalConfig(res=CHECK_RES, out_size=size, pairs_file=pairs_file)
    lr, people = lfw_embeddings(student, lr_cfg, root, progress)
    hr, _ = lfw_embeddings(teacher, EvalConfig(res=None, pairs_file=pairs_file), root, progress)
    return {
        "pairs_file": Path(pairs_file).name if pairs_file else "pairs.txt",
        "images": len(people),
        "people": len(set(people)),
        "lr-lr": far_thresholds(lr, lr, people, CALIBRATION_FARS, symmetric=True),
        "hr-lr": far_thresholds(hr, lr, people, CALIBRATION_FARS, symmetric=False),
        "hr-hr": far_thresholds(hr, hr, people, CALIBRATION_FARS, symmetric=True),
    }


def make_card(
    config: dict,
    data: dict,
    run_records: list[dict],
    meta: dict,
    calib: dict,
    check: dict,
    fingerprint: str,
    command: str = BUILD_COMMAND,
) -> dict:
    fars = [far_label(f) for f in CALIBRATION_FARS]
    return {
        "name": config.get("name") or SHIPPED_NAME,
        "architecture": meta["model"],
        "input_size": int(meta["input_size"]),
        "colour": "RGB",
        "input": f"uint8 RGB face, resized to {meta['input_size']} (bicubic), values 0..255",
        "trained_resolutions": list(config["degradation"]["res"]),
        "method": config["method"],
        "pools": {
            pool: {k: v[k] for k in ("images", "kept", "dropped_by_leak_filter") if k in v}
            for pool, v in data["pools"].items()
        },
        "leak_threshold": data.get("leak_threshold"),
        "held_out": HELD_OUT,
        "lfw": lfw_figures(run_records),
        "lfw_source": "the training run's results.json: 10-fold accuracy on all 6,000 pairs, float32 weights",
        "thresholds": {mode: {far: calib[mode][far]["threshold"] for far in fars} for mode in THRESHOLD_MODES},
        "threshold_res": CHECK_RES,
        "threshold_source": (
            f"LFW: every cross-person pair of the {calib['images']} images of {calib['pairs_file']} "
            f"({calib['people']} people, "
            f"held out of training), LR faces at {CHECK_RES} px (area down-sampling); cosine, accept at >= t"
        ),
        "threshold_calibration": {mode: calib[mode] for mode in THRESHOLD_MODES},
        "gallery_model": "dlib_resnet",
        "fingerprint": fingerprint,
        "weights_dtype": check["weights_dtype"],
        "dtype_check": check,
        "bridge": (config.get("bridge") or {}).get("student"),
        "command": command,
        "created": dt.date.today().isoformat(),
        "git_commit": git_commit(),
    }


def card_page(card: dict, records: list[dict], out: Path, size_mb: float, which: str = "shipped") -> str:
    """docs/shipped.md: the card as a page, the LFW tables and how to reproduce and check the file."""
    student = [r for r in records if r["method"] != "teacher"]
    pools = "; ".join(
        f"{p}: {v['images']:,} images, {v.get('dropped_by_leak_filter', 0):,} dropped by the leak filter"
        for p, v in card["pools"].items()
    )
    check = card["dtype_check"]
    fars = list(card["thresholds"]["lr-lr"])
    try:
        shown = out.resolve().relative_to(REPO)
    except ValueError:
        shown = out
    lines = [
        f"# The {which} student: `{card['name']}`\n",
        f"`{shown}` ({size_mb:.1f} MB, {card['weights_dtype']}) {WHICH[which]['role']}. Its card is in the "
        "file's metadata: `aird.models.shipped.read_card(path)`.\n",
        "| | |",
        "|---|---|",
        f"| architecture | `{card['architecture']}`{ARCHITECTURES.get(card['architecture'], '')} |",
        f"| input | {card['input']}; colour order {card['colour']} |",
        f"| trained for | LR faces of {', '.join(str(r) for r in card['trained_resolutions'])} px |",
        f"| method | `{card['method']}`"
        + (f", bridge-distilled from `{card['bridge']}`" if card.get("bridge") else "")
        + " |",
        f"| training pools | {pools} (leak threshold {card.get('leak_threshold')}) |",
        f"| held out | {card['held_out']} |",
        f"| embedding space | the teacher's (`{card['gallery_model']}`): HR faces by the teacher, LR faces by "
        "this student |",
        f"| weights | {card['weights_dtype']}, fingerprint `{card['fingerprint']}` |",
        f"| created | {card['created']}, commit `{card.get('git_commit')}` |",
        "",
        f"## LFW verification: the {which} student beside the HR teacher\n",
        f"All {student[0]['n']:,} pairs, {len(student[0]['settings']['folds'])}-fold accuracy; hr-lr = the HR face "
        f"by the teacher, the LR face by the model (records: `results/{WHICH[which]['page']}.json`).\n",
        markdown_table(records, ["model", "pairs"], "res", "accuracy", "{:.2%}"),
        "\nTAR at FAR = 1e-3:\n",
        markdown_table(records, ["model", "pairs"], "res", "tar@far=1e-3", "{:.2%}"),
        "\n## Verification thresholds\n",
        f"Cosine similarity of the two embeddings; a pair scoring at least the threshold is the same person. "
        f"{card['threshold_source']}. Measured FAR and TAR at each threshold on those pairs:\n",
        "| pairs | impostor pairs | " + " | ".join(f"FAR {far}: threshold (FAR, TAR)" for far in fars) + " |",
        "|---|---:|" + "---:|" * len(fars),
    ]
    for mode, cal in card["threshold_calibration"].items():
        cells = [
            f"{cal[far]['threshold']:.5f} ({cal[far]['far']:.1e}, {cal[far].get('tar', float('nan')):.2%})"
            for far in card["thresholds"][mode]
        ]
        lines.append(f"| {mode} | {cal['impostor_pairs']:,} | " + " | ".join(cells) + " |")
    lines += [
        "\nThese people never appeared in training, but they are LFW's celebrities photographed by the press; "
        "on another population or camera, calibrate on your own pairs when you can.\n",
        f"## float16 or float32\n\nLFW accuracy at {check['res']} px, all pairs ({check['rule']}):\n",
        "| pairs | float32 | float16 |",
        "|---|---:|---:|",
        *(f"| {m} | {a['float32']:.2%} | {a['float16']:.2%} |" for m, a in check["accuracy"].items()),
        f"\nCosine between float32 and float16 embeddings of the same LR faces: min "
        f"{check['embedding_cosine']['min']:.6f}, mean {check['embedding_cosine']['mean']:.6f}.\n",
        "## Reproduce and check\n",
        "```bash",
        f"aird distill --config {WHICH[which]['config']}   # train (the run's wall time is in its records)",
        f"python benchmarks/shipped.py --which {which} --run {WHICH[which]['run']}          # package",
        f"python benchmarks/shipped.py --which {which} --run {WHICH[which]['run']} --check  # check a fresh run",
        "```\n",
        "Training is deterministic for a seed, but bit-exact only on the same CPU model with the same thread "
        "count (floating-point sums run in another order elsewhere). The check reports the fingerprint match; on "
        "a mismatch it compares the fresh run's LFW figures with the card's, which should agree within a few "
        "tenths of a point.\n",
    ]
    return "\n".join(lines)


def package(args: argparse.Namespace, command: str) -> int:
    root = data_root(args.data_root)
    progress = not args.quiet
    pairs_file = str(args.pairs_file) if args.pairs_file else None
    config, data, run_records = read_run(args.run)
    module, meta = load_student(args.run / "student.safetensors")
    name = config.get("name") or SHIPPED_NAME
    teacher = DlibTeacher("torch")
    check = dtype_check(module, meta, name, teacher, root, pairs_file, progress)
    acc = check["accuracy"]
    print(
        f"float16 check at {CHECK_RES} px: "
        + ", ".join(f"{m} {a['float32']:.4f} (fp32) vs {a['float16']:.4f} (fp16)" for m, a in acc.items())
        + f" -> {check['weights_dtype']}",
        flush=True,
    )
    dtype = DTYPES[check["weights_dtype"]]
    size = int(meta["input_size"])
    keep = {k: meta[k] for k in ("config",) if k in meta}
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare.safetensors"
        save_student(bare, module, meta["model"], size, dtype=dtype)
        fingerprint = file_fingerprint(bare)
        packaged, _ = load_student(bare)
    calib = calibrate(TorchEmbedder(packaged, name, size), teacher, root, pairs_file, progress)
    card = make_card(config, data, run_records, meta, calib, check, fingerprint, WHICH[args.which]["command"])
    card["name"] = WHICH[args.which]["name"] or card["name"]  # the run's name, unless it ships under another
    save_student(
        args.out,
        module,
        meta["model"],
        size,
        dtype=dtype,
        method=config["method"],
        run=args.run.name,
        card=json.dumps(card),
        **keep,
    )
    if file_fingerprint(args.out) != fingerprint:
        raise RuntimeError(f"{args.out}: the written weights differ from those fingerprinted; package again")
    size_mb = args.out.stat().st_size / 2**20
    print(f"wrote {args.out} ({size_mb:.1f} MB, {card['weights_dtype']}, fingerprint {fingerprint})", flush=True)
    if size_mb > SIZE_GOAL_MB:
        print(f"warning: {size_mb:.1f} MB is over the {SIZE_GOAL_MB:.0f} MB goal", flush=True)
    for mode in card["thresholds"]:
        print(f"thresholds {mode}: {card['thresholds'][mode]}", flush=True)
    records = compare_to_teacher(args.out, SHIPPED_RES, PAIR_MODES, None, pairs_file, root, progress, teacher=teacher)
    for r in records:
        if r["method"] != "teacher":
            r["settings"].update(fingerprint=fingerprint, weights_dtype=card["weights_dtype"])
    page = WHICH[args.which]["page"]
    results = args.docs / "results" / f"{page}.json"
    write_records(results, records, command, merge=False)
    (args.docs / f"{page}.md").write_text(card_page(card, records, args.out, size_mb, args.which))
    print(comparison_table(records))
    print(f"records written to {results}; card page {args.docs / f'{page}.md'}")
    return 0


def check_run(args: argparse.Namespace) -> int:
    """Fingerprint of the run's weights packaged like the shipped file, against the shipped file's card."""
    card = read_card(args.out)
    if not card.get("fingerprint") or card.get("weights_dtype") not in DTYPES:
        raise DataError("has no model card with a fingerprint; package it first (without --check)", args.out)
    stored = file_fingerprint(args.out)
    if stored != card["fingerprint"]:
        print(
            f"warning: the shipped file's weights ({stored}) are not those its card names "
            f"({card['fingerprint']}): the file was changed after packaging"
        )
    _, _, run_records = read_run(args.run)
    module, meta = load_student(args.run / "student.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "fresh.safetensors"
        save_student(fresh, module, meta["model"], int(meta["input_size"]), dtype=DTYPES[card["weights_dtype"]])
        fingerprint = file_fingerprint(fresh)
    print(f"run {args.run}: {fingerprint} ({card['weights_dtype']}); shipped {args.out}: {card['fingerprint']}")
    if fingerprint == card["fingerprint"]:
        print("MATCH: the run reproduces the shipped student bit for bit")
        return 0
    print(
        "MISMATCH: the weights differ. Training is bit-exact only on the same CPU model with the same thread "
        "count; compare the LFW figures (10-fold accuracy, all 6,000 pairs):"
    )
    fresh_figs, shipped_figs = lfw_figures(run_records), card.get("lfw", {})
    print(f"  {'pairs':<6} {'px':>3} {'run':>8} {'shipped':>8} {'diff (points)':>14}")
    for mode, by_res in fresh_figs.items():
        for res, acc in by_res.items():
            ref = shipped_figs.get(mode, {}).get(res)
            diff = "—" if ref is None else f"{100 * (acc - ref):+.2f}"
            ref_text = "—" if ref is None else f"{ref:.4f}"
            print(f"  {mode:<6} {res:>3} {acc:>8.4f} {ref_text:>8} {diff:>14}")
    return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--which", choices=sorted(WHICH), default="shipped", help="which shipped student (default: %(default)s)"
    )
    ap.add_argument("--run", type=Path, required=True, help="a finished run of its config (configs/shipped.yaml)")
    ap.add_argument("--check", action="store_true", help="compare the run with the shipped file; write nothing")
    ap.add_argument("--out", type=Path, default=None, help="the shipped file (default: the --which student's)")
    ap.add_argument("--docs", type=Path, default=REPO / "docs", help="where shipped.md and results/ go")
    ap.add_argument("--pairs-file", type=Path, default=None, help="another pairs file (tests); default pairs.txt")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--quiet", action="store_true")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    args.out = args.out or WHICH[args.which]["out"]
    try:
        return check_run(args) if args.check else package(args, "python benchmarks/shipped.py " + shlex.join(argv))
    except AirdError as exc:
        print(f"shipped.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
