"""The recognizer a user meets first: ``aird.load()`` and its verbs ``represent``, ``verify``, ``gallery``.

Two embedders, one space: HR faces (an aligned chip at least
``HR_MIN_PX`` source pixels a side: photos, badge pictures) are embedded by the teacher (the PyTorch
port of dlib's ResNet) and LR faces (smaller: CCTV crops) by the student distilled into the teacher's
space. A face's route ("hr" / "lr") picks the embedder, and a pair's routes pick the calibrated
threshold ("hr-hr", "hr-lr", "lr-lr") in the student's model card.

Photos go through dlib's detector and 5-point alignment (every face found is returned, largest first;
no fallback box ever stands in for a missing face); ``cropped=True`` takes a ready face crop of any
size. LR faces reach the student through ``aird.data.degrade.to_network_input``, the resampling the
students were trained with. LR probes of a named ``stream`` (a camera) go through that stream's FaceBN
state (``aird.adapt.streams``); nothing else is ever adapted.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from aird.adapt.safe import NAME as SAFE_NAME
from aird.adapt.safe import card_anchor
from aird.adapt.streams import DEFAULT_STREAM_ADAPT, StreamStates, check_stream_name
from aird.data.align import AlignSettings, FaceAligner
from aird.data.degrade import to_network_input
from aird.data.inputs import MIN_SIDE, ImageInput, describe, read_image
from aird.errors import ConfigError, DataError, ModelFileError
from aird.models.embedder import faces_to_tensor, module_fingerprint
from aird.models.export import INPUT_NAME, OUTPUT_NAME, graph_input
from aird.results import (
    HR_MIN_PX,
    PAIR_MODES,
    Box,
    Candidate,
    FaceResult,
    IdentifyResult,
    NoFaceError,
    Skipped,
    TooManyFacesError,
    VerifyResult,
    check_threshold,
    far_value,
    pair_mode,
    route_of,
)

if TYPE_CHECKING:
    from aird.gallery import Gallery
    from aird.models.export import OnnxEmbedder

TEACHER = "dlib_resnet"
TEACHER_SIZE = 150
BACKENDS = ("torch", "onnx")
ONNX_LAYOUT = "nhwc"  # the input of the graphs backend "onnx" caches (aird.models.export.graph_input)
MAX_UPSAMPLE = 3


# ---------------------------------------------------------------------------- networks


class _Net:
    """(N, S, S, 3) uint8 faces -> (N, D) float32 embeddings through torch or onnxruntime."""

    def __init__(self, module: nn.Module, size: int, fingerprint: str, backend: str, device: str, batch_size: int):
        self.module = module.to(device).eval()
        self.size = size
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.session = None
        if backend == "onnx":
            self.session = _onnx_session(module, size, fingerprint)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(faces), self.batch_size):
            if self.session is not None:
                x = graph_input(faces[i : i + self.batch_size], self.size, ONNX_LAYOUT)
                out.append(self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])
            else:
                x = faces_to_tensor(faces[i : i + self.batch_size], self.size)
                with torch.inference_mode():
                    out.append(self.module(x.to(self.device)).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


class _GraphNet:
    """A student graph written by ``aird export`` (float or int8) on onnxruntime, where ``_Net`` runs a module:
    the graph runs as exported, so its streams cannot adapt."""

    def __init__(self, graph: OnnxEmbedder):
        self.graph = graph
        self.size = graph.input_size
        self.device = torch.device("cpu")

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        return self.graph.embed(faces).astype(np.float32)


def _onnx_session(module: nn.Module, size: int, fingerprint: str):
    """An onnxruntime session of ``module``, exported once into the cache (keyed by its weights), as
    ``aird export`` writes graphs: channels last, dlib's input normalization folded into the stem. Its idle
    threads sleep rather than spin: the teacher's and the student's sessions take turns in one process,
    and a spinning one slows the other (docs/method.md, "Both bars at once")."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("backend 'onnx' needs onnxruntime: pip install 'aird[onnx]'") from None
    from aird.models.export import export_module
    from aird.paths import cache_dir

    path = cache_dir("onnx") / f"{fingerprint}-in{size}-{ONNX_LAYOUT}.onnx"
    if not path.is_file():
        export_module(module.cpu(), path, size, layout=ONNX_LAYOUT)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0).astype(np.float32)


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or many: a list/tuple, or a 4-D (N, H, W, C) array, is many."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


