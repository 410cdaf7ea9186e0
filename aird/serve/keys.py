"""API keys of the HTTP service: a JSON file of sha256 hashes, never the keys themselves.

File shape::

    {"format": "aird-keys", "version": 1,
     "keys": [{"name": "frontdesk", "sha256": "<hex>", "galleries": ["staff", "visitors"], "created": "..."}]}

``galleries`` lists the galleries a key may touch (``["*"]``: all). A key is 32 random bytes
(``aird_`` + URL-safe base64), so one round of sha256 is enough at rest: there is nothing to guess.
``aird serve --add-key NAME --galleries G1,G2`` prints a new key once and stores its hash; a running
server sees added or removed keys at its next request (it re-reads the file when it changed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aird.errors import ConfigError
from aird.io import locked, write_json

KEYS_FORMAT = "aird-keys"
KEYS_VERSION = 1
ALL = "*"
KEY_PREFIX = "aird_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyEntry:
    name: str
    sha256: str
    galleries: tuple[str, ...]

    def may_use(self, gallery: str) -> bool:
        return ALL in self.galleries or gallery in self.galleries


def read_keys(path: Path) -> list[KeyEntry]:
    """The keys of a keys file; ConfigError naming the file when it is not one."""
    try:
        blob = json.loads(path.read_text())
        if not isinstance(blob, dict) or blob.get("format") != KEYS_FORMAT:
            raise ValueError(f"not an aird keys file (format is not {KEYS_FORMAT!r})")
        if blob.get("version", 0) > KEYS_VERSION:
            raise ValueError(f"keys file version {blob['version']} is newer than this aird's ({KEYS_VERSION})")
        entries = []
        for item in blob["keys"]:
            digest = str(item["sha256"])
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"key {item.get('name')!r}: sha256 is not 64 lowercase hex digits")
            galleries = item["galleries"]
            if not isinstance(galleries, list) or not all(isinstance(g, str) for g in galleries):
                raise ValueError(f'key {item.get("name")!r}: galleries must be a list of names (or ["*"])')
            entries.append(KeyEntry(str(item["name"]), digest, tuple(galleries)))
        return entries
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the API keys file ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path}: not a valid API keys file ({exc}); fix it, or move it away and add keys again "
            "with 'aird serve --add-key NAME'"
        ) from None


def _blob(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"format": KEYS_FORMAT, "version": KEYS_VERSION, "keys": []}
    read_keys(path)  # refuses a damaged file instead of overwriting it
    return json.loads(path.read_text())


def add_key(path: str | Path, name: str, galleries: list[str]) -> str:
    """Create a key allowed on ``galleries`` (``["*"]``: all), store its hash in ``path`` (created if missing)
    and return the key itself: the only time it is ever seen."""
    from aird.serve.settings import check_gallery_name

    path = Path(path)
    if not name or not name.strip() or len(name) > 100:
        raise ConfigError(f"a key's name is a non-empty string of at most 100 characters, got {name!r}")
    if not galleries:
        raise ConfigError("a key needs the galleries it may touch: --galleries G1,G2 (or '*' for all)")
    for g in galleries:
        if g != ALL:
            check_gallery_name(g)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with locked(path):
        blob = _blob(path)
        if any(k["name"] == name for k in blob["keys"]):
            raise ConfigError(f"{path}: a key named {name!r} exists; remove it first (aird serve --remove-key {name})")
        blob["keys"].append(
            {
                "name": name,
                "sha256": hash_key(key),
                "galleries": sorted(set(galleries)),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        )
        write_json(path, blob)
    return key


def remove_key(path: str | Path, name: str) -> None:
    path = Path(path)
    with locked(path):
        blob = _blob(path)
        kept = [k for k in blob["keys"] if k["name"] != name]
        if len(kept) == len(blob["keys"]):
            names = ", ".join(k["name"] for k in blob["keys"]) or "none"
            raise ConfigError(f"{path}: no key named {name!r} (keys: {names})")
        blob["keys"] = kept
        write_json(path, blob)


def list_keys(path: str | Path) -> list[KeyEntry]:
    path = Path(path)
    return read_keys(path) if path.exists() else []


class KeyStore:
    """The keys a running server accepts, re-read whenever the file changes (by size or mtime)."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, KeyEntry] = {}
        self._lock = threading.Lock()
        self._reload(strict=True)

    def _reload(self, strict: bool = False) -> None:
        try:
            st = self.path.stat()
        except OSError:
            if strict:
                raise ConfigError(f"{self.path}: API keys file not found") from None
            return  # keep the keys last read; a server never opens up because its file went missing
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            entries = read_keys(self.path)
        except ConfigError:
            if strict:
                raise
            return  # a half-edited file: keep the keys last read
        self._by_hash = {e.sha256: e for e in entries}
        self._stamp = stamp

    def find(self, key: str) -> KeyEntry | None:
        with self._lock:
            self._reload()
            digest = hash_key(key)
            for known, entry in self._by_hash.items():
                if hmac.compare_digest(known, digest):
                    return entry
        return None
