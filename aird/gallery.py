"""A gallery of enrolled people that keeps its data: one SQLite file, searched in memory.

The file (WAL journal, ``synchronous=FULL``: an enrolment is on disk when ``enrol`` returns, and survives
a ``kill -9`` of the process) holds people, their unit embeddings (float32 blobs) with the route, source
and face size of each, the enrolment time, and the fingerprint of the recognizer that made them:
embeddings of another model live in another space, so enrolling or searching with one is an error
naming both. Several processes may enrol into one file at once (SQLite serialises the writers).

Search is exact by default: a matrix product of the probe with an in-memory copy of every embedding,
rebuilt when the file changed (a generation counter in the file is bumped by every write, so another
process's enrolment is seen by the next search). ``index="faiss"`` uses faiss-cpu instead (exact flat
index below ``COMPRESSED_MIN`` entries, an 8-bit scalar-quantized flat index above it, for galleries past
a million: every entry is still scanned, at a quarter of the bytes, and the candidates it returns are
re-scored exactly). A person's score is the similarity of their best entry; open-set decisions use the model
card's threshold for the pair mode of the probe and that entry.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from aird.data.folders import natural_key
from aird.data.inputs import ImageInput, expand_paths
from aird.errors import AirdError, ConfigError, DataError
from aird.results import (
    ROUTES,
    Candidate,
    FaceResult,
    IdentifyResult,
    NoFaceError,
    Skipped,
    check_threshold,
    pair_mode,
)

if TYPE_CHECKING:
    from aird.recognizer import Recognizer

SCHEMA_VERSION = 1
# Upgrades of an older file, applied in order inside one transaction: version v -> v + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}
EXPORT_FORMAT = "aird-gallery"
EXPORT_VERSION = 1
INDEXES = ("exact", "faiss")
# faiss: below this many entries an exact flat index; from here 8-bit codes, a quarter of float32's memory,
# scanned in full (an inverted file over sqrt(N) lists found only half of the true top 5 on unstructured
# embeddings). The exact numpy scan stays the faster default: 21 ms at 1M on 2 cores, docs/results/serve.json.
COMPRESSED_MIN = 200_000
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    person INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    route TEXT NOT NULL,
    source TEXT NOT NULL,
    face_px INTEGER,
    enrolled REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_person ON embeddings(person);
"""


class GalleryError(AirdError, ValueError):
    """A gallery that does not exist, is damaged, or was made by another model."""


@dataclass
class Person:
    """One enrolled person: how many embeddings, of which routes, enrolled when (unix times)."""

    name: str
    embeddings: int
    routes: dict[str, int]
    first_enrolled: float
    last_enrolled: float

    def to_dict(self) -> dict[str, Any]:
        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")

        return {
            "name": self.name,
            "embeddings": self.embeddings,
            "routes": self.routes,
            "first_enrolled": iso(self.first_enrolled),
            "last_enrolled": iso(self.last_enrolled),
        }


@dataclass
class EnrolResult:
    """What one enrolment stored: ``added`` embeddings of ``name``; the faces used; inputs skipped and why."""

    name: str
    added: int
    faces: list[FaceResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "a.jpg: 3 faces found; the largest was enrolled"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "added": self.added,
            "faces": [f.to_dict(embedding=False) for f in self.faces],
            "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped],
            "notes": self.notes,
        }


@dataclass
class Entries:
    """Embeddings of one person to store: unit vectors (N, D) with the route, source, face size
    (None: unknown) and, optionally, the enrolment time (unix) of each."""

    name: str
    vectors: np.ndarray
    routes: list[str]
    sources: list[str]
    face_px: list[int | None]
    enrolled: Sequence[float] | None = None

    def check(self) -> None:
        check_person_name(self.name)
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or not len(self.vectors):
            raise ValueError(f"expected (N, D) embeddings, got shape {self.vectors.shape}")
        n = len(self.vectors)
        if not len(self.routes) == len(self.sources) == len(self.face_px) == n:
            raise ValueError(f"{n} embeddings need {n} routes, sources and face sizes")
        if not np.all(np.isfinite(self.vectors)):
            raise ValueError(f"embeddings of {self.name!r} hold NaN or infinite values")
        bad = [r for r in self.routes if r not in ROUTES]
        if bad:
            raise ValueError(f"unknown route {bad[0]!r}; expected one of {ROUTES}")


