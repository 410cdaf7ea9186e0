"""The gallery file and its search, on synthetic embeddings (no model): exact top-k, faiss, schema and
migrations, fingerprints, missing or foreign files, export/import, reload when another writer changed it."""

import sqlite3

import numpy as np
import pytest
from students import StubRecognizer, face, unit

import aird.gallery as gallery_module
from aird.errors import ConfigError, DataError
from aird.gallery import Gallery, GalleryError, GalleryStore, SearchIndex
from aird.results import FaceResult, NoFaceError


def brute_force(vectors, owners, q, k):
    sims = vectors @ q
    best = {}
    for o, s in zip(owners, sims):
        best[o] = max(best.get(o, -9), s)
    return sorted(best.items(), key=lambda t: -t[1])[:k]


@pytest.fixture
def entries():
    rng = np.random.default_rng(0)
    owners = rng.integers(0, 50, 400)
    return unit(rng.standard_normal((400, 32))), owners, unit(rng.standard_normal((20, 32)))


def test_exact_search_is_the_per_person_best_entry(entries):
    vectors, owners, probes = entries
    index = SearchIndex(32).build(vectors, owners)
    for q in probes:
        for k in (1, 5, 49, 50, 80):
            got = index.search(q, k)
            want = brute_force(vectors, owners, q, k)
            assert [o for o, _, _ in got] == [o for o, _ in want]
            assert np.allclose([s for _, s, _ in got], [s for _, s in want], atol=1e-6)
            assert all(owners[row] == o and abs(vectors[row] @ q - s) < 1e-6 for o, s, row in got)
    assert SearchIndex(32).search(probes[0], 5) == []


def test_faiss_flat_equals_exact_and_compressed_index_finds_the_exact_top5(entries, monkeypatch):
    pytest.importorskip("faiss")
    vectors, owners, probes = entries
    exact = SearchIndex(32).build(vectors, owners)
    flat = SearchIndex(32, "faiss").build(vectors, owners)
    for q in probes:
        a, b = exact.search(q, 5), flat.search(q, 5)
        assert [o for o, _, _ in a] == [o for o, _, _ in b]
        assert np.allclose([s for _, s, _ in a], [s for _, s, _ in b], atol=1e-5)
    monkeypatch.setattr(gallery_module, "COMPRESSED_MIN", 100)
    rng = np.random.default_rng(1)
    big = unit(rng.standard_normal((3000, 32)))
    exact = SearchIndex(32).build(big, np.arange(3000))
    compressed = SearchIndex(32, "faiss").build(big, np.arange(3000))
    assert type(compressed._faiss).__name__ == "IndexScalarQuantizer"
    same = 0
    for i in range(0, 3000, 100):
        q = unit(big[i] + 0.05 * rng.standard_normal(32))
        got, want = compressed.search(q, 5), exact.search(q, 5)
        assert got[0][0] == i and abs(got[0][1] - float(big[i] @ q)) < 1e-5  # re-scored exactly
        same += [o for o, _, _ in got] == [o for o, _, _ in want]
    assert same >= 27  # of 30: 8-bit codes choose the candidates, nearly always the true top 5


