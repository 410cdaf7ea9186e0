"""Fixtures of the service tests: the recognizer tests' student file, one recognizer for every app, and
a factory of apps on a fresh data dir (helpers: serving.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "recognizer"))
sys.path.insert(0, str(Path(__file__).parent))
from students import orl_chips, student_file  # noqa: E402,F401

pytest.importorskip("fastapi", reason="the service needs the serve extra: pip install 'aird[serve]'")
pytest.importorskip("multipart", reason="the service needs python-multipart: pip install 'aird[serve]'")


@pytest.fixture(scope="session")
def serve_recognizer(student_file):  # noqa: F811
    """Shared by the apps that need no stream adaptation (apps only count the faces of streams then)."""
    import aird

    return aird.load(student_file)


@pytest.fixture
def make_client(tmp_path, serve_recognizer):
    """``make_client(recognizer=None, **settings)``: a TestClient of a fresh app on ``tmp_path/data``."""
    from fastapi.testclient import TestClient

    from aird.serve import ServeSettings, create_app

    opened = []

    def make(recognizer=None, **settings):
        settings.setdefault("data_dir", tmp_path / "data")
        app = create_app(ServeSettings(**settings), recognizer or serve_recognizer)
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