# ---------------------------------------------------------------------------- the recognizer


@dataclass
class _Pending:
    """A face found in an input, waiting to be embedded."""

    result: FaceResult
    pixels: np.ndarray  # the network input, (S, S, 3) uint8


class Recognizer:
    """Embeds, verifies and identifies faces; build with :func:`load`.

    Safe to share between threads: the detector and each stream's adaptation are guarded by locks, and
    the networks themselves keep no state.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module | OnnxEmbedder,
        student_size: int,
        name: str,
        card: dict[str, Any] | None = None,
        student_fingerprint: str | None = None,
        backend: str = "torch",
        device: str = "cpu",
        adapt: str = DEFAULT_STREAM_ADAPT,
        batch_size: int = 32,
        path: Path | None = None,
        **adapt_options: Any,
    ):
        _check_backend(backend)
        if backend == "onnx" and device != "cpu":
            raise ConfigError(
                f"backend 'onnx' runs on the CPU here; use device='cpu' or backend='torch' for {device!r}"
            )
        if backend == "onnx" and adapt != "off":
            raise ConfigError(
                f"stream adaptation ({adapt}) runs on the torch backend; use backend='torch' or adapt='off'"
            )
        graph = student if not isinstance(student, nn.Module) else None
        if graph is not None and adapt != "off":
            raise ConfigError(
                f"{graph.path}: an exported graph runs as it was exported, so its streams cannot adapt ({adapt}); "
                "load the student's .safetensors file for stream adaptation, or use adapt='off'"
            )
        self.name = name
        self.path = path
        self.card = dict(card or {})
        self.backend = backend
        self.device = device
        self.student_size = int(student_size)
        self.batch_size = batch_size
        teacher_fp = module_fingerprint(teacher)
        own_fingerprint = graph.fingerprint() if graph is not None else None
        self.student_fingerprint = student_fingerprint or own_fingerprint or module_fingerprint(student)
        self.student_backend = "onnxruntime" if graph is not None else backend
        # What made an embedding: both embedders (HR faces are the teacher's, LR faces the student's).
        blob = f"{teacher_fp}|{self.student_fingerprint}|{self.student_size}".encode()
        self.fingerprint = hashlib.sha1(blob).hexdigest()[:16]
        self._teacher = _Net(teacher, TEACHER_SIZE, teacher_fp, backend, device, batch_size)
        same = student is teacher
        self._student: _Net | _GraphNet = (
            self._teacher
            if same
            else _GraphNet(graph)
            if graph is not None
            else _Net(student, self.student_size, self.student_fingerprint, backend, device, batch_size)
        )
        self.streams = StreamStates(
            None if graph is not None else student, adapt, fingerprint=self.fingerprint, **adapt_options
        )
        self._aligner: FaceAligner | None = None
        self._aligner_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Recognizer({self.name!r}, fingerprint={self.fingerprint!r}, backend={self.backend!r}, adapt={self.streams.adapt!r})"

    # -------------------------------------------------------------- verbs

    def represent(
        self,
        images: ImageInput | Sequence[ImageInput],
        cropped: bool = False,
        upsample: int = 1,
        stream: str | None = None,
        max_faces: int | None = None,
    ) -> list[FaceResult]:
        """Every face of every image, in input order (largest face first within an image).

        An image with no face gives one result with ``found=False`` and a message saying what to try.
        An image that cannot be read raises ``DataError`` naming it (nothing else is embedded then).
        ``cropped=True``: each image is one ready face crop (any size; the CCTV case). ``upsample``: how
        many times the detector doubles a photo first (1 finds faces of ~40 px, 2 of ~20 px; slower).
        ``stream``: LR faces are embedded with that stream's FaceBN adaptation (see :attr:`streams`).
        ``max_faces``: more faces than this in the call raise ``TooManyFacesError`` before any is embedded.
        """
        if stream is not None:
            check_stream_name(stream)
        items = _as_list(images)
        sources = [describe(img, i if len(items) > 1 else None) for i, img in enumerate(items)]
        rgbs = [read_image(img, source) for img, source in zip(items, sources)]
        return self._represent(list(zip(range(len(items)), sources, rgbs)), cropped, upsample, stream, max_faces)

    def _represent(
        self,
        images: list[tuple[int, str, np.ndarray]],
        cropped: bool,
        upsample: int,
        stream: str | None,
        max_faces: int | None = None,
    ) -> list[FaceResult]:
        """Detect (or take as crops) and embed decoded images given as (position, source, RGB)."""
        pending: list[_Pending] = []
        results: list[FaceResult] = []
        for i, source, rgb in images:
            found = self._faces(rgb, source, i, cropped, upsample)
            if isinstance(found, FaceResult):
                results.append(found)
            else:
                pending.extend(found)
                results.extend(p.result for p in found)
        if max_faces is not None and len(pending) > max_faces:
            raise TooManyFacesError(
                f"{len(pending)} faces found in {len(images)} image(s); at most {max_faces} per call",
                fix="send fewer images per call, or crop the faces first",
            )
        self._embed(pending, stream)
        return results

    def verify(
        self,
        a: ImageInput,
        b: ImageInput,
        far: float = 1e-3,
        cropped: bool | tuple[bool, bool] = False,
        threshold: float | None = None,
        upsample: int = 1,
        max_faces: int | None = None,
    ) -> VerifyResult:
        """Are ``a`` and ``b`` one person? The threshold is the card's for the pair's mode at ``far``
        (or ``threshold``, a cosine similarity). A photo with several faces is judged by its largest
        (``a.faces_in_image`` says how many there were); a photo with none raises ``NoFaceError``."""
        crop_a, crop_b = (cropped, cropped) if isinstance(cropped, bool) else cropped
        fa = self._one_face(a, crop_a, upsample, max_faces)
        fb = self._one_face(b, crop_b, upsample, max_faces)
        mode = pair_mode(fa.route, fb.route)
        thr = check_threshold(threshold) if threshold is not None else self.threshold(mode, far)
        sim = float(np.dot(fa.embedding, fb.embedding))
        return VerifyResult(
            sim >= thr, sim, thr, None if threshold is not None else far_value(far), mode, fa, fb, self.name
        )

    def gallery(self, path: str | Path, index: str = "exact") -> "Gallery":
        """The gallery stored in ``path`` (SQLite; created by its first enrolment)."""
        from aird.gallery import Gallery

        return Gallery(path, self, index=index)

    def threshold(self, mode: str, far: float | str = 1e-3) -> float:
        """The card's calibrated cosine threshold for a pair mode at a false accept rate."""
        if mode not in PAIR_MODES:
            raise ConfigError(f"unknown pair mode {mode!r}; choose one of: {', '.join(PAIR_MODES)}")
        value = far_value(far)
        table = self.card.get("thresholds") or {}
        if not table:
            raise ConfigError(
                f"model {self.name!r} carries no calibrated thresholds (no model card); pass a threshold "
                "(a cosine similarity, e.g. --threshold 0.9) or use a student with a card (the shipped one)"
            )
        by_far = table.get(mode) or {}
        for key, t in by_far.items():
            if math.isclose(float(key), value, rel_tol=1e-6):
                return float(t)
        fars = sorted({k for modes in table.values() for k in modes}, key=float)
        raise ConfigError(
            f"model {self.name!r} has no {mode} threshold at far={far}; calibrated: "
            f"{mode} at far {', '.join(sorted(by_far, key=float)) or 'none'} (card FARs: {', '.join(fars)})"
        )

    def represent_files(
        self,
        paths: Iterable[str | Path],
        cropped: bool = False,
        upsample: int = 1,
        stream: str | None = None,
        progress: bool = False,
        desc: str = "faces",
    ) -> tuple[list[FaceResult], list[Skipped]]:
        """``represent`` file by file: a file that cannot be read is skipped with its reason, not fatal
        (for folders of user photos; the Python verbs raise instead)."""
        if stream is not None:
            check_stream_name(stream)
        paths = [Path(p) for p in paths]
        results: list[FaceResult] = []
        skipped: list[Skipped] = []
        chunk: list[tuple[int, str, np.ndarray]] = []
        with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress or len(paths) < 2) as bar:
            for i, path in enumerate(paths):
                try:
                    chunk.append((i, str(path), read_image(path, str(path))))
                except DataError as exc:
                    skipped.append(Skipped(str(path), str(exc).removeprefix(f"{path}: ")))
                    bar.update()
                if len(chunk) == self.batch_size or (i == len(paths) - 1 and chunk):
                    # Files are embedded in batches (and a stream adapts on each batch).
                    results.extend(self._represent(chunk, cropped, upsample, stream))
                    bar.update(len(chunk))
                    chunk = []
        return results, skipped

    def info(self) -> dict[str, Any]:
        """What a status page or a result record says about this recognizer."""
        card = {k: v for k, v in self.card.items() if k not in ("pools",)}
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "fingerprint": self.fingerprint,
            "student_fingerprint": self.student_fingerprint,
            "student_input_size": self.student_size,
            "hr_min_px": HR_MIN_PX,
            "backend": self.backend,
            "student_backend": self.student_backend,
            "adapt": self.streams.settings(),
            "card": card,
        }

    # -------------------------------------------------------------- internals

    def _one_face(self, image: ImageInput, cropped: bool, upsample: int, max_faces: int | None = None) -> FaceResult:
        faces = self.represent(image, cropped=cropped, upsample=upsample, max_faces=max_faces)
        if not faces[0].found:
            raise NoFaceError(faces[0].message, faces[0].source)
        return faces[0]

    def _faces(
        self, rgb: np.ndarray, source: str, index: int, cropped: bool, upsample: int
    ) -> FaceResult | list[_Pending]:
        h, w = rgb.shape[:2]
        if cropped:
            px = min(h, w)
            route = route_of(px)
            size = TEACHER_SIZE if route == "hr" else self.student_size
            result = FaceResult(source, index, True, 0, 1, route=route, face_px=px, box=Box(0, 0, w, h), cropped=True)
            return [_Pending(result, to_network_input(rgb, size))]
        if not isinstance(upsample, int) or isinstance(upsample, bool) or not 0 <= upsample <= MAX_UPSAMPLE:
            raise ConfigError(
                f"upsample must be an integer 0..{MAX_UPSAMPLE} (detector pyramid doublings), got {upsample!r}"
            )
        aligner = self._get_aligner()
        with self._aligner_lock:  # dlib's detector and predictor are not documented thread-safe
            detected = aligner.detect(rgb, upsample)
            found = []
            for k, face in enumerate(detected):
                route = route_of(face.chip_px)
                if route == "hr":
                    pixels = aligner.chip(rgb, face, TEACHER_SIZE)
                else:
                    # An LR face is cut at its native resolution, then takes the one LR path to the student.
                    native = aligner.chip(rgb, face, max(MIN_SIDE, round(face.chip_px)))
                    pixels = to_network_input(native, self.student_size)
                left, top, right, bottom = face.box
                box = Box(max(0, left), max(0, top), min(w, right + 1), min(h, bottom + 1))
                result = FaceResult(
                    source, index, True, k, len(detected), route=route, face_px=round(face.chip_px), box=box
                )
                found.append(_Pending(result, pixels))
        if found:
            return found
        small = max(h, w) < 100
        hint = (
            f"the image is only {w}x{h} px: if it is a face crop (a detector's output), pass cropped=True (--cropped)"
            if small
            else f"if the faces are small, try upsample={min(upsample + 1, MAX_UPSAMPLE)} (finds faces about half as "
            "large, slower); if the image is a ready face crop, pass cropped=True (--cropped)"
        )
        message = f"no face found in the {w}x{h} photo by the detector (upsample={upsample}); {hint}"
        return FaceResult(source, index, False, message=message)

    def _get_aligner(self) -> FaceAligner:
        with self._aligner_lock:
            if self._aligner is None:
                self._aligner = FaceAligner(AlignSettings(size=TEACHER_SIZE))
            return self._aligner

    def _embed(self, pending: list[_Pending], stream: str | None) -> None:
        hr = [p for p in pending if p.result.route == "hr"]
        lr = [p for p in pending if p.result.route == "lr"]
        if hr:
            out = _unit(self._teacher(np.stack([p.pixels for p in hr])))
            for p, e in zip(hr, out):
                p.result.embedding = e
        if lr:
            faces = np.stack([p.pixels for p in lr])
            adapt = "off"
            if stream is not None and self.streams.adapts(stream):
                # All LR faces of one call are one adaptation batch of that stream.
                x = faces_to_tensor(faces, self.student_size).to(self._student.device)
                out = _unit(self.streams(x, stream).float().cpu().numpy())
                adapt = self.streams.settings()["adapter"]
            else:
                out = _unit(self._student(faces))
                if stream is not None:
                    self.streams.note(stream, len(faces))
            for p, e in zip(lr, out):
                p.result.embedding = e
                p.result.stream = stream
                p.result.adapt = adapt


