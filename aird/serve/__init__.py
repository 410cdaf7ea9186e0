"""``aird serve``: the recognizer over HTTP (FastAPI + uvicorn) with a small web page at ``/``.

``create_app(ServeSettings(...))`` builds the app; ``serve(settings)`` runs it with uvicorn. Keys are
managed by ``aird.serve.keys`` (no web framework needed for that). Endpoints, errors and limits:
``aird.serve.app`` and docs/recognizer.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aird.serve.settings import ServeSettings

# FastAPI and uvicorn load on first use: managing keys, or reading the settings, does not need them.
_LAZY = {"create_app": "aird.serve.app", "serve": "aird.serve.server"}

__all__ = ["ServeSettings", "create_app", "serve"]

if TYPE_CHECKING:
    from aird.serve.app import create_app
    from aird.serve.server import serve


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aird.serve' has no attribute {name!r}")