def test_schema_wal_and_generation(tmp_path):
    store = GalleryStore(tmp_path / "g.db")
    gen0, added = store.add("ann", unit(np.ones((2, 8))), ["hr", "lr"], ["a.jpg", "b.png"], [120, 14], "fp", "m")
    assert (gen0, added) == (0, 2) and store.generation() == 1
    conn = sqlite3.connect(tmp_path / "g.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(gallery_module.SCHEMA_VERSION,)]
    [person] = store.people()
    assert person.name == "ann" and person.embeddings == 2 and person.routes == {"hr": 1, "lr": 1}
    assert store.meta()["fingerprint"] == "fp" and store.meta()["dim"] == "8"
    store.remove("ann")
    assert store.people() == [] and store.generation() == 2


def test_migration_hook_upgrades_older_files_and_newer_files_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "g.db"
    GalleryStore(path).add("ann", unit(np.ones((1, 8))), ["hr"], ["a.jpg"], [100], "fp", "m")
    ran = []

    def add_note(conn):
        ran.append(True)
        conn.execute("ALTER TABLE people ADD COLUMN note TEXT")

    monkeypatch.setattr(gallery_module, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(gallery_module, "MIGRATIONS", {1: add_note})
    store = GalleryStore(path)
    assert [p.name for p in store.people()] == ["ann"] and ran == [True]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 2
    assert "note" in [r[1] for r in conn.execute("PRAGMA table_info(people)")]
    store.close()
    monkeypatch.setattr(gallery_module, "SCHEMA_VERSION", 1)
    with pytest.raises(GalleryError, match="newer than this aird"):
        GalleryStore(path).people()


def test_another_models_embeddings_are_refused_naming_both(tmp_path):
    g = Gallery(tmp_path / "g.db", StubRecognizer("fp-a", "model-a"))
    g.add_faces("ann", [face(np.ones(8))])
    other = Gallery(tmp_path / "g.db", StubRecognizer("fp-b", "model-b"))
    for call in (lambda: other.add_faces("bob", [face(np.ones(8))]), lambda: other.search([face(np.ones(8))])):
        with pytest.raises(GalleryError, match="made by model 'model-a'") as err:
            call()
        assert "fp-a" in str(err.value) and "fp-b" in str(err.value) and "'model-b'" in str(err.value)
    assert [p.name for p in g.list()] == ["ann"]


def test_unknown_gallery_is_an_error_not_a_new_file(tmp_path):
    path = tmp_path / "sub" / "none.db"
    g = Gallery(path, StubRecognizer())
    for call in (
        g.list,
        lambda: g.search([face(np.ones(8))]),
        lambda: g.remove("ann"),
        lambda: g.export(tmp_path / "x.npz"),
    ):
        with pytest.raises(GalleryError, match="no such gallery"):
            call()
    assert not path.exists()
    g.add_faces("ann", [face(np.ones(8))])  # enrolling creates it
    assert path.is_file() and [p.name for p in g.list()] == ["ann"]


@pytest.mark.parametrize("kind", ["random-bytes", "other-sqlite", "folder"])
def test_a_file_that_is_not_a_gallery(tmp_path, kind):
    path = tmp_path / "g.db"
    if kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "other-sqlite":
        sqlite3.connect(path).execute("CREATE TABLE t (x)")
    else:
        path.mkdir()
    with pytest.raises(GalleryError, match="not an aird gallery|is a folder"):
        Gallery(path, StubRecognizer()).add_faces("ann", [face(np.ones(8))])


def test_export_import_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    g = Gallery(tmp_path / "a.db", StubRecognizer())
    for name in ("ann", "bob", "cy"):
        g.add_faces(name, [face(rng.standard_normal(8), f"{name}{i}.jpg", image=i) for i in range(2)])
    g.remove("bob")
    out = g.export(tmp_path / "a.npz")
    h = Gallery(tmp_path / "b.db", StubRecognizer())
    assert h.import_(out) == (2, 4)
    assert h.import_(out) == (2, 0)  # idempotent
    a, b = g.store.entries(), h.store.entries()
    assert a[1] == b[1] and np.array_equal(a[3], b[3]) and a[4] == b[4] and a[5] == b[5] and np.array_equal(a[7], b[7])
    probe = face(rng.standard_normal(8))
    assert [c.name for c in g.search([probe])[0].candidates] == [c.name for c in h.search([probe])[0].candidates]
    with pytest.raises(GalleryError, match="exported from model"):
        Gallery(tmp_path / "c.db", StubRecognizer("other-fp")).import_(out)
    foreign = Gallery(tmp_path / "d.db", None)
    foreign.store.add("zed", unit(np.ones((1, 8))), ["hr"], ["z.jpg"], [100], "other-fp", "other")
    with pytest.raises(GalleryError, match="made by model 'other'"):
        foreign.import_(out)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable gallery export"):
        h.import_(tmp_path / "junk.npz")
    with pytest.raises(ConfigError, match=".npz"):
        g.export(tmp_path / "a.json")


def test_another_writer_is_seen_by_the_next_search(tmp_path):
    a = Gallery(tmp_path / "g.db", StubRecognizer(threshold=0.9))
    b = Gallery(tmp_path / "g.db", StubRecognizer(threshold=0.9))
    x, y = np.eye(8)[0], np.eye(8)[1]
    a.add_faces("ann", [face(x)])
    assert a.search([face(y)])[0].status == "unknown"
    b.add_faces("bob", [face(y)])
    [result] = a.search([face(y)])
    assert result.status == "match" and result.name == "bob"
    a.add_faces("cy", [face(x + y)])  # our own write is appended to the search copy
    assert [c.name for c in a.search([face(x + y)], top_k=3)[0].candidates][0] == "cy"
    b.remove("bob")
    assert [c.name for c in a.search([face(y)], top_k=3)[0].candidates] == ["cy", "ann"]


def test_open_set_decisions_and_remove_errors(tmp_path):
    g = Gallery(tmp_path / "g.db", StubRecognizer(threshold=0.8))
    g.add_faces("ann", [face([1, 0, 0, 0])])
    g.add_faces("bob", [face([0, 1, 0, 0]), face([0.8, 0.6, 0, 0], image=1)])
    near_ann, between = g.search([face([1, 0.05, 0, 0]), face([0.6, 0.4, 0.69, 0])], top_k=5)
    assert near_ann.status == "match" and near_ann.name == "ann" and near_ann.score > 0.99
    assert [c.name for c in near_ann.candidates] == ["ann", "bob"] and near_ann.candidates[1].score < near_ann.score
    assert between.status == "unknown" and between.name is None and between.score < 0.8
    assert set(between.to_row()) == set(between.ROW_FIELDS)
    no_face = FaceResult("wall.jpg", 0, False, message="no face found")
    [r] = g.search([no_face])
    assert r.status == "no_face" and r.candidates == [] and r.probe.message == "no face found"
    with pytest.raises(GalleryError, match="no person 'cy'.*ann, bob"):
        g.remove("cy")
    with pytest.raises(ConfigError, match="top_k"):
        g.search([face([1, 0, 0, 0])], top_k=0)
    with pytest.raises(ConfigError, match="name"):
        g.add_faces("", [face([1, 0, 0, 0])])


def test_add_faces_takes_the_largest_face_of_each_image_and_lists_the_rest(tmp_path):
    g = Gallery(tmp_path / "g.db", StubRecognizer())
    faces = [
        face(np.ones(8), "group.jpg", face_px=60, index=0),
        face(-np.ones(8), "group.jpg", face_px=90, index=1),
        FaceResult("wall.jpg", 1, False, message="no face found in the photo"),
    ]
    result = g.add_faces("ann", faces)
    assert result.added == 1 and result.faces[0].face_px == 90
    assert [s.source for s in result.skipped] == ["wall.jpg"] and "2 faces found" in result.notes[0]
    with pytest.raises(NoFaceError, match="no face to enrol for 'bob'"):
        g.add_faces("bob", faces[2:])
    assert [p.name for p in g.list()] == ["ann"]
