"""What ``aird serve`` runs with: one dataclass, range-checked before anything starts."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aird.data.images import DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, max_image_pixels
from aird.errors import ConfigError

DEFAULT_DATA_DIR = Path("aird-data")
KEYS_FILE = "keys.json"
GALLERY_SUFFIX = ".db"
# A gallery name becomes a file name under <data dir>/galleries: letters, digits, '.', '_' and '-' only.
GALLERY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": only this machine can reach such a server."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeSettings:
    """Settings of the HTTP service (``aird serve --help`` explains each one).

    ``data_dir`` holds ``galleries/<name>.db``, ``streams/`` (each camera's FaceBN state, per model and
    adaptation mode) and, unless ``api_key_file`` names another file, ``keys.json``. ``workers`` threads
    run inference; at most ``queue`` more requests wait for one, and any request beyond that is answered
    503 at once. ``adapt`` None is the recognizer's default stream adaptation; ``adapt_streams`` limits it to
    the cameras named (those ``aird adapt-check`` cleared).
    """

    model: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    queue: int = 16
    max_body_mb: float = 20.0
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_faces: int = 32
    api_key_file: Path | None = None
    no_auth: bool = False
    adapt: str | None = None
    adapt_streams: list[str] | None = None  # with ``adapt``: the only streams that adapt (None: every one)
    backend: str = "torch"
    retry_after_s: int = 2

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()
        if self.api_key_file is not None:
            self.api_key_file = Path(self.api_key_file).expanduser()

    @property
    def keys_path(self) -> Path:
        return self.api_key_file if self.api_key_file is not None else self.data_dir / KEYS_FILE

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def check(self) -> "ServeSettings":
        """Refuse settings out of range, and an open server on a non-loopback host (see ``auth``)."""

        def whole(name: str, low: int, high: int | None = None) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low or (high and value > high):
                bound = f"{low}..{high}" if high else f">= {low}"
                raise ConfigError(f"serve setting {name} must be an integer {bound}, got {value!r}")

        whole("port", 0, 65535)
        whole("workers", 1, 256)
        whole("queue", 0)
        whole("max_faces", 1)
        whole("retry_after_s", 1)
        whole("max_pixels", 64)
        if self.max_pixels > max_image_pixels():
            raise ConfigError(
                f"serve setting max_pixels={self.max_pixels} is over aird's image budget ({max_image_pixels()}); "
                f"raise that too with {MAX_PIXELS_ENV}={self.max_pixels}"
            )
        if not isinstance(self.max_body_mb, (int, float)) or not 0 < self.max_body_mb <= 4096:
            raise ConfigError(f"serve setting max_body_mb must be a number in (0, 4096], got {self.max_body_mb!r}")
        if self.adapt_streams is not None and (not self.adapt or self.adapt == "off" or not self.adapt_streams):
            raise ConfigError(
                "serve setting adapt_streams names the cameras that adapt: give at least one, with a mode "
                "(--adapt facebn-safe --adapt-streams cam-3,cam-7)"
            )
        if self.auth == "refused":
            raise ConfigError(
                f"no API keys file at {self.keys_path}: refusing to serve {self.host} (reachable from other machines) "
                "without keys; add one with 'aird serve --add-key NAME --galleries G1,G2 --data-dir "
                f"{self.data_dir}', or pass --no-auth to serve it open on purpose"
            )
        return self

    @property
    def auth(self) -> str:
        """``keys`` (a keys file exists: every request needs a key), ``off`` (--no-auth, or no keys file on
        a loopback host: open) or ``refused`` (no keys file on a host other machines can reach)."""
        if self.no_auth:
            return "off"
        if self.keys_path.exists():
            return "keys"
        return "off" if is_loopback(self.host) else "refused"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_dir"] = str(self.data_dir)
        out["api_key_file"] = str(self.keys_path)
        return out


def check_gallery_name(name: str) -> str:
    if not GALLERY_NAME.match(name or ""):
        raise ConfigError(
            f"bad gallery name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name
