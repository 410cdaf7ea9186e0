"""Atomic file writes, locked read-modify-write, and cache files that are recomputed when damaged.

A crash never leaves a half-written cache, record or checkpoint; a file that cannot be written is an
:class:`OutputError` naming it, never a traceback.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from aird.errors import DataError, OutputError

WRITE_FIX = "make the folder writable or choose another location"


def os_reason(exc: OSError) -> str:
    """The short reason of an OS error ("Permission denied"), without the errno and path."""
    return exc.strerror or str(exc)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` only on success.

    Any OS error while creating, writing or renaming the file is an OutputError naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError("is a folder, expected a file path", path, "give a file path (e.g. <folder>/name)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write here ({os_reason(exc)})", path, WRITE_FIX) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as exc:
        raise OutputError(f"cannot write ({os_reason(exc)})", path, WRITE_FIX) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_writable_folder(folder: str | Path, what: str = "folder", fix: str = WRITE_FIX) -> None:
    """OutputError unless ``folder`` exists as a writable folder or can be created (checked, not created)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == folder:
            raise OutputError(f"{what} is a file, not a folder", folder, fix)
        raise OutputError(f"{what} cannot be created: {existing} is a file", folder, fix)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} is read-only", existing, fix)


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's content; DataError naming it when it cannot be read or is not UTF-8."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            path,
            "save it as UTF-8 (or plain ASCII)",
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read the {what} ({os_reason(exc)})", path) from None


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def lock_path(path: str | Path) -> Path:
    """The sidecar lock file of ``path``: ``.<name>.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``path`` for a read-modify-write (``flock`` on its sidecar).

    The sidecar is never deleted: removing it while another process waits on it would let two
    writers in at once. The lock is released when the block ends, also on error or a crash.
    """
    path = Path(path)
    lock = lock_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputError(f"cannot create the lock file {lock.name} ({os_reason(exc)})", path, WRITE_FIX) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# What a damaged .npz raises while being opened or decompressed: truncated zip, bad CRC, bad header.
_NPZ_DAMAGE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def write_npz_asset(path: str | Path, arrays: dict[str, np.ndarray], **meta: Any) -> None:
    """A small asset ``.npz`` written atomically: ``arrays`` and, as ``meta:<key>`` strings, how it was made."""
    entries = {**arrays, **{f"meta:{k}": np.array(str(v)) for k, v in meta.items()}}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **entries)


def read_npz_asset(path: str | Path, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays and the ``meta:`` strings of an asset ``.npz``; a missing or damaged file is a ModelFileError
    naming ``what`` it should hold."""
    from aird.errors import ModelFileError

    try:
        with np.load(path, allow_pickle=False) as z:
            entries = {key: z[key] for key in z.files}
    except _NPZ_DAMAGE as err:  # missing, truncated, corrupt
        raise ModelFileError(f"{path}: cannot read {what}: {err}") from None
    meta = {k.split(":", 1)[1]: str(v) for k, v in entries.items() if k.startswith("meta:")}
    return {k: v for k, v in entries.items() if not k.startswith("meta:")}, meta


def read_npz_cache(path: str | Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The arrays ``keys`` of a cache ``.npz``, fully read; None when the file is absent or damaged.

    A damaged entry (truncated, corrupt, missing a key) is deleted so the caller recomputes it:
    a cache is never trusted and never stops a run.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except _NPZ_DAMAGE:
        try:
            path.unlink()
        except OSError:
            pass  # the atomic rewrite replaces it anyway
        return None
