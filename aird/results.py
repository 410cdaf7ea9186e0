"""What the recognizer verbs return: typed results, light enough to import without torch.

A face is found or it is not (``FaceResult.found``, with a message saying what to try): never a bare
None, never a silently used fallback box. ``route`` says which embedder made an embedding ("hr": the
teacher, for face chips of at least ``HR_MIN_PX`` source pixels; "lr": the student), and the routes of
two faces pick the calibrated threshold of their comparison (``pair_mode``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aird.errors import ConfigError, DataError

Route = Literal["hr", "lr"]
ROUTES: tuple[Route, ...] = ("hr", "lr")
HR_MIN_PX = 32  # a face chip this many source pixels a side or more is HR (teacher), smaller is LR (student)
PAIR_MODES = ("hr-hr", "hr-lr", "lr-lr")


class NoFaceError(DataError):
    """A verb needed a face in an image and the detector found none."""


class TooManyFacesError(DataError):
    """A call found more faces than its ``max_faces`` allows (nothing was embedded)."""


@dataclass(frozen=True)
class Box:
    """A face's box in its source image, in pixels: (left, top) inclusive, (right, bottom) exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def to_list(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]


@dataclass
class FaceResult:
    """One face of one input image, or the record that an image held no face (``found`` False).

    ``embedding`` is unit length (compare two by their dot product, the cosine similarity the thresholds
    are on). ``face_px`` is the side of the aligned face chip in source pixels (for a crop: its shorter
    side), the same measure as the resolutions the student was trained for; it decides ``route``.
    """

    source: str  # the file path, or "<bytes #i>", "<array #i>", "<PIL image #i>"
    image: int  # position of the image in the call
    found: bool
    face: int = -1  # position of the face in its image (0: the largest); -1 when none was found
    faces_in_image: int = 0
    embedding: np.ndarray | None = field(default=None, repr=False)
    route: Route | None = None
    face_px: int | None = None
    box: Box | None = None
    cropped: bool = False  # True: the input was taken as a ready face crop, not searched by the detector
    stream: str | None = None  # the stream whose adaptation embedded it (LR faces of a named stream only)
    adapt: str = "off"  # the adaptation that embedded it
    message: str = ""  # why no face was found, and what to try

    def to_dict(self, embedding: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "image": self.image,
            "found": self.found,
            "face": self.face,
            "faces_in_image": self.faces_in_image,
            "route": self.route,
            "face_px": self.face_px,
            "box": self.box.to_list() if self.box else None,
            "cropped": self.cropped,
            "stream": self.stream,
            "adapt": self.adapt,
            "message": self.message,
        }
        if embedding:
            out["embedding"] = None if self.embedding is None else [float(v) for v in self.embedding]
        return out


@dataclass
class VerifyResult:
    """Whether two faces are one person: ``similarity >= threshold`` (calibrated at ``far`` for ``mode``)."""

    verified: bool
    similarity: float
    threshold: float
    far: float | None  # None when the caller gave the threshold
    mode: str  # "hr-hr", "hr-lr" or "lr-lr": the two faces' routes
    a: FaceResult
    b: FaceResult
    model: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "similarity": self.similarity,
            "threshold": self.threshold,
            "far": self.far,
            "mode": self.mode,
            "model": self.model,
            "a": self.a.to_dict(embedding=False),
            "b": self.b.to_dict(embedding=False),
        }


@dataclass
class Candidate:
    """One person of a gallery as a probe's match: their best entry's similarity and its threshold."""

    name: str
    score: float
    threshold: float
    mode: str  # pair mode of the probe and the person's best entry
    accepted: bool  # score >= threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": self.score,
            "threshold": self.threshold,
            "mode": self.mode,
            "accepted": self.accepted,
        }


@dataclass
class IdentifyResult:
    """Who one probe face is (open set): ``status`` is "match", "unknown" (no one reaches the threshold)
    or "no_face" (the probe image held none; ``probe.message`` says what to try)."""

    probe: FaceResult
    status: Literal["match", "unknown", "no_face"]
    name: str | None  # the matched person; None unless status is "match"
    score: float | None  # the best candidate's similarity
    threshold: float | None  # the threshold the best candidate was judged by
    far: float | None
    candidates: list[Candidate]  # the top-k people, best first

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "name": self.name,
            "score": self.score,
            "threshold": self.threshold,
            "far": self.far,
            "probe": self.probe.to_dict(embedding=False),
            "candidates": [c.to_dict() for c in self.candidates],
        }

    ROW_FIELDS = (
        "source",
        "face",
        "status",
        "name",
        "score",
        "threshold",
        "mode",
        "route",
        "face_px",
        "box",
        "candidates",
        "message",
    )

    def to_row(self) -> dict[str, Any]:
        """One flat row (CSV): the best candidate, then the top-k as "name:score" joined by "|"."""
        best = self.candidates[0] if self.candidates else None
        return {
            "source": self.probe.source,
            "face": self.probe.face,
            "status": self.status,
            "name": self.name or "",
            "score": "" if self.score is None else f"{self.score:.4f}",
            "threshold": "" if self.threshold is None else f"{self.threshold:.4f}",
            "mode": best.mode if best else "",
            "route": self.probe.route or "",
            "face_px": "" if self.probe.face_px is None else self.probe.face_px,
            "box": " ".join(str(v) for v in self.probe.box.to_list()) if self.probe.box else "",
            "candidates": "|".join(f"{c.name}:{c.score:.4f}" for c in self.candidates),
            "message": self.probe.message,
        }


@dataclass
class Skipped:
    """An input that could not be used, and why (a summary line for the user)."""

    source: str
    reason: str


def pair_mode(route_a: str, route_b: str) -> str:
    """The threshold mode of two faces: "hr-hr", "hr-lr" or "lr-lr" (order does not matter)."""
    return "-".join(sorted((route_a, route_b)))


def route_of(face_px: float) -> Route:
    return "hr" if face_px >= HR_MIN_PX else "lr"


def check_threshold(threshold: float) -> float:
    """A caller's own decision threshold: a cosine similarity in [-1, 1]."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold must be a cosine similarity in [-1, 1], got {threshold!r}") from None
    if not -1.0 <= value <= 1.0:  # NaN fails this too
        raise ConfigError(f"threshold must be a cosine similarity in [-1, 1], got {threshold!r}")
    return value


def far_value(far: float | str) -> float:
    """A false accept rate: a number in (0, 1)."""
    try:
        value = float(far)
    except (TypeError, ValueError):
        raise ConfigError(f"far must be a number such as 1e-3, got {far!r}") from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"far must lie in (0, 1), got {far!r}")
    return value