# ---------------------------------------------------------------------------- search


class SearchIndex:
    """Top-k people for a probe over unit embeddings (rows) owned by people (``owners``: an int per row).

    ``search`` asks the index for the best ``m`` rows and widens ``m`` until they hold ``k`` distinct
    people; as every person outside the best ``m`` rows scores below all of them, the people found and
    their best-row scores are exactly the top k (for the exact index; faiss's 8-bit codes only choose the
    candidate rows, whose scores are then computed exactly, so a person is missed only when quantization
    error outweighs the gap to the ``m``-th row).
    """

    def __init__(self, dim: int, kind: str = "exact"):
        if kind not in INDEXES:
            raise ConfigError(f"unknown gallery index {kind!r}; choose one of: {', '.join(INDEXES)}")
        self.dim = dim
        self.kind = kind
        self.vectors = np.zeros((0, dim), np.float32)
        self.owners = np.zeros(0, np.int64)
        self._faiss = None
        if kind == "faiss":
            _import_faiss()

    def __len__(self) -> int:
        return len(self.owners)

    def build(self, vectors: np.ndarray, owners: np.ndarray) -> "SearchIndex":
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        self.owners = np.asarray(owners, dtype=np.int64)
        self._faiss = None
        if self.kind == "faiss" and len(self.owners):
            self._faiss = self._build_faiss(self.vectors)
        return self

    def add(self, vectors: np.ndarray, owners: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if (
            self.kind == "faiss"
            and self._faiss is not None
            and not (len(self) < COMPRESSED_MIN <= len(self) + len(vectors))
        ):
            self._faiss.add(vectors)
            self.vectors = np.concatenate([self.vectors, vectors])
            self.owners = np.concatenate([self.owners, np.asarray(owners, np.int64)])
            return
        self.build(np.concatenate([self.vectors, vectors]), np.concatenate([self.owners, np.asarray(owners, np.int64)]))

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float, int]]:
        """``[(owner, score, row), ...]`` for the top ``k`` owners, best first."""
        n = len(self.owners)
        if n == 0 or k < 1:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        sims = None if self._faiss is not None else (self.vectors @ q[0])
        m = min(n, max(4 * k, 16))
        while True:
            rows, scores = self._top_rows(q, sims, m)
            best: dict[int, tuple[float, int]] = {}
            for row, score in zip(rows, scores):
                owner = int(self.owners[row])
                if owner not in best or score > best[owner][0]:
                    best[owner] = (float(score), int(row))
            if len(best) >= k or m >= n:
                break
            m = min(n, m * 4)
        ranked = sorted(best.items(), key=lambda item: -item[1][0])[:k]
        return [(owner, score, row) for owner, (score, row) in ranked]

    def _top_rows(self, q: np.ndarray, sims: np.ndarray | None, m: int) -> tuple[np.ndarray, np.ndarray]:
        if sims is not None:
            rows = np.argpartition(sims, len(sims) - m)[len(sims) - m :] if m < len(sims) else np.arange(len(sims))
            return rows, sims[rows]
        _, rows = self._faiss.search(q, m)
        rows = rows[0][rows[0] >= 0]
        return rows, self.vectors[rows] @ q[0]

    def _build_faiss(self, vectors: np.ndarray):
        faiss = _import_faiss()
        n = len(vectors)
        if n < COMPRESSED_MIN:
            index = faiss.IndexFlatIP(self.dim)
        else:
            index = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
            # Training only sets each dimension's range: unit embeddings lie within [-1, 1], so a sample does.
            rng = np.random.default_rng(0)
            index.train(vectors[rng.choice(n, min(n, 100_000), replace=False)])
        index.add(vectors)
        return index


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "the faiss gallery index needs faiss-cpu: pip install 'aird[faiss]' (or use index='exact')"
        ) from None
    return faiss


# ---------------------------------------------------------------------------- the store


def _now() -> float:
    return time.time()


