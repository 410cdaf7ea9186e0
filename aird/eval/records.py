"""Result records in the project's one shape (see RESULTS.md): build, check, merge, read, tabulate.

A results file is ``{"records": [...], "command": "..."}``; every table and plot is made from these.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from aird.errors import DataError, OutputError
from aird.io import atomic_path, check_writable_folder, locked, os_reason

TASKS = ("verification", "identification")
# Fields that together name what a record measured: a later record with the same key replaces it.
IDENTITY_KEYS = ("benchmark", "task", "model", "method", "adapt", "res", "pairs", "split")
REQUIRED_KEYS = IDENTITY_KEYS + ("n", "metrics", "settings")
TIMING_METRICS = ("faces_per_s", "p50_ms", "p99_ms")
RESULTS_FIX = "repair or move the file, or write to another one"


def _is_timing(key: str) -> bool:
    return key in TIMING_METRICS or key.endswith("_s") or key.endswith("_ms")


def _int(value: Any, key: str, minimum: int) -> int:
    # bool is an int subclass but never a count or a size.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"record key {key!r} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"record key {key!r} must be >= {minimum}, got {value}")
    return int(value)


def _metric(key: Any, value: Any) -> float:
    if not isinstance(key, str) or not key:
        raise ValueError(f"metric names must be non-empty strings, got {key!r}")
    if value is None:
        raise ValueError(f"metric {key!r} is None: leave a figure that was not measured out, never null or zero")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"metric {key!r} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"metric {key!r} must be finite, got {v}")
    if _is_timing(key):
        if v < 0:
            raise ValueError(f"timing metric {key!r} must be >= 0, got {v}")
    elif not 0.0 <= v <= 1.0:
        raise ValueError(f"metric {key!r} must be a fraction in [0, 1], got {v}")
    return v


def make_record(**fields: Any) -> dict:
    """A checked record: required keys first in RESULTS.md order, then any extra keys as given.

    Raises ValueError naming the offending key. Metric values become plain floats.
    """
    missing = [k for k in REQUIRED_KEYS if k not in fields]
    if missing:
        raise ValueError(f"record is missing required keys: {', '.join(missing)}")
    for key in ("benchmark", "task", "model", "method", "adapt", "split"):
        if not isinstance(fields[key], str) or not fields[key]:
            raise ValueError(f"record key {key!r} must be a non-empty string, got {fields[key]!r}")
    if fields["task"] not in TASKS:
        raise ValueError(f"record key 'task' must be one of {TASKS}, got {fields['task']!r}")
    pairs = fields["pairs"]
    if fields["task"] == "identification" and pairs is not None:
        raise ValueError(f"record key 'pairs' must be null for identification, got {pairs!r}")
    if fields["task"] == "verification" and (not isinstance(pairs, str) or not pairs):
        raise ValueError(f"record key 'pairs' must name the pair mode (e.g. 'lr-lr') for verification, got {pairs!r}")
    res = _int(fields["res"], "res", 1)
    n = _int(fields["n"], "n", 1)
    if not isinstance(fields["metrics"], dict):
        raise ValueError(f"record key 'metrics' must be an object, got {type(fields['metrics']).__name__}")
    if not isinstance(fields["settings"], dict):
        raise ValueError(f"record key 'settings' must be an object, got {type(fields['settings']).__name__}")
    metrics = {k: _metric(k, v) for k, v in fields["metrics"].items()}
    record = {k: fields[k] for k in REQUIRED_KEYS}
    record.update(res=res, n=n, metrics=metrics, settings=dict(fields["settings"]))
    record.update({k: v for k, v in fields.items() if k not in record})
    return record


def identity(record: dict) -> tuple:
    """The key under which a record replaces an earlier one in a merged file."""
    return tuple(record[k] for k in IDENTITY_KEYS)


def _identity_text(record: dict) -> str:
    """A record's identity fields as ``key=value`` text, for messages."""
    return ", ".join(f"{k}={record.get(k)!r}" for k in IDENTITY_KEYS)


