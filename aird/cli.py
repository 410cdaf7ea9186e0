"""The ``aird`` command: parses, then calls the library (no logic of its own)."""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

from aird.data.degrade import INTERPOLATIONS, RESOLUTIONS
from aird.errors import AirdError, DataError, ModelFileError

MIN_INT8_FACES = 32  # 16 set the activation ranges, 16 rank the blocks: below that both are noise

EPILOG = """examples:
  aird compare                                       the shipped student vs the HR teacher on LFW, 16 and 12 px
  aird eval --benchmark lfw --res 16                 LFW 10-fold verification, both faces at 16x16 px
  aird eval --benchmark lfw --res 16 --pairs hr-lr   HR gallery face vs 16 px probe face
  aird eval --res 16 --crop jittered                 probes cut from jittered detector boxes, not aligned chips
  aird eval --benchmark lfw --res hr                 the teacher on HR chips (150x150)
  aird eval --benchmark orl --res 12                 ORL identification: HR gallery, 12 px probes
  aird eval --model dlib --folds 1-2 --res 16        dlib-bin itself on 1,200 pairs
  aird verify badge.jpg crop.png --cropped b         one person? (B is a ready face crop)
  aird enrol --gallery people.db known/              one sub-folder of photos per person
  aird identify --gallery people.db probes/ --cropped --format csv --out who.csv
  aird serve --add-key frontdesk --galleries staff   prints an API key once (its hash is kept)
  aird serve --host 0.0.0.0 --port 8000              the HTTP service: page at /, API docs at /docs

data: --data-root or $AIRD_DATA (default ../shared/data); caches: $AIRD_CACHE (default ~/.cache/aird)"""


def _folds(text: str) -> list[int]:
    out: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad folds {text!r}: use e.g. 1-10, 1-5 or 1,3") from None
    if not out or min(out) < 1 or max(out) > 10:
        raise argparse.ArgumentTypeError(f"folds must lie in 1..10, got {text!r}")
    return sorted(out)


