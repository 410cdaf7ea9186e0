"""An acknowledged enrolment survives kill -9; two processes enrolling into one gallery both land."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from students import StubRecognizer

from aird.gallery import Gallery

ROOT = Path(__file__).resolve().parents[2]

# Enrols people one at a time through Gallery.add_faces (the end of every enrolment) and says so after
# each call returned.
ENROLLER = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[4])
    from students import StubRecognizer, face
    from aird.gallery import Gallery

    gallery = Gallery(sys.argv[1], StubRecognizer())
    prefix, count = sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(abs(hash(prefix)) % 1000)
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for i in range(count):
        gallery.add_faces(f"{prefix}{i}", [face(rng.standard_normal(128), f"{prefix}{i}.jpg")])
        print(f"enrolled {prefix}{i}", flush=True)
    """
)


def start(path: Path, prefix: str, count: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", ENROLLER, str(path), prefix, str(count), str(ROOT / "tests" / "recognizer")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def test_an_acknowledged_enrolment_survives_kill_9(tmp_path):
    path = tmp_path / "g.db"
    proc = start(path, "p", 10_000)
    proc.stdin.write("\n")
    proc.stdin.flush()
    acknowledged = []
    for line in proc.stdout:
        acknowledged.append(line.split()[1])
        if len(acknowledged) == 25:
            proc.send_signal(signal.SIGKILL)  # right after enrol returned, mid-way through the next one
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    names = {p.name for p in Gallery(path).list()}
    assert set(acknowledged) <= names, sorted(set(acknowledged) - names)
    assert len(names) <= len(acknowledged) + 1  # at most the one in flight, and only whole
    conn = Gallery(path).store.connect()
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == len(names)


def test_two_processes_enrolling_at_once_both_land(tmp_path):
    path = tmp_path / "g.db"
    procs = [start(path, prefix, 30) for prefix in ("a", "b")]
    for proc in procs:
        proc.stdin.write("\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.count("enrolled") == 30
    gallery = Gallery(path, StubRecognizer())
    names = {p.name for p in gallery.list()}
    assert names == {f"{prefix}{i}" for prefix in "ab" for i in range(30)}
    assert gallery.store.generation() == 60
    # And each one is found again by its own embedding.
    gen, people, owners, vectors, *_ = gallery.store.entries()
    for row in (0, 31, 59):
        from students import face

        [result] = gallery.search([face(vectors[row])], top_k=1)
        assert result.name == people[owners[row]]
    assert np.isfinite(vectors).all()