class GalleryStore:
    """The SQLite file alone (no model): people, embeddings, fingerprint, generation counter."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def connect(self, create: bool = False) -> sqlite3.Connection:
        """The open connection; ``create`` makes the file (and its folder) when missing."""
        with self._lock:
            if self._conn is not None:
                return self._conn
            if self.path.is_dir():
                raise GalleryError(
                    f"{self.path}: is a folder, not a gallery file; name a file such as {self.path / 'gallery.db'}"
                )
            if not self.path.exists():
                if not create:
                    raise GalleryError(
                        f"{self.path}: no such gallery; enrol someone first to create it "
                        f"(aird enrol --gallery {self.path} NAME IMAGE...), or check the path"
                    )
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT), never implicit.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            try:
                self._setup(conn)
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise GalleryError(
                    f"{self.path}: not an aird gallery or damaged ({exc}); restore it from an export, or use another path"
                ) from None
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        # Two processes opening a new file at once: switching it to WAL can fail at once with "database is
        # locked" (SQLite does not wait on the busy timeout there), so that step is retried until the timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")  # a returned enrolment is on disk, power loss included
                conn.execute("PRAGMA foreign_keys=ON")
                self._init_schema(conn)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                time.sleep(0.05)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "schema_version" not in tables:
            raise GalleryError(f"{self.path}: an SQLite file, but not an aird gallery (no schema_version table)")
        if not tables:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                    conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                    conn.executemany(
                        "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                        [("generation", "0"), ("created", str(_now()))],
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("SELECT version FROM schema_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path}: gallery schema version {version} is newer than this aird's ({SCHEMA_VERSION}); upgrade aird"
            )
        if version == SCHEMA_VERSION:
            return
        with self.write(conn):
            version = conn.execute("SELECT version FROM schema_version").fetchone()[0]
            while version < SCHEMA_VERSION:
                if version not in MIGRATIONS:
                    raise GalleryError(f"{self.path}: no migration from gallery schema version {version}")
                MIGRATIONS[version](conn)
                version += 1
                conn.execute("UPDATE schema_version SET version = ?", (version,))

    class _Write:
        def __init__(self, conn: sqlite3.Connection, path: Path):
            self.conn = conn
            self.path = path

        def __enter__(self) -> sqlite3.Connection:
            try:
                self.conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock between writers
            except sqlite3.OperationalError as exc:
                raise GalleryError(
                    f"{self.path}: cannot write the gallery ({exc}; another process held it for {BUSY_TIMEOUT_S:.0f} s, "
                    "or the file is read-only); nothing was changed"
                ) from None
            return self.conn

        def __exit__(self, kind, exc, tb) -> None:
            if kind is None:
                try:
                    self.conn.execute("COMMIT")
                    return
                except sqlite3.Error as err:
                    exc = err
            self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise GalleryError(f"{self.path}: the gallery write failed ({exc}); nothing was changed") from None

    def write(self, conn: sqlite3.Connection) -> "GalleryStore._Write":
        """One write transaction, holding SQLite's write lock from its start (other writers wait)."""
        return GalleryStore._Write(conn, self.path)

    # -------------------------------------------------------------- reads

    def meta(self) -> dict[str, str]:
        conn = self.connect()
        with self._lock:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())

    def generation(self) -> int:
        conn = self.connect()
        with self._lock:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def people(self) -> list[Person]:
        conn = self.connect()
        with self._lock:
            rows = conn.execute(
                "SELECT p.name, e.route, COUNT(e.id), MIN(e.enrolled), MAX(e.enrolled) FROM people p "
                "JOIN embeddings e ON e.person = p.id GROUP BY p.id, e.route ORDER BY p.name"
            ).fetchall()
        people: dict[str, Person] = {}
        for name, route, count, first, last in rows:
            p = people.setdefault(name, Person(name, 0, {}, first, last))
            p.embeddings += count
            p.routes[route] = count
            p.first_enrolled, p.last_enrolled = min(p.first_enrolled, first), max(p.last_enrolled, last)
        return list(people.values())

    def entries(self) -> tuple[int, list[str], np.ndarray, np.ndarray, list[str], list[str], np.ndarray, np.ndarray]:
        """(generation, names, owner per entry, vectors, routes, sources, face_px, enrolled), one read transaction."""
        conn = self.connect()
        with self._lock:
            conn.execute("BEGIN")
            try:
                gen = int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
                names = [r[0] for r in conn.execute("SELECT name FROM people ORDER BY id")]
                ids = [r[0] for r in conn.execute("SELECT id FROM people ORDER BY id")]
                rows = conn.execute(
                    "SELECT person, vector, route, source, face_px, enrolled FROM embeddings ORDER BY person, id"
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        pos = {pid: i for i, pid in enumerate(ids)}
        dim = int(self.meta().get("dim", "0") or 0)
        owners = np.array([pos[r[0]] for r in rows], np.int64)
        vectors = (
            np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)
            if rows
            else np.zeros((0, dim), np.float32)
        )
        face_px = np.array([-1 if r[4] is None else r[4] for r in rows], np.int64)
        enrolled = np.array([r[5] for r in rows], np.float64)
        return gen, names, owners, vectors.copy(), [r[2] for r in rows], [r[3] for r in rows], face_px, enrolled

    # -------------------------------------------------------------- writes

    def add(
        self,
        name: str,
        vectors: np.ndarray,
        routes: Sequence[str],
        sources: Sequence[str],
        face_px: Sequence[int | None],
        fingerprint: str,
        model: str,
        enrolled: Sequence[float] | None = None,
        skip_duplicates: bool = False,
    ) -> tuple[int, int]:
        """Store embeddings of ``name`` (created if new); committed to disk when this returns.

        Returns (generation before the write, rows added). The first write fixes the gallery's fingerprint;
        a later one from another model is refused, naming both.
        """
        entry = Entries(name, vectors, list(routes), list(sources), list(face_px), enrolled)
        return self.add_many([entry], fingerprint, model, skip_duplicates)

    def add_many(
        self, groups: Sequence["Entries"], fingerprint: str, model: str, skip_duplicates: bool = False
    ) -> tuple[int, int]:
        """``add`` for several people in one transaction (all or nothing); ``skip_duplicates`` leaves out an
        entry whose person already has the very same vector (so an import can be repeated)."""
        for g in groups:
            g.check()
        if not groups:
            return self.generation(), 0
        dims = {g.vectors.shape[1] for g in groups}
        if len(dims) > 1:
            raise ValueError(f"embeddings of different sizes in one write: {sorted(dims)}")
        conn = self.connect(create=True)
        now = _now()
        added = 0
        with self._lock, self.write(conn):
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            self._check_model(meta, fingerprint, model, dims.pop())
            if "fingerprint" not in meta:
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("fingerprint", fingerprint), ("model", model), ("dim", str(groups[0].vectors.shape[1]))],
                )
            gen = int(meta["generation"])
            for g in groups:
                conn.execute("INSERT OR IGNORE INTO people (name, created) VALUES (?, ?)", (g.name, now))
                pid = conn.execute("SELECT id FROM people WHERE name = ?", (g.name,)).fetchone()[0]
                existing = set()
                if skip_duplicates:
                    existing = {
                        bytes(r[0]) for r in conn.execute("SELECT vector FROM embeddings WHERE person = ?", (pid,))
                    }
                rows = []
                for i, v in enumerate(g.vectors):
                    blob = v.tobytes()
                    if skip_duplicates:
                        if blob in existing:
                            continue
                        existing.add(blob)
                    when = float(g.enrolled[i]) if g.enrolled is not None else now
                    px = None if g.face_px[i] is None else int(g.face_px[i])
                    rows.append((pid, blob, g.routes[i], str(g.sources[i]), px, when))
                conn.executemany(
                    "INSERT INTO embeddings (person, vector, route, source, face_px, enrolled) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                if (
                    not rows
                    and conn.execute("SELECT COUNT(*) FROM embeddings WHERE person = ?", (pid,)).fetchone()[0] == 0
                ):
                    conn.execute("DELETE FROM people WHERE id = ?", (pid,))
                added += len(rows)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen + 1),))
        return gen, added

    def remove(self, name: str) -> tuple[int, int]:
        """Delete ``name`` and all their embeddings; returns (generation before, embeddings removed)."""
        conn = self.connect()
        with self._lock, self.write(conn):
            row = conn.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is None:
                known = [r[0] for r in conn.execute("SELECT name FROM people ORDER BY name LIMIT 6")]
                raise GalleryError(
                    f"{self.path}: no person {name!r} in the gallery"
                    + (f" (people include: {', '.join(known)})" if known else " (it is empty)")
                )
            gen = int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            n = conn.execute("DELETE FROM embeddings WHERE person = ?", (row[0],)).rowcount
            conn.execute("DELETE FROM people WHERE id = ?", (row[0],))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen + 1),))
        return gen, n

    def _check_model(self, meta: dict[str, str], fingerprint: str, model: str, dim: int | None = None) -> None:
        if "fingerprint" in meta and meta["fingerprint"] != fingerprint:
            raise GalleryError(
                f"{self.path}: this gallery was made by model {meta.get('model')!r} (fingerprint {meta['fingerprint']}), "
                f"not by {model!r} (fingerprint {fingerprint}); embeddings of different models cannot be compared: "
                f"use --model with that model, or enrol the people again into a new gallery"
            )
        if dim is not None and "dim" in meta and int(meta["dim"]) != dim:
            raise GalleryError(f"{self.path}: gallery embeddings have {meta['dim']} dimensions, these {dim}")

    def check_model(self, fingerprint: str, model: str) -> None:
        self._check_model(self.meta(), fingerprint, model)

    # -------------------------------------------------------------- export / import

    def export(self, path: str | Path) -> Path:
        """Everything in the gallery as one portable ``.npz`` (with the model's fingerprint); atomic."""
        from aird.io import atomic_path

        gen, names, owners, vectors, routes, sources, face_px, enrolled = self.entries()
        meta = self.meta()
        info = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "fingerprint": meta.get("fingerprint"),
            "model": meta.get("model"),
            "dim": int(meta.get("dim", vectors.shape[1] or 0) or 0),
            "people": len(names),
            "entries": len(owners),
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": str(self.path),
        }
        path = Path(path)
        if path.suffix != ".npz":
            raise ConfigError(f"{path}: gallery exports are .npz files; name it e.g. {path.with_suffix('.npz')}")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    info=np.array(json.dumps(info)),
                    names=np.array(names, dtype=str),
                    owners=owners,
                    vectors=vectors.astype(np.float32),
                    routes=np.array(routes, dtype=str),
                    sources=np.array(sources, dtype=str),
                    face_px=face_px,
                    enrolled=enrolled,
                )
        return path

    def import_(self, path: str | Path) -> tuple[int, int]:
        """Add every entry of an export (``.npz``) to this gallery (created if missing); entries already
        present (same person, same vector) are skipped, so importing twice adds nothing. Returns
        (people touched, entries added)."""
        path = Path(path)
        if not path.is_file():
            raise DataError("gallery export not found", path, "pass a .npz written by 'aird gallery export'")
        try:
            with np.load(path, allow_pickle=False) as z:
                info = json.loads(str(z["info"]))
                data = {k: z[k] for k in ("names", "owners", "vectors", "routes", "sources", "face_px", "enrolled")}
        except Exception as exc:  # zip, json, missing keys: a damaged or foreign file
            raise DataError(
                f"not a readable gallery export ({exc})", path, "export it again with 'aird gallery export'"
            ) from None
        if info.get("format") != EXPORT_FORMAT:
            raise DataError("not an aird gallery export", path)
        if info.get("version", 0) > EXPORT_VERSION:
            raise DataError(
                f"export format version {info['version']} is newer than this aird's ({EXPORT_VERSION})", path
            )
        if not info.get("fingerprint"):
            return 0, 0  # an export of an empty gallery
        names = [str(n) for n in data["names"]]
        order = np.argsort(data["owners"], kind="stable")
        owners = data["owners"][order]
        starts = np.searchsorted(owners, np.arange(len(names) + 1))
        groups = []
        for owner, name in enumerate(names):
            rows = order[starts[owner] : starts[owner + 1]]
            if len(rows):
                groups.append(
                    Entries(
                        name,
                        data["vectors"][rows],
                        [str(r) for r in data["routes"][rows]],
                        [str(s) for s in data["sources"][rows]],
                        [None if p < 0 else int(p) for p in data["face_px"][rows]],
                        data["enrolled"][rows],
                    )
                )
        try:
            _, added = self.add_many(groups, info["fingerprint"], info.get("model") or "?", skip_duplicates=True)
        except (ValueError, ConfigError) as exc:
            if isinstance(exc, GalleryError):
                raise
            raise DataError(f"damaged gallery export ({exc})", path) from None
        return len(groups), added


