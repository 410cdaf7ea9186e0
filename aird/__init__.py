"""aird: low-resolution face recognition by Adaptable Instance-Relation Distillation.

The front door::

    import aird
    rec = aird.load()                                   # the shipped student (or load("path/student.safetensors"))
    faces = rec.represent("photo.jpg")                  # every face: embedding, route, size, box
    rec.verify("badge.jpg", "cctv_crop.png", cropped=(False, True))
    gallery = rec.gallery("watchlist.db")
    gallery.enrol("alice", ["alice1.jpg", "alice2.jpg"])
    gallery.identify("crop_14px.png", cropped=True, stream="camera-3")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The verbs import torch and dlib; they are resolved on first use so that `import aird` stays instant.
_LAZY = {
    "load": "aird.recognizer",
    "Recognizer": "aird.recognizer",
    "Gallery": "aird.gallery",
    "GalleryError": "aird.gallery",
    "EnrolResult": "aird.gallery",
    "Person": "aird.gallery",
    "FaceResult": "aird.results",
    "VerifyResult": "aird.results",
    "IdentifyResult": "aird.results",
    "Candidate": "aird.results",
    "Box": "aird.results",
    "Skipped": "aird.results",
    "NoFaceError": "aird.results",
    "StreamStates": "aird.adapt.streams",
    "StreamInfo": "aird.adapt.streams",
    "AirdError": "aird.errors",
    "DataError": "aird.errors",
    "ModelFileError": "aird.errors",
    "ConfigError": "aird.errors",
}

__all__ = [
    "__version__",
    "load",
    "Recognizer",
    "Gallery",
    "GalleryError",
    "EnrolResult",
    "Person",
    "FaceResult",
    "VerifyResult",
    "IdentifyResult",
    "Candidate",
    "Box",
    "Skipped",
    "NoFaceError",
    "StreamStates",
    "StreamInfo",
    "AirdError",
    "DataError",
    "ModelFileError",
    "ConfigError",
]

if TYPE_CHECKING:
    from aird.adapt.streams import StreamInfo, StreamStates
    from aird.errors import AirdError, ConfigError, DataError, ModelFileError
    from aird.gallery import EnrolResult, Gallery, GalleryError, Person
    from aird.recognizer import Recognizer, load
    from aird.results import Box, Candidate, FaceResult, IdentifyResult, NoFaceError, Skipped, VerifyResult


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aird' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