# ---------------------------------------------------------------------------- loading


def load(
    model: str | Path | None = None,
    backend: str = "torch",
    device: str = "cpu",
    adapt: str = DEFAULT_STREAM_ADAPT,
    batch_size: int = 32,
    **adapt_options: Any,
) -> Recognizer:
    """A recognizer: ``model`` None (or ``"shipped"``) is the shipped student, ``"fast"`` the shipped 16 px
    student (several times faster, a few points less accurate: docs/fast.md), ``"pruned"`` the shipped student
    with half its inner channels (between the two: docs/pruned.md); else a student ``.safetensors`` file, a
    graph written by ``aird export`` (``.onnx``, float or int8: the student runs on onnxruntime, its streams
    without adaptation), or ``"dlib_resnet"`` (the teacher alone, also for LR faces) or ``"dlib_resnet_bn"`` (the teacher with its
    batch norm restored, as the LR model). ``adapt`` is the FaceBN mode of named streams (default
    ``off``: see ``aird.adapt.streams`` for why); ``adapt_options`` go to it (``momentum``, ``alpha``), and
    ``adapt_streams=["cam-3", ...]`` adapts those streams only (the cameras ``aird adapt-check`` cleared;
    every other stream gets the plain model)."""
    from aird.models.registry import get_model, has_trained_weights, list_models
    from aird.models.shipped import SHIPPED_STUDENTS, default_student_path, parse_card, shipped_student_path
    from aird.models.student import load_student

    _check_backend(backend)  # before the teacher is built: a typo fails at once
    # Registry names that carry trained weights without a student file: the teacher, and the teacher with
    # its batch norm restored (the same function, adaptable by FaceBN).
    weighted = [name for name in list_models() if has_trained_weights(name)]
    teacher = get_model(TEACHER)
    if isinstance(model, str) and has_trained_weights(model):
        student = teacher if model == TEACHER else get_model(model)
        return Recognizer(
            teacher,
            student,
            TEACHER_SIZE,
            model,
            backend=backend,
            device=device,
            adapt=adapt,
            batch_size=batch_size,
            **adapt_options,
        )
    if isinstance(model, str) and model in list_models():
        raise ConfigError(
            f"model {model!r} is an architecture without trained weights; pass a student .safetensors file "
            f"(or one of {', '.join(weighted)}, or nothing for the shipped student)"
        )
    if model is None:
        path = default_student_path()
    elif isinstance(model, str) and model in SHIPPED_STUDENTS:
        path = shipped_student_path(model)
    else:
        path = Path(model).expanduser()
    if not path.exists():
        raise ModelFileError(
            f"{path}: model file not found; pass a student .safetensors or one of {', '.join(weighted)}"
        )
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; pass the student .safetensors file inside it")
    if path.suffix == ".onnx":
        # A graph from 'aird export' (an int8 one is the fastest on a CPU): its card travels in its metadata,
        # and it is fingerprinted by its own bytes, so its galleries never mix with the float student's.
        from aird.models.export import OnnxEmbedder

        graph = OnnxEmbedder(path, batch_size)
        name = graph.card.get("name") or path.stem
        if graph.metadata.get("quantized") == "int8":
            name += "-int8"
        return Recognizer(
            teacher,
            graph,
            graph.input_size,
            name,
            card=graph.card,
            backend=backend,
            device=device,
            adapt=adapt,
            batch_size=batch_size,
            path=path,
            **adapt_options,
        )
    try:
        student, meta = load_student(path)
    except ConfigError as exc:  # the file names an architecture this aird does not know
        raise ModelFileError(f"{path}: {exc}") from None
    card = parse_card(meta.get("card"), path)
    if adapt == SAFE_NAME and "anchor" not in adapt_options:
        # A student trained towards another space than the teacher's carries its own anchor on its card.
        vector = card_anchor(card, path)
        if vector is not None:
            adapt_options = {**adapt_options, "anchor": vector, "anchor_source": "model card"}
    size = int(meta["input_size"])
    name = card.get("name") or path.stem
    return Recognizer(
        teacher,
        student,
        size,
        name,
        card=card,
        student_fingerprint=card.get("fingerprint"),
        backend=backend,
        device=device,
        adapt=adapt,
        batch_size=batch_size,
        path=path,
        **adapt_options,
    )


__all__ = [
    "Box",
    "Candidate",
    "FaceResult",
    "IdentifyResult",
    "NoFaceError",
    "Recognizer",
    "Skipped",
    "VerifyResult",
    "load",
    "pair_mode",
]