def git_commit(repo: str | Path | None = None) -> str | None:
    """HEAD commit of the git repository holding ``repo`` (default: this package); None if there is none."""
    where = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """What produced a figure: interpreter, library versions, machine, commit and time (UTC)."""
    try:
        import dlib  # noqa: PLC0415 - optional; only its version is wanted

        dlib_version = getattr(dlib, "__version__", None)
    except ImportError:
        dlib_version = None
    return {
        "python": platform.python_version(),
        # From the installed metadata: importing torch just for its version costs seconds.
        "torch": _version("torch"),
        "numpy": np.__version__,
        "dlib": dlib_version,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def load_records(path: str | Path) -> list[dict]:
    """Records of a results file, each checked; DataError names the file and the bad record."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("results file does not exist", path) from None
    except OSError as e:
        raise DataError(f"cannot read the results file ({os_reason(e)})", path) from None
    except UnicodeDecodeError:
        raise DataError("not a results file (not UTF-8 text)", path, RESULTS_FIX) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e})", path, RESULTS_FIX) from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise DataError('not a results file: expected {"records": [...], "command": "..."}', path, RESULTS_FIX)
    records = []
    for i, r in enumerate(data["records"]):
        if not isinstance(r, dict):
            raise DataError(f"record {i} is not an object", path, RESULTS_FIX)
        try:
            records.append(make_record(**r))
        except ValueError as e:
            raise DataError(f"record {i}: {e}", path, RESULTS_FIX) from None
    return records


def check_results_file(path: str | Path) -> None:
    """Fail now, before any work is done, if records could not be merged into ``path`` later.

    A folder, a read-only file, a file that is not a valid results file (never silently replaced)
    and a folder that cannot be created or written are each an error naming the path.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError("is a folder, not a results file", path, "give a file path such as <folder>/eval.json")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OutputError("results file is read-only", path, "make it writable or choose another file")
        load_records(path)
    check_writable_folder(path.parent, "folder for the results file", "choose another results file (--out)")


def write_records(
    path: str | Path, records: Iterable[dict], command: str, merge: bool = True, top: dict | None = None
) -> list[dict]:
    """Write records atomically; with ``merge``, keep the file's other records and replace same-key ones.

    The read-merge-write holds an inter-process lock on ``path`` (``aird.io.locked``), so concurrent
    writers (parallel benchmarks, two ``aird eval`` runs) all land. Records keep the file's order,
    replaced ones in place and new ones appended. Because a merged file mixes runs, each new record
    also keeps ``command`` in ``settings["command"]`` unless set; the file's top-level ``command`` is
    the latest. Other top-level keys of the file are kept, and ``top`` sets some in the same locked
    write (a separate read-modify-write would race other writers and drop their records). A file that
    exists but is not a valid results file is an error, never overwritten. Returns the records written.
    """
    if not isinstance(command, str) or not command:
        raise ValueError("command must be the non-empty command line that reproduces these records")
    new = []
    for r in records:
        r = make_record(**r)
        r["settings"].setdefault("command", command)
        new.append(r)
    keys = [identity(r) for r in new]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"two records with the same identity {dict(zip(IDENTITY_KEYS, dup))}")
    path = Path(path)
    with locked(path):
        merged = {identity(r): r for r in load_records(path)} if merge and path.exists() else {}
        merged.update(zip(keys, new))
        out = list(merged.values())
        kept = _top_level(path) if merge and path.exists() else {}
        write_results(path, {**kept, **(top or {}), "records": out, "command": command})
    return out