def _finite(text: str) -> float:
    """A float option: NaN and infinity pass every range check unnoticed, so they are refused here."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _res(text: str) -> int | None:
    if text.lower() in ("hr", "150", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad resolution {text!r}: use one of {list(RESOLUTIONS)} or 'hr'") from None
    if value not in RESOLUTIONS:
        raise argparse.ArgumentTypeError(f"unknown resolution {value}: use one of {list(RESOLUTIONS)} or 'hr'")
    return value


def build_parser() -> argparse.ArgumentParser:
    from aird.models.load import model_names

    parser = argparse.ArgumentParser(
        prog="aird",
        description="Low-resolution face recognition: recognise faces (verify, enrol, identify; faces of 8 px "
        "and up) and evaluate face models on LFW and ORL at 8-32 px.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ev = sub.add_parser(
        "eval",
        help="verification (LFW pairs) or identification (LFW, ORL) at a resolution",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument(
        "--model",
        default="dlib_resnet",
        metavar="MODEL",
        help=f"one of {', '.join(model_names())} (dlib = dlib-bin itself; dlib_resnet = its PyTorch "
        "port, same output, faster), shipped, fast or pruned (the students that ship with aird), a student "
        ".safetensors written by 'aird distill', or random:<name> "
        "for an architecture with untrained weights (a registry name without trained weights is an error)",
    )
    ev.add_argument("--benchmark", default="lfw", choices=["lfw", "orl"])
    ev.add_argument(
        "--task",
        choices=["verification", "identification"],
        help="default: verification for lfw, identification for orl",
    )
    ev.add_argument("--res", type=_res, default=16, help=f"LR face side in px, one of {list(RESOLUTIONS)}, or 'hr'")
    ev.add_argument("--pairs", default="lr-lr", choices=["lr-lr", "hr-lr"], help="verification: both LR, or HR vs LR")
    ev.add_argument(
        "--folds", type=_folds, default=None, help="LFW folds, e.g. 1-5 or 1,3 (default: every fold of the pairs file)"
    )
    ev.add_argument(
        "--pairs-file",
        type=Path,
        default=None,
        help="pairs in LFW's pairs.txt format (default: <data-root>/lfw/pairs.txt)",
    )
    ev.add_argument("--down", default="area", choices=sorted(INTERPOLATIONS), help="down-sampling interpolation")
    ev.add_argument("--blur", type=_finite, default=0.0, help="Gaussian blur sigma (HR px) before down-sampling")
    ev.add_argument("--noise", type=_finite, default=0.0, help="Gaussian noise std (grey levels) on the LR face")
    ev.add_argument("--jpeg", type=int, default=None, help="JPEG quality applied to the LR face")
    ev.add_argument("--grayscale", action="store_true", help="capture shift: a monochrome camera")
    ev.add_argument("--gamma", type=_finite, default=1.0, help="capture shift: gamma > 1 darkens (low light)")
    ev.add_argument(
        "--crop",
        default="aligned",
        choices=["aligned", "detector", "jittered"],
        help="probe faces from the aligned chip (default), or cut from the detector's box in the original photo "
        "as a camera pipeline cuts them: as it is (detector) or jittered per image (docs/evaluation.md)",
    )
    ev.add_argument(
        "--jitter-shift",
        type=_finite,
        default=None,
        help="--crop jittered: box centre shift, fraction of its side (0.1)",
    )
    ev.add_argument(
        "--jitter-scale",
        type=_finite,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="--crop jittered: range of the box side's scale factor (0.9 1.1)",
    )
    ev.add_argument("--jitter-rotate", type=_finite, default=None, help="--crop jittered: box roll, degrees (10)")
    ev.add_argument(
        "--adapt",
        default="off",
        choices=["off", "facebn-safe", "facebn-batch", "facebn-ema", "adabn", "facebn-alpha", "tent"],
        help="test-time adaptation of the model's batch norm (FaceBN; docs/facebn.md)",
    )
    ev.add_argument(
        "--flip-fuse",
        action="store_true",
        help="embed each face and its mirror image and add the unit embeddings (twice the compute; docs/evaluation.md)",
    )
    ev.add_argument("--momentum", type=_finite, default=0.1, help="facebn-ema: weight of each new batch")
    ev.add_argument("--alpha", type=_finite, default=0.1, help="facebn-alpha: weight of the batch statistics")
    ev.add_argument("--test-batch", type=int, default=32, help="faces per adaptation step (default: %(default)s)")
    ev.add_argument(
        "--head",
        type=Path,
        default=None,
        help="tent: the student's classifier head (student_head.safetensors of its run)",
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--data-root", type=Path, default=None, help="folder holding lfw/ and orl/ ($AIRD_DATA)")
    ev.add_argument(
        "--out",
        type=Path,
        default=Path("aird-results/eval.json"),
        help="JSON results file; records are merged into it (default: %(default)s)",
    )
    ev.add_argument("--plots", type=Path, default=None, help="folder for ROC and score-distribution PNGs")
    ev.add_argument(
        "--on-bad-image",
        choices=["error", "skip"],
        default="error",
        help="an image that cannot be read: stop with an error naming it (default, right for benchmarks), "
        "or skip it and list it with its reason in the summary and the record (settings.skipped_images)",
    )
    ev.add_argument("--quiet", action="store_true", help="no progress bars")

    di = sub.add_parser(
        "distill",
        help="train an LR student from the HR teacher (AIRD or a baseline), then test it",
        description="Distil the HR teacher into a student that reads LR faces. Runs on one process, "
        "or on many with: torchrun --nproc_per_node N -m aird.cli distill --config ...",
    )
    di.add_argument("--config", type=Path, required=True, help="experiment YAML (see configs/)")
    again = di.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in <run dir> from its checkpoint.pt")
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the earlier run in <run dir> first (without --resume or this, aird refuses to mix two runs)",
    )
    di.add_argument("--init", type=Path, default=None, help="start the student from these weights (.safetensors)")
    di.add_argument(
        "--split",
        choices=["A", "B", "all"],
        default=None,
        help="override data.split (A: test folds 1-5, B: 6-10, all: every pairs.txt person held out)",
    )
    di.add_argument("--out-dir", type=Path, default=None, help="run directory (default: runs/<name>-<split>)")
    di.add_argument("--quiet", action="store_true", help="no progress bars")

    co = sub.add_parser(
        "compare",
        help="the shipped student (or --model) against the HR teacher on LFW, side by side",
        description="LFW verification of a student and of the HR teacher at 16 and 12 px, LR-LR and HR-LR "
        "(the HR face by the teacher), on all 6,000 pairs; prints one table and merges the records into --out.",
    )
    co.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="STUDENT",
        help="a student .safetensors or its .onnx export (default: the shipped student, "
        "aird/models/assets/aird_shipped.safetensors)",
    )
    co.add_argument("--res", type=int, nargs="+", default=[16, 12], choices=RESOLUTIONS, help="LR face sides in px")
    co.add_argument("--pairs", nargs="+", default=["lr-lr", "hr-lr"], choices=["lr-lr", "hr-lr"])
    co.add_argument(
        "--folds", type=_folds, default=None, help="LFW folds (default: every fold of the pairs file, all 10)"
    )
    co.add_argument("--pairs-file", type=Path, default=None, help="pairs in LFW's pairs.txt format")
    co.add_argument("--data-root", type=Path, default=None, help="folder holding lfw/ ($AIRD_DATA)")
    co.add_argument("--out", type=Path, default=Path("aird-results/compare.json"), help="JSON results file")
    co.add_argument("--quiet", action="store_true", help="no progress bars")

    ex = sub.add_parser(
        "export",
        help="export a student (or a registered model) to ONNX, its model card in the graph's metadata",
    )
    ex.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="a student .safetensors, shipped (the default), fast or pruned (the students that ship with aird), or a "
        "registered model name (e.g. dlib_resnet)",
    )
    ex.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    ex.add_argument(
        "--layout",
        choices=["nhwc", "nchw"],
        default="nhwc",
        help="the graph's input: (batch, H, W, 3) or (batch, 3, H, W) pixels 0..255; the same embeddings, but "
        "on a CPU an int8 graph runs 2x faster channels last (default: %(default)s)",
    )
    ex.add_argument(
        "--int8",
        type=Path,
        default=None,
        metavar="FACES",
        help=f"write an int8 graph (onnxruntime static quantization), calibrated on the face crops in this folder "
        f"(your cameras' faces, any size, at least {MIN_INT8_FACES}): half set the activation ranges, the other half "
        "decide by per-layer sensitivity which blocks stay float (docs/method.md, the fast student)",
    )
    ex.add_argument(
        "--int8-target-cosine",
        type=float,
        default=0.998,
        metavar="C",
        help="with --int8: keep blocks float until the held-out faces embed at this mean cosine to the float "
        "graph (default %(default)s)",
    )

    _add_recognizer_verbs(sub)
    _add_serve(sub)

    th = sub.add_parser("train-head", help="fit the teacher's cosine classifier C_t on a config's training set")
    th.add_argument("--config", type=Path, required=True)
    th.add_argument(
        "--out", type=Path, default=None, help="where to save C_t (default: <run dir>/teacher_head.safetensors)"
    )
    th.add_argument("--quiet", action="store_true")
    return parser


def _far(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad false accept rate {text!r}: use e.g. 1e-3") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"false accept rate must lie in (0, 1), got {text!r}")
    return value


def _add_recognizer_verbs(sub) -> None:
    """verify, enrol, identify, gallery: the recognizer a user meets first (aird.load and its verbs)."""

    def model_options(p: argparse.ArgumentParser, photos: bool = True) -> None:
        p.add_argument(
            "--model",
            default=None,
            metavar="MODEL",
            help="shipped (the default student), fast (the 16 px student, several times faster), pruned (between "
            "the two), a student "
            ".safetensors, dlib_resnet (the teacher alone) or dlib_resnet_bn",
        )
        if photos:  # verbs that take crops only have no detector to tune
            p.add_argument(
                "--upsample",
                type=int,
                default=1,
                help="detector doublings of a photo first: 1 finds faces "
                "of ~40 px, 2 of ~20 px (slower) (default: %(default)s)",
            )
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    def decision_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--far",
            type=_far,
            default=1e-3,
            help="false accept rate whose calibrated threshold decides (the model card's; default: %(default)s)",
        )
        p.add_argument(
            "--threshold", type=float, default=None, help="decide by this cosine similarity instead of --far"
        )

    ve = sub.add_parser("verify", help="are the faces in two images one person?")
    ve.add_argument("a", metavar="A", help="image file (a photo, or a face crop with --cropped)")
    ve.add_argument("b", metavar="B", help="image file")
    ve.add_argument(
        "--cropped",
        nargs="?",
        const="both",
        default=None,
        choices=["both", "a", "b"],
        help="the images are ready face crops (any size): both (default when given), or only a or b",
    )
    decision_options(ve)
    ve.add_argument("--format", choices=["text", "json"], default="text")
    model_options(ve)

    en = sub.add_parser(
        "enrol",
        help="add people to a gallery: NAME IMAGE... or a FOLDER with one sub-folder per person",
        description="aird enrol --gallery G NAME IMAGE... adds one person (images or folders of images); "
        "aird enrol --gallery G FOLDER adds every sub-folder of FOLDER as a person named after it.",
    )
    en.add_argument("--gallery", type=Path, required=True, help="gallery file (SQLite; created if missing)")
    en.add_argument("items", nargs="+", metavar="NAME IMAGE... | FOLDER")
    en.add_argument("--cropped", action="store_true", help="the images are ready face crops (any size)")
    model_options(en)

    idf = sub.add_parser("identify", help="who are the faces in these images? (top-k from a gallery, open set)")
    idf.add_argument("--gallery", type=Path, required=True, help="gallery file made by 'aird enrol'")
    idf.add_argument("probes", nargs="+", metavar="IMAGE|FOLDER", help="images, or folders searched recursively")
    idf.add_argument("--top-k", type=int, default=5, help="people listed per face (default: %(default)s)")
    decision_options(idf)
    idf.add_argument("--cropped", action="store_true", help="the probes are ready face crops (any size)")
    idf.add_argument("--stream", default=None, help="camera name: its LR probes are embedded with its FaceBN state")
    idf.add_argument(
        "--adapt",
        default="off",
        choices=["off", "facebn-safe", "facebn-ema", "facebn-alpha", "facebn-batch"],
        help="FaceBN mode of the --stream (default: off; facebn-safe is the stream-safe one: check that it "
        "helps on the camera first with aird adapt-check, docs/facebn.md). Probes are adapted in batches of 32 files",
    )
    idf.add_argument(
        "--stream-state",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the stream's FaceBN state across runs: loaded from DIR if saved there, saved back after",
    )
    idf.add_argument("--format", choices=["csv", "json"], default="csv")
    idf.add_argument("--out", type=Path, default=None, help="write the results here instead of to stdout")
    idf.add_argument(
        "--index", choices=["exact", "faiss"], default="exact", help="gallery search (default: %(default)s)"
    )
    model_options(idf)

    ac = sub.add_parser(
        "adapt-check",
        help="does stream adaptation (FaceBN) help on this camera? measured on its labelled crops",
        description="Play a camera's labelled face crops (PROBES: one sub-folder per gallery person) as one "
        "stream through the adaptation mode and through the plain model, search both in the gallery, and "
        "compare rank-1 paired over the probes: 'helps' when the difference's one-sided 95% lower bound is "
        "above zero (then name the mode for that camera), 'hurts' or 'no clear difference' otherwise "
        "(docs/facebn.md). No camera's saved state is touched.",
    )
    ac.add_argument("--gallery", type=Path, required=True, help="gallery file made by 'aird enrol' with the people")
    ac.add_argument("probes", type=Path, metavar="PROBES", help="folder: one sub-folder of a camera's crops per person")
    ac.add_argument(
        "--adapt",
        default="facebn-safe",
        choices=["facebn-safe", "facebn-ema", "facebn-alpha", "facebn-batch"],
        help="the mode to check against off (default: %(default)s)",
    )
    ac.add_argument(
        "--batch",
        type=int,
        default=1,
        help="crops per adaptation step, as the camera sends them (default: %(default)s)",
    )
    ac.add_argument(
        "--order",
        choices=["name", "mtime", "folder"],
        default="name",
        help="the stream's order: file names across all folders (names that carry the capture time), "
        "modification times, or folder by folder (bursts of one person) (default: %(default)s)",
    )
    ac.add_argument("--out", type=Path, default=None, help="write both result records (JSON) here")
    ac.add_argument("--plot", type=Path, default=None, help="draw rank-1 along the stream, both modes (PNG) here")
    model_options(ac, photos=False)

    ga = sub.add_parser("gallery", help="list, remove, export or import a gallery's people (no model needed)")
    gsub = ga.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    gl = gsub.add_parser("list", help="people, their embedding counts and enrolment times")
    gl.add_argument("--format", choices=["text", "json"], default="text")
    gr = gsub.add_parser("remove", help="delete people and all their embeddings")
    gr.add_argument("names", nargs="+", metavar="NAME")
    ge = gsub.add_parser("export", help="write every entry to a portable .npz (with the model fingerprint)")
    ge.add_argument("file", type=Path, metavar="FILE.npz")
    gi = gsub.add_parser("import", help="add an export's entries (the gallery is created if missing)")
    gi.add_argument("file", type=Path, metavar="FILE.npz")
    for p in (gl, gr, ge, gi):
        p.add_argument("--gallery", type=Path, required=True, help="gallery file")

    sh = sub.add_parser(
        "shrink",
        help="write the faces of photos as R x R crops, as a surveillance camera would hand them over",
        description="Find and align the face of each photo, make it R x R pixels with the same degradation "
        "training and evaluation use, and write it as a PNG under --out (folders keep their layout). Try a "
        "gallery on such crops with: aird identify --gallery G OUT --cropped",
    )
    sh.add_argument("photos", nargs="+", metavar="IMAGE|FOLDER")
    sh.add_argument("--out", type=Path, required=True, help="folder for the crops")
    sh.add_argument("--res", type=int, default=16, choices=RESOLUTIONS, help="crop side in px (default: %(default)s)")
    sh.add_argument("--down", default="area", choices=sorted(INTERPOLATIONS), help="down-sampling interpolation")
    sh.add_argument("--upsample", type=int, default=1, help="detector doublings: 2 finds faces of ~20 px")
    sh.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_serve(sub) -> None:
    from aird.serve.settings import DEFAULT_DATA_DIR, KEYS_FILE, ServeSettings

    d = ServeSettings()
    se = sub.add_parser(
        "serve",
        help="the recognizer over HTTP (REST API, web page at /, API docs at /docs)",
        description="Serve the verbs over HTTP. Without a keys file the server runs open on 127.0.0.1 only; "
        "add a key first (--add-key) to serve another host, or pass --no-auth. Key management "
        "(--add-key, --remove-key, --list-keys) edits the keys file and exits.",
    )
    se.add_argument("--host", default=d.host, help="address to listen on (default: %(default)s, this machine only)")
    se.add_argument("--port", type=int, default=d.port, help="(default: %(default)s)")
    se.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="shipped (the default student), fast (the 16 px student, several times faster), pruned (between "
        "the two), a student "
        ".safetensors, dlib_resnet or dlib_resnet_bn",
    )
    se.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="galleries (galleries/NAME.db), camera stream states (streams/) and the keys file (default: %(default)s)",
    )
    se.add_argument("--workers", type=int, default=d.workers, help="inference threads (default: %(default)s)")
    se.add_argument(
        "--queue",
        type=int,
        default=d.queue,
        help="requests that may wait for a worker; beyond that the answer is 503 (default: %(default)s)",
    )
    se.add_argument(
        "--max-body-mb", type=float, default=d.max_body_mb, help="request size limit (default: %(default)s)"
    )
    se.add_argument(
        "--max-pixels",
        type=int,
        default=d.max_pixels,
        help="pixels per image, checked before decoding (default: %(default)s)",
    )
    se.add_argument(
        "--max-faces", type=int, default=d.max_faces, help="faces (and images) per request (default: %(default)s)"
    )
    se.add_argument(
        "--api-key-file", type=Path, default=None, help=f"JSON file of key hashes (default: DATA_DIR/{KEYS_FILE})"
    )
    se.add_argument(
        "--no-auth", action="store_true", help="serve without keys, whatever the host (every request allowed)"
    )
    se.add_argument(
        "--adapt",
        default=None,
        help="FaceBN mode of named camera streams (default: the recognizer's, off; docs/recognizer.md)",
    )
    se.add_argument(
        "--adapt-streams",
        default=None,
        metavar="CAM1,CAM2",
        help="with --adapt: adapt only these streams (the cameras 'aird adapt-check' cleared); any other named "
        "stream gets the plain model (default: every named stream adapts)",
    )
    se.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="(default: %(default)s)")
    keys = se.add_mutually_exclusive_group()
    keys.add_argument("--add-key", metavar="NAME", help="create an API key, print it once, store its hash; then exit")
    keys.add_argument("--remove-key", metavar="NAME", help="delete an API key; then exit")
    keys.add_argument("--list-keys", action="store_true", help="list the keys' names and galleries; then exit")
    se.add_argument(
        "--galleries", default=None, metavar="G1,G2", help="with --add-key: the galleries the key may use ('*': all)"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from aird.serve import keys
    from aird.serve.settings import ServeSettings

    settings = ServeSettings(
        model=args.model,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        workers=args.workers,
        queue=args.queue,
        max_body_mb=args.max_body_mb,
        max_pixels=args.max_pixels,
        max_faces=args.max_faces,
        api_key_file=args.api_key_file,
        no_auth=args.no_auth,
        adapt=args.adapt,
        adapt_streams=None
        if args.adapt_streams is None
        else [c.strip() for c in args.adapt_streams.split(",") if c.strip()],
        backend=args.backend,
    )
    path = settings.keys_path
    if args.galleries is not None and not args.add_key:
        raise AirdError("--galleries goes with --add-key NAME (the galleries the new key may use)")
    if args.add_key:
        if args.galleries is None:
            raise AirdError("--add-key needs --galleries G1,G2 (or --galleries '*' for every gallery)")
        galleries = [g.strip() for g in args.galleries.split(",") if g.strip()]
        key = keys.add_key(path, args.add_key, galleries)
        print(key)
        print(
            f"key {args.add_key!r} for galleries {', '.join(galleries)}: its hash is stored in {path}; the key is shown "
            "only now (send it as 'Authorization: Bearer <key>')",
            file=sys.stderr,
        )
        return 0
    if args.remove_key:
        keys.remove_key(path, args.remove_key)
        print(f"removed key {args.remove_key!r} from {path}")
        return 0
    if args.list_keys:
        for k in keys.list_keys(path):
            print(f"{k.name}\t{','.join(k.galleries)}")
        return 0
    from aird.serve import serve

    serve(settings)
    return 0


def _recognizer(args: argparse.Namespace):
    from aird.recognizer import load

    return load(args.model, adapt=getattr(args, "adapt", "off"))


def _print_skipped(skipped, out=None) -> None:
    out = out or sys.stderr
    if skipped:
        print(f"skipped {len(skipped)} file(s):", file=out)
        for s in skipped:
            print(f"  {s.source}: {s.reason}", file=out)


def cmd_shrink(args: argparse.Namespace) -> int:
    from aird.data.simulate import shrink_faces

    report = shrink_faces(args.photos, args.out, args.res, args.down, upsample=args.upsample, progress=not args.quiet)
    print(f"wrote {len(report.written)} face crop(s) of {args.res}x{args.res} px under {args.out}")
    if report.skipped:
        print(f"skipped {len(report.skipped)} file(s):", file=sys.stderr)
        for s in report.skipped:
            print(f"  {s.path}: {s.reason}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import json

    cropped = {None: (False, False), "both": (True, True), "a": (True, False), "b": (False, True)}[args.cropped]
    result = _recognizer(args).verify(
        args.a, args.b, far=args.far, cropped=cropped, threshold=args.threshold, upsample=args.upsample
    )
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    verdict = "same person" if result.verified else "different people"
    rule = f"{result.mode} at FAR {result.far:g}" if result.far is not None else "given threshold"
    print(
        f"{verdict}: similarity {result.similarity:.4f} {'>=' if result.verified else '<'} threshold {result.threshold:.4f} ({rule})"
    )
    for side, face in (("A", result.a), ("B", result.b)):
        extra = f", largest of {face.faces_in_image} faces" if face.faces_in_image > 1 else ""
        print(f"  {side}: {face.source} ({face.route}, {face.face_px} px{extra})")
    return 0


def cmd_enrol(args: argparse.Namespace) -> int:
    gallery = _recognizer(args).gallery(args.gallery)
    progress = not args.quiet
    if len(args.items) == 1:
        folder = Path(args.items[0])
        if not folder.is_dir():
            raise AirdError(
                f"{folder}: not a folder; enrol one person with: aird enrol --gallery {args.gallery} NAME IMAGE..., "
                "or everyone with: aird enrol --gallery G FOLDER (one sub-folder per person)"
            )
        results, skipped = gallery.enrol_folder(folder, cropped=args.cropped, upsample=args.upsample, progress=progress)
    else:
        result = gallery.enrol_files(
            args.items[0], args.items[1:], cropped=args.cropped, upsample=args.upsample, progress=progress
        )
        results, skipped = [result], result.skipped
    for r in results:
        for note in r.notes:
            print(f"note: {note}", file=sys.stderr)
    added = sum(r.added for r in results)
    people = sum(1 for r in results if r.added)
    print(f"enrolled {added} face(s) of {people} person(s) into {args.gallery}")
    missing = [r.name for r in results if not r.added]
    if missing:
        print(f"no face enrolled for: {', '.join(missing)}", file=sys.stderr)
    _print_skipped(skipped)
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    import csv
    import io
    import json

    from aird.data.inputs import expand_paths
    from aird.io import atomic_path
    from aird.results import IdentifyResult

    if args.top_k < 1:
        raise AirdError(f"--top-k must be at least 1, got {args.top_k}")
    if (args.adapt != "off" or args.stream_state) and not args.stream:
        raise AirdError("--adapt and --stream-state adapt a camera's probes: name it with --stream")
    recognizer = _recognizer(args)
    gallery = recognizer.gallery(args.gallery, index=args.index)
    gallery.store.connect()  # an unknown gallery fails before any image is read
    if args.stream_state:
        recognizer.streams.load(args.stream_state, missing_ok=True)
    paths = expand_paths(args.probes)
    faces, skipped = recognizer.represent_files(
        paths, cropped=args.cropped, upsample=args.upsample, stream=args.stream, progress=not args.quiet, desc="probes"
    )
    if args.stream_state:
        recognizer.streams.save(args.stream_state)
    results = gallery.search(faces, top_k=args.top_k, far=args.far, threshold=args.threshold)
    if args.format == "json":
        text = (
            json.dumps(
                {
                    "results": [r.to_dict() for r in results],
                    "skipped": [{"source": s.source, "reason": s.reason} for s in skipped],
                },
                indent=2,
            )
            + "\n"
        )
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=IdentifyResult.ROW_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(r.to_row() for r in results)
        text = buf.getvalue()
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)
    counts = {k: sum(r.status == k for r in results) for k in ("match", "unknown", "no_face")}
    print(
        f"{len(results)} result(s) from {len(paths) - len(skipped)} image(s): {counts['match']} matched, "
        f"{counts['unknown']} unknown, {counts['no_face']} image(s) without a face"
        + (f"; written to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    _print_skipped(skipped)
    return 0


def cmd_adapt_check(args: argparse.Namespace) -> int:
    from aird.eval.camera import check_adaptation
    from aird.eval.records import write_records
    from aird.recognizer import load
    from aird.results import HR_MIN_PX

    if args.batch < 1:
        raise AirdError(f"--batch must be at least 1, got {args.batch}")
    recognizer = load(args.model, adapt=args.adapt, batch_size=args.batch)
    gallery = recognizer.gallery(args.gallery)
    gallery.store.connect()  # an unknown gallery fails before any image is read
    check = check_adaptation(recognizer, gallery, args.probes, order=args.order, progress=not args.quiet)
    print(check.summary())
    if check.excluded_people:
        print(f"not in the gallery, left out: {', '.join(check.excluded_people)}", file=sys.stderr)
    if check.hr_probes:
        print(
            f"{check.hr_probes} crop(s) of {HR_MIN_PX} px or more left out (the adapter never touches HR faces)",
            file=sys.stderr,
        )
    _print_skipped(check.skipped)
    if args.out:
        write_records(args.out, check.records, "aird " + shlex.join(args.argv), merge=False)
        print(f"records written to {args.out}", file=sys.stderr)
    if args.plot:
        print(f"plot written to {check.plot(args.plot)}", file=sys.stderr)
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    import json

    from aird.gallery import Gallery

    gallery = Gallery(args.gallery)
    if args.gallery_command == "list":
        people = gallery.list()
        if args.format == "json":
            print(
                json.dumps(
                    {"gallery": str(args.gallery), **gallery.store.meta(), "people": [p.to_dict() for p in people]},
                    indent=2,
                )
            )
            return 0
        meta = gallery.store.meta()
        print(
            f"{args.gallery}: {len(people)} people, model {meta.get('model', '-')} (fingerprint {meta.get('fingerprint', '-')})"
        )
        for p in people:
            d = p.to_dict()
            routes = ", ".join(f"{k} {v}" for k, v in sorted(p.routes.items()))
            print(f"  {p.name}\t{p.embeddings} embedding(s) ({routes})\tlast enrolled {d['last_enrolled']}")
    elif args.gallery_command == "remove":
        for name in args.names:
            print(f"removed {name} ({gallery.remove(name)} embedding(s))")
    elif args.gallery_command == "export":
        print(f"exported {len(gallery.list())} people to {gallery.export(args.file)}")
    else:
        people, added = gallery.import_(args.file)
        print(f"imported {added} embedding(s) of {people} people into {args.gallery}")
    return 0


def _adapted(embedder, args: argparse.Namespace):
    """Wrap a torch model in a test-time adapter; the HR gallery side stays un-adapted."""
    from aird.adapt.embedder import AdaptedEmbedder
    from aird.models.embedder import TorchEmbedder

    if not isinstance(embedder, TorchEmbedder):
        raise AirdError(
            f"--adapt needs a PyTorch model with batch norm (a student .safetensors or dlib_resnet_bn), "
            f"not {args.model!r}"
        )
    kwargs = {"facebn-ema": {"momentum": args.momentum}, "facebn-alpha": {"alpha": args.alpha}}.get(args.adapt, {})
    if args.adapt == "tent":
        from aird.models.heads import load_head

        if args.head is None:
            raise AirdError("--adapt tent needs --head (the student_head.safetensors written beside the student)")
        kwargs = {"head": load_head(args.head), "logit_scale": 30.0}
    return AdaptedEmbedder(embedder.module, embedder.name, args.adapt, embedder.input_size, args.test_batch, **kwargs)


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text)


def _crop_jitter(args: argparse.Namespace):
    """The --jitter-* options over the default crop jitter; refused without --crop jittered."""
    from aird.data.crops import DEFAULT_CROP_JITTER
    from aird.data.jitter import Jitter
    from aird.errors import ConfigError

    given = {
        "shift": args.jitter_shift,
        "scale": tuple(args.jitter_scale) if args.jitter_scale else None,
        "rotate": args.jitter_rotate,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if given and args.crop != "jittered":
        raise AirdError(f"--jitter-{next(iter(given))} applies to --crop jittered only; add --crop jittered")
    try:
        return Jitter(**{**DEFAULT_CROP_JITTER.settings(), **given})
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("jitter.", "--jitter-", 1)) from None


def cmd_eval(args: argparse.Namespace) -> int:
    from aird.eval.records import check_results_file, write_records
    from aird.eval.runner import EvalConfig, run_identification, run_verification
    from aird.io import check_writable_folder
    from aird.models.load import load_embedder

    task = args.task or ("verification" if args.benchmark == "lfw" else "identification")
    if task == "verification" and args.benchmark != "lfw":
        raise AirdError(f"verification pairs exist for lfw only, not {args.benchmark}; use --task identification")
    # Where the results go is checked before the evaluation, not after it.
    check_results_file(args.out)
    if args.plots:
        check_writable_folder(args.plots, "--plots folder", "pass a folder (it is created) that can be written")
    if args.flip_fuse and args.adapt != "off":
        raise AirdError(
            "--flip-fuse with --adapt: a mirrored copy of each batch would update the FaceBN statistics twice; "
            "measure one of them at a time"
        )
    embedder = load_embedder(args.model)
    method = embedder.method
    if args.flip_fuse:
        from aird.models.embedder import FlipFused

        embedder = FlipFused(embedder)
    gallery = None
    if args.adapt != "off":
        embedder, gallery = _adapted(embedder, args), embedder
    # A student reads LR faces up-sampled to its own input size (16 px for lr_light, 150 for dlib's).
    cfg = EvalConfig(
        res=args.res,
        pairs=args.pairs,
        folds=args.folds,
        down=args.down,
        blur_sigma=args.blur,
        noise_std=args.noise,
        jpeg_quality=args.jpeg,
        grayscale=args.grayscale,
        gamma=args.gamma,
        seed=args.seed,
        pairs_file=str(args.pairs_file) if args.pairs_file else None,
        out_size=getattr(embedder, "input_size", None),
        method=method,
        adapt=args.adapt,
        on_bad_image=args.on_bad_image,
        crop=args.crop,
        crop_jitter=_crop_jitter(args),
    )
    progress = not args.quiet
    if task == "verification":
        result = run_verification(embedder, cfg, args.data_root, progress, gallery_embedder=gallery)
    else:
        result = run_identification(embedder, args.benchmark, cfg, args.data_root, progress, gallery_embedder=gallery)
    rec = result.record
    settings = rec["settings"]
    align = settings["alignment"]
    # The figures go to the screen first: a results file that cannot be written loses nothing measured.
    print(
        f"{rec['benchmark']} {rec['task']} | model {rec['model']} ({rec['method']}) | {rec['res']} px | "
        f"{rec['pairs'] or 'HR gallery, LR probes'} | split {rec['split']} | n={rec['n']}"
    )
    for key, value in rec["metrics"].items():
        print(f"  {key:<16} {value:.4f}")
    print(f"  no face detected in {align['no_face_detected']} of {align['images']} images (fallback box used)")
    crop = settings["crop"]
    if crop["condition"] != "aligned":
        j = crop["jitter"]
        how = (
            f"jittered (shift {j['shift']}, scale {j['scale']}, rotate {j['rotate']} deg, seed {crop['seed']})"
            if crop["condition"] == "jittered"
            else "as detected"
        )
        print(f"  probes cut from detector boxes, {how}; fallback box for {crop['fallback_boxes']} images")
    skipped = settings["skipped_images"]
    if skipped:
        dropped = settings.get("pairs_dropped", settings.get("probes_dropped"))
        unit = "pairs" if "pairs_dropped" in settings else "probes"
        print(f"  skipped {len(skipped)} image(s) that could not be read ({dropped} {unit} left out):")
        for item in skipped:
            print(f"    {item['path']}: {item['reason']}")
    sys.stdout.flush()
    try:
        write_records(args.out, [rec], command="aird " + shlex.join(args.argv))
    except AirdError as exc:
        raise AirdError(f"{exc} (the figures above were not saved: rerun with another --out)") from None
    print(f"record written to {args.out}")
    if args.plots and result.scores is not None:
        from aird.eval.plots import plot_roc, plot_score_distributions

        label = f"{rec['model']} {rec['res']} px {rec['pairs']}"
        stem = _file_stem(f"{rec['benchmark']}-{rec['model']}-{rec['res']}-{rec['pairs']}")
        plot_roc({label: (result.scores, result.labels)}, args.plots / f"roc-{stem}.png")
        plot_score_distributions(
            {label: (result.scores, result.labels)},
            args.plots / f"scores-{stem}.png",
            thresholds={label: result.threshold},
        )
        print(f"plots written to {args.plots}")
    return 0


def _experiment(args: argparse.Namespace):
    from aird.distill.config import load_experiment

    cfg = load_experiment(args.config)
    if getattr(args, "split", None):
        cfg.data.split = args.split
    if getattr(args, "out_dir", None):
        cfg.out_dir = str(args.out_dir)
    return cfg


def cmd_distill(args: argparse.Namespace) -> int:
    from aird.distill.run import run_experiment

    cfg = _experiment(args)
    run_dir = run_experiment(cfg, resume=args.resume, init=args.init, progress=not args.quiet, overwrite=args.overwrite)
    print(f"run written to {run_dir} (student.safetensors, results.json, log.jsonl)")
    return 0


def cmd_train_head(args: argparse.Namespace) -> int:
    from aird.distill.run import train_teacher_head, training_set
    from aird.models.heads import save_head
    from aird.models.teacher import DlibTeacher

    cfg = _experiment(args)
    data = training_set(cfg, DlibTeacher("torch"), progress=not args.quiet)
    head = train_teacher_head(cfg, data)
    out = args.out or cfg.run_dir() / "teacher_head.safetensors"
    save_head(out, head)
    print(f"C_t over {data.num_classes} identities ({len(data)} faces) saved to {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from aird.eval.compare import compare_to_teacher, comparison_table
    from aird.eval.records import write_records

    records = compare_to_teacher(
        args.model, args.res, args.pairs, args.folds, args.pairs_file, args.data_root, progress=not args.quiet
    )
    write_records(args.out, records, command="aird " + shlex.join(args.argv))
    print(comparison_table(records))
    print(f"records written to {args.out}")
    return 0


def int8_faces(folder: Path, size: int) -> np.ndarray:
    """The face crops in ``folder`` at a network's ``size``, in a seeded shuffle (so both halves see every
    sub-folder): what ``aird export --int8`` calibrates on."""
    from aird.data.degrade import to_network_input
    from aird.data.images import is_image_file, load_rgb
    from aird.data.inputs import expand_paths

    if not folder.is_dir():
        raise DataError("not a folder of face crops", folder, "pass a folder of face images (--int8 FACES)")
    paths = [p for p in expand_paths([folder]) if is_image_file(p)]
    if len(paths) < MIN_INT8_FACES:
        raise DataError(
            f"{len(paths)} face image(s); int8 calibration needs at least {MIN_INT8_FACES}",
            folder,
            "add face crops from your cameras (a few hundred give stable ranges)",
        )
    order = np.random.default_rng(0).permutation(len(paths))
    return np.stack([to_network_input(load_rgb(paths[i]), size) for i in order])


def cmd_export(args: argparse.Namespace) -> int:
    from aird.models.export import OnnxEmbedder, export_model, quantize_int8
    from aird.models.shipped import SHIPPED_STUDENTS, shipped_student_path

    model = shipped_student_path(args.model or "shipped") if args.model in (None, *SHIPPED_STUDENTS) else args.model
    if args.int8 is None:
        path = export_model(model, args.out, args.opset, args.layout)
    else:
        if args.out.suffix != ".onnx":
            raise ModelFileError(f"{args.out}: the exported file must end in .onnx")
        with tempfile.TemporaryDirectory() as tmp:
            graph = export_model(model, Path(tmp) / "float.onnx", args.opset, args.layout)
            faces = int8_faces(args.int8, OnnxEmbedder(graph).input_size)
            half = len(faces) // 2
            path = quantize_int8(
                graph, args.out, faces[:half], held_out=faces[half:], target_cosine=args.int8_target_cosine
            )
    graph = OnnxEmbedder(path)
    name = graph.card.get("name", graph.metadata["model"])
    print(
        f"{path}: {name}, input {graph.input_size} px ({graph.layout}), weights {graph.source_fingerprint}, "
        "dynamic batch"
    )
    if args.int8 is not None:
        meta = graph.metadata
        kept = json.loads(meta["int8_float_units"])
        print(
            f"int8: calibrated on {meta['calibration_faces']} faces of {args.int8}; float blocks: "
            f"{', '.join(kept) or 'none'} (and the embedding layer); held-out faces at mean cosine "
            f"{float(meta['int8_held_out_cosine']):.4f} to the float graph"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 0
    try:
        commands = {
            "eval": cmd_eval,
            "compare": cmd_compare,
            "export": cmd_export,
            "distill": cmd_distill,
            "train-head": cmd_train_head,
            "verify": cmd_verify,
            "enrol": cmd_enrol,
            "identify": cmd_identify,
            "adapt-check": cmd_adapt_check,
            "gallery": cmd_gallery,
            "shrink": cmd_shrink,
            "serve": cmd_serve,
        }
        return commands[args.command](args)
    except AirdError as exc:
        print(f"aird: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # Ctrl-C or SIGTERM. Training stops at a step boundary, saves its checkpoint and says so
        # (TrainingInterrupted, with the signal's exit code); elsewhere every file is written atomically,
        # so nothing is left half-written.
        if not hasattr(exc, "exit_code"):
            print("\naird: interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
