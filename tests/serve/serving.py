"""Helpers of the service tests: PNG bytes of arrays, random crops, multipart fields, a live server."""

from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager

import numpy as np


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def noise(side: int, seed: int = 0) -> np.ndarray:
    """A random RGB image: a "face crop" for cropped=True (any crop is taken as a face), no face for the detector."""
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def files(field: str, *images: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (f"img{i}.png", data, "image/png")) for i, data in enumerate(images)]


@contextmanager
def live_server(app):
    """``app`` served by uvicorn on 127.0.0.1 on a free port, in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
