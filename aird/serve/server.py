"""Run the service with uvicorn (one process; inference parallelism is the worker pool's threads)."""

from __future__ import annotations

import os
import sys

from aird.errors import ConfigError
from aird.serve.settings import ServeSettings


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(f"aird serve needs {module}: pip install 'aird[serve]'") from None


def serve(settings: ServeSettings, log_level: str = "info") -> None:
    """Load the model, then serve until Ctrl-C / SIGTERM (stream states are saved on the way out)."""
    for module in ("fastapi", "uvicorn", "multipart"):
        _need(module)
    import torch
    import uvicorn

    from aird.serve.app import create_app

    if "OMP_NUM_THREADS" not in os.environ:
        # Each worker thread runs its own forward passes: split the cores between them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    app = create_app(settings)
    service = app.state.service
    auth = "API keys from " + str(settings.keys_path) if service.keys is not None else "OPEN (no API keys)"
    print(
        f"aird serve: {service.recognizer.name} on http://{settings.host}:{settings.port} "
        f"(page at /, API docs at /docs); {settings.workers} workers, queue {settings.queue}; "
        f"streams adapt with {service.recognizer.streams.settings()['adapter']}; auth: {auth}; "
        f"data in {settings.data_dir}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, timeout_graceful_shutdown=10)
