"""Errors a user can act on: each names the offending file or setting and how to fix it."""

from __future__ import annotations

from pathlib import Path


class AirdError(Exception):
    """Base class of every error aird raises on purpose."""


def _located(message: str, path: str | Path | None, fix: str | None) -> str:
    text = message if path is None else f"{path}: {message}"
    return f"{text} -- {fix}" if fix else text


class DataError(AirdError, ValueError):
    """Bad or missing input data (image, folder, protocol file)."""

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        self.message = message  # what is wrong, without the path and the fix
        self.path = None if path is None else Path(path)
        self.fix = fix
        super().__init__(_located(message, path, fix))


class ConfigError(AirdError, ValueError):
    """A bad setting: unknown key, value out of range, unknown name."""


class ModelFileError(AirdError, ValueError):
    """A model file that cannot be read (wrong format, truncated, corrupt)."""


class OutputError(AirdError):
    """A file or folder aird must write (results, plots, cache) that cannot be written."""

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        self.message = message
        self.path = None if path is None else Path(path)
        self.fix = fix
        super().__init__(_located(message, path, fix))