def write_results(path: Path, doc: dict) -> None:
    """A results file with one record per line: a record is one line of a diff, and a file of hundreds
    of records (a stream benchmark) stays a few times smaller than indented JSON. Any JSON reader reads it."""
    lines = []
    for key, value in doc.items():
        if key == "records":
            body = ",\n".join("    " + json.dumps(r, default=str) for r in value)
            lines.append(f'  "records": [\n{body}\n  ]' if value else '  "records": []')
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, default=str)}")
    with atomic_path(path) as tmp:
        tmp.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def _top_level(path: Path) -> dict:
    """The file's top-level keys other than its records and command (already checked by load_records)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if k not in ("records", "command")}


def _paired_values(value: str | list | None) -> list | None:
    # Fold accuracies are a list; probe hits a "0"/"1" string (older records: a list of ints).
    return [int(c) for c in value] if isinstance(value, str) else value


def paired_difference(
    a: dict, b: dict, keys: tuple[str, ...] = ("fold_accuracies", "probe_hits")
) -> tuple[float, float] | None:
    """Mean and standard error (points) of record ``a`` minus record ``b``, paired over their folds
    (``settings.fold_accuracies``) or their probes (``settings.probe_hits``), the first of ``keys`` both
    hold; None when they share none."""
    for key in keys:
        x, y = (_paired_values(r["settings"].get(key)) for r in (a, b))
        if x is not None and y is not None and len(x) == len(y) and len(x) > 1:
            d = (np.asarray(x, float) - np.asarray(y, float)) * 100
            return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    return None


def paired_fold_table(records: list[dict], reference: str, by: str = "method", minus_reference: bool = False) -> str:
    """Markdown: per (pair mode, resolution), ``reference`` minus each other ``by`` value (``method``,
    ``model``), or each minus ``reference`` with ``minus_reference``; mean ± standard error in points over
    the folds both records have (``settings.fold_accuracies``). Empty when there is nothing to pair."""
    folds = {
        (r[by], r["pairs"], r["res"]): np.array(r["settings"]["fold_accuracies"])
        for r in records
        if r["settings"].get("fold_accuracies")
    }
    cols = sorted({(mode, res) for _, mode, res in folds}, key=lambda c: (c[0] != "lr-lr", -c[1]))
    others = [m for m in dict.fromkeys(k[0] for k in folds) if m != reference]
    if not any(k[0] == reference for k in folds) or not others:
        return ""
    lines = [f"| {by} | " + " | ".join(f"{mode} {res} px" for mode, res in cols) + " |"]
    lines.append("|---|" + "---:|" * len(cols))
    for m in others:
        cells = []
        for mode, res in cols:
            a, b = folds.get((reference, mode, res)), folds.get((m, mode, res))
            if a is None or b is None or len(a) != len(b):
                cells.append("—")
                continue
            d = (b - a if minus_reference else a - b) * 100
            cells.append(f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _column_order(values: list) -> list:
    # Resolutions and other ints read best high to low (150, 32, 16, 8); anything else keeps first-seen order.
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return sorted(values, reverse=True)
    return values


def _cell_text(value: Any) -> str:
    return ("null" if value is None else str(value)).replace("|", "\\|")


def markdown_table(
    records: Sequence[dict], row_keys: Sequence[str], col_key: str, metric: str, fmt: str = "{:.1%}"
) -> str:
    """Pivot ``metrics[metric]`` into a Markdown table: one row per distinct ``row_keys`` tuple (first-seen
    order), one column per ``col_key`` value; cells without the metric read "—".

    Raises ValueError when two records land in one cell (filter them first, e.g. by split).
    """
    rows: dict[tuple, None] = {}
    cols: dict[Any, None] = {}
    cells: dict[tuple, dict] = {}
    for r in records:
        try:
            row = tuple(r[k] for k in row_keys)
            col = r[col_key]
        except KeyError as e:
            raise ValueError(f"record has no key {e.args[0]!r}: {_identity_text(r)}") from None
        if (row, col) in cells:
            raise ValueError(
                f"two records for row {dict(zip(row_keys, row))}, {col_key}={col!r}: "
                f"{_identity_text(cells[row, col])} and {_identity_text(r)}"
            )
        rows.setdefault(row)
        cols.setdefault(col)
        cells[row, col] = r
    columns = _column_order(list(cols))
    lines = [
        "| " + " | ".join([*row_keys, *(f"{col_key}={_cell_text(c)}" for c in columns)]) + " |",
        "|" + "---|" * len(row_keys) + "---:|" * len(columns),
    ]
    for row in rows:
        texts = [_cell_text(v) for v in row]
        for c in columns:
            value = cells.get((row, c), {}).get("metrics", {}).get(metric)
            texts.append("—" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"