def check_person_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise ConfigError(f"a person's name is a non-empty printable string of at most 200 characters, got {name!r}")
    return name


# ---------------------------------------------------------------------------- the gallery


class Gallery:
    """Enrol people, remove them, list them, and identify probes against them (open set).

    ``Gallery(path, recognizer)``; ``recognizer`` may be None for what needs no model (``list``,
    ``remove``, ``export``, ``import_``). The file is created by the first enrolment or import; every
    other verb on a missing file is an error, never a silently created empty gallery.
    """

    def __init__(self, path: str | Path, recognizer: "Recognizer | None" = None, index: str = "exact"):
        if index not in INDEXES:
            raise ConfigError(f"unknown gallery index {index!r}; choose one of: {', '.join(INDEXES)}")
        if index == "faiss":
            _import_faiss()
        self.store = GalleryStore(path)
        self.recognizer = recognizer
        self.index_kind = index
        self._index: SearchIndex | None = None
        self._names: list[str] = []
        self._owner_of: dict[str, int] = {}
        self._routes = np.zeros(0, np.int8)
        self._generation: int | None = None
        self._lock = threading.RLock()

    @property
    def path(self) -> Path:
        return self.store.path

    def __repr__(self) -> str:
        return f"Gallery({str(self.path)!r}, index={self.index_kind!r})"

    def __len__(self) -> int:
        return len(self.list())

    # -------------------------------------------------------------- verbs

    def enrol(
        self, name: str, images: ImageInput | Sequence[ImageInput], cropped: bool = False, upsample: int = 1
    ) -> EnrolResult:
        """Add ``name`` from one or more images (largest face of each photo); stored when this returns.

        An unreadable image raises ``DataError`` before anything is stored. Images without a face are
        skipped and listed in the result; if none of them has a face, ``NoFaceError`` is raised.
        """
        recognizer = self._need_recognizer("enrol")
        check_person_name(name)
        faces = recognizer.represent(images, cropped=cropped, upsample=upsample)
        return self.add_faces(name, faces)

    def add_faces(self, name: str, faces: Iterable[FaceResult]) -> EnrolResult:
        """Enrol already represented faces (from ``Recognizer.represent``): the largest found face of each
        image; images without one are listed in ``skipped``."""

        recognizer = self._need_recognizer("enrol")
        check_person_name(name)
        by_image: dict[tuple[str, int], list[FaceResult]] = {}
        for f in faces:
            by_image.setdefault((f.source, f.image), []).append(f)
        used, skipped, notes = [], [], []
        for (source, _), group in by_image.items():
            found = [f for f in group if f.found]
            if not found:
                skipped.append(Skipped(source, group[0].message or "no face found"))
                continue
            best = max(found, key=lambda f: f.face_px or 0)
            if len(found) > 1:
                notes.append(f"{source}: {len(found)} faces found; the largest ({best.face_px} px) was enrolled")
            used.append(best)
        if not used:
            reasons = "; ".join(f"{s.source}: {s.reason}" for s in skipped[:3])
            raise NoFaceError(f"no face to enrol for {name!r} ({reasons})", self.path)
        with self._lock:
            gen, added = self.store.add(
                name,
                np.stack([f.embedding for f in used]),
                [f.route for f in used],
                [f.source for f in used],
                [f.face_px for f in used],
                recognizer.fingerprint,
                recognizer.name,
            )
            self._after_add(gen, name, np.stack([f.embedding for f in used]), [f.route for f in used])
        return EnrolResult(name, added, used, skipped, notes)

    def enrol_files(
        self, name: str, paths: Sequence[str | Path], cropped: bool = False, upsample: int = 1, progress: bool = False
    ) -> EnrolResult:
        """``enrol`` from image files (folders are expanded), skipping each unreadable file with its reason
        (listed in the result) instead of failing; raises ``NoFaceError`` when no file gave a face."""

        recognizer = self._need_recognizer("enrol")
        check_person_name(name)
        faces, bad = recognizer.represent_files(
            expand_paths(list(paths)), cropped, upsample, progress=progress, desc=name
        )
        if not faces:
            reasons = "; ".join(f"{s.source}: {s.reason}" for s in bad[:3])
            raise NoFaceError(f"no readable image to enrol for {name!r} ({reasons})", self.path)
        result = self.add_faces(name, faces)
        result.skipped = bad + result.skipped
        return result

    def enrol_folder(
        self, folder: str | Path, cropped: bool = False, upsample: int = 1, progress: bool = False
    ) -> tuple[list[EnrolResult], list[Skipped]]:
        """Enrol every person of a folder with one sub-folder per person (named after them), like
        face_recognition's known/ folder. Returns one result per person and the files skipped (unreadable,
        no face, or loose in the top folder) with their reasons; a person with no usable image adds nothing."""

        recognizer = self._need_recognizer("enrol")
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError("folder not found", folder, "pass a folder with one sub-folder of images per person")
        people = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
        skipped = [
            Skipped(str(f), "not inside a person's sub-folder (the sub-folder's name is the person's name)")
            for f in sorted(folder.iterdir(), key=natural_key)
            if f.is_file() and not f.name.startswith(".")
        ]
        if not people:
            raise DataError("no person sub-folders", folder, "put each person's images in <folder>/<name>/")
        work = [(p.name, f) for p in people for f in expand_paths([p])]
        faces: dict[str, list[FaceResult]] = {p.name: [] for p in people}
        for name, path in tqdm(work, desc="enrolling", unit="img", disable=not progress):
            got, bad = recognizer.represent_files([path], cropped, upsample)
            faces[name].extend(got)
            skipped.extend(bad)
        results = []
        for p in people:
            if not faces[p.name]:
                skipped.append(Skipped(str(p), "no readable image in this person's folder"))
                results.append(EnrolResult(p.name, 0))
                continue
            try:
                result = self.add_faces(p.name, faces[p.name])
            except NoFaceError:
                result = EnrolResult(p.name, 0)
                skipped.extend(Skipped(f.source, f.message) for f in faces[p.name] if not f.found)
            else:
                skipped.extend(result.skipped)
            results.append(result)
        return results, skipped

    def remove(self, name: str) -> int:
        """Delete a person and all their embeddings; returns how many embeddings went."""
        with self._lock:
            _, n = self.store.remove(name)
            self._generation = None  # rebuilt at the next search
        return n

    def list(self) -> list[Person]:
        return self.store.people()

    def identify(
        self,
        probes: ImageInput | Sequence[ImageInput],
        top_k: int = 5,
        far: float = 1e-3,
        cropped: bool = False,
        stream: str | None = None,
        threshold: float | None = None,
        upsample: int = 1,
    ) -> list[IdentifyResult]:
        """Who each probe face is: one result per face found (and one per image with none), with the
        top-k people and the open-set decision ("unknown" when no one reaches the calibrated threshold)."""
        recognizer = self._need_recognizer("identify")
        self._check_top_k(top_k)
        self.store.connect()  # a missing gallery is an error before any work
        faces = recognizer.represent(probes, cropped=cropped, upsample=upsample, stream=stream)
        return self.search(faces, top_k=top_k, far=far, threshold=threshold)

    def search(
        self, faces: Sequence[FaceResult], top_k: int = 5, far: float = 1e-3, threshold: float | None = None
    ) -> list[IdentifyResult]:
        """``identify`` for faces already represented by this gallery's recognizer."""

        recognizer = self._need_recognizer("identify")
        self._check_top_k(top_k)
        if threshold is not None:
            threshold = check_threshold(threshold)
        with self._lock:  # the search copy changes with enrolments: one search or update at a time
            self._refresh()
            if "fingerprint" in self.store.meta():
                self.store.check_model(recognizer.fingerprint, recognizer.name)
            return self._search(faces, top_k, far, threshold)

    def _search(
        self, faces: Sequence[FaceResult], top_k: int, far: float, threshold: float | None
    ) -> list[IdentifyResult]:

        recognizer = self._need_recognizer("identify")
        index, names, routes = self._index, self._names, self._routes
        out = []
        thresholds: dict[str, float] = {}

        def thr(mode: str) -> float:
            if threshold is not None:
                return float(threshold)
            if mode not in thresholds:
                thresholds[mode] = recognizer.threshold(mode, far)
            return thresholds[mode]

        far_used = None if threshold is not None else float(far)
        for face in faces:
            if not face.found:
                out.append(IdentifyResult(face, "no_face", None, None, None, far_used, []))
                continue
            candidates = []
            for owner, score, row in index.search(face.embedding, top_k) if index is not None else []:
                mode = pair_mode(face.route, ROUTES[routes[row]])
                t = thr(mode)
                candidates.append(Candidate(names[owner], score, t, mode, score >= t))
            if not candidates:
                # An empty gallery still checks the threshold can be found, so a bad far fails loudly.
                thr(pair_mode(face.route, "hr"))
                out.append(IdentifyResult(face, "unknown", None, None, None, far_used, []))
                continue
            best = candidates[0]
            status = "match" if best.accepted else "unknown"
            out.append(
                IdentifyResult(
                    face, status, best.name if best.accepted else None, best.score, best.threshold, far_used, candidates
                )
            )
        return out

    def export(self, path: str | Path) -> Path:
        self.store.connect()
        return self.store.export(path)

    def import_(self, path: str | Path) -> tuple[int, int]:
        """Add an export's entries (see ``GalleryStore.import_``); a recognizer, if given, must match it."""
        if self.recognizer is not None:
            try:
                with np.load(Path(path), allow_pickle=False) as z:
                    info = json.loads(str(z["info"]))
            except Exception:
                info = {}
            fp = info.get("fingerprint")
            if fp and fp != self.recognizer.fingerprint:
                raise GalleryError(
                    f"{path}: exported from model {info.get('model')!r} (fingerprint {fp}), not "
                    f"{self.recognizer.name!r} (fingerprint {self.recognizer.fingerprint}); import it with that model"
                )
        with self._lock:
            result = self.store.import_(path)
            self._generation = None  # rebuild the search copy at the next search
        return result

    def close(self) -> None:
        self.store.close()

    # -------------------------------------------------------------- internals

    def _need_recognizer(self, verb: str) -> "Recognizer":
        if self.recognizer is None:
            raise ConfigError(f"{verb} embeds faces: open the gallery with a recognizer (aird.load().gallery(path))")
        return self.recognizer

    @staticmethod
    def _check_top_k(top_k: int) -> None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")

    def _after_add(self, generation_before: int, name: str, vectors: np.ndarray, routes: list[str]) -> None:
        """Our own enrolment: append it to the search copy, unless someone else wrote since it was built
        (then the next search rebuilds it from the file)."""
        if self._index is None or self._generation != generation_before:
            self._generation = None
            return
        if name not in self._owner_of:
            self._owner_of[name] = len(self._names)
            self._names.append(name)
        self._index.add(vectors, np.full(len(vectors), self._owner_of[name]))
        self._routes = np.concatenate([self._routes, np.array([ROUTES.index(r) for r in routes], np.int8)])
        self._generation = generation_before + 1

    def _refresh(self) -> None:
        """Rebuild the in-memory copy when the file's generation moved (this or another process wrote)."""
        gen = self.store.generation()
        if self._index is not None and gen == self._generation:
            return
        gen, names, owners, vectors, routes, _, _, _ = self.store.entries()
        dim = vectors.shape[1] if vectors.size else 128
        self._index = SearchIndex(dim, self.index_kind).build(vectors, owners)
        self._names = names
        self._owner_of = {n: i for i, n in enumerate(names)}
        self._routes = np.array([ROUTES.index(r) for r in routes], np.int8)
        self._generation = gen
