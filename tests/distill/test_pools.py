"""Your own data in an experiment: pools checked when the YAML loads, then through the training set and leak filter."""

import hashlib
import io
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_recordio import write_pack  # noqa: E402
from tiny import tiny_settings  # noqa: E402

import aird.distill.data as distill_data  # noqa: E402
from aird.data.align import align_settings_for  # noqa: E402
from aird.data.chips import align_images  # noqa: E402
from aird.data.lfw import LFW  # noqa: E402
from aird.data.pools import PoolSpec  # noqa: E402
from aird.distill.config import load_experiment  # noqa: E402
from aird.distill.data import build_training_set  # noqa: E402
from aird.errors import ConfigError, DataError  # noqa: E402
from aird.models.embedder import embed_chips  # noqa: E402


def write_config(tmp_path: Path, pools: list, **data) -> Path:
    settings = tiny_settings(tmp_path / "run")
    settings["data"] = {"pools": pools, **data}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture
def own(tmp_path):
    (tmp_path / "casia" / "0000045").mkdir(parents=True)
    (tmp_path / "faces").mkdir()
    write_pack(tmp_path / "faces_emore", [(b"x", 0)])
    return tmp_path


def test_yaml_pools_load_absolute_named_and_round_trip(own):
    pools = [
        "lfw",
        {"kind": "identities", "path": "casia", "aligned": False},
        {"kind": "unlabelled", "path": str(own / "faces"), "aligned": True, "name": "web", "on_bad_image": "skip"},
        {"kind": "recordio", "path": str(own / "faces_emore"), "aligned": True, "max_images": 1000},
    ]
    cfg = load_experiment(write_config(own, pools, data_root=str(own)))
    lfw, casia, web, emore = cfg.data.pools
    assert lfw == "lfw"
    assert casia == PoolSpec("identities", str(own / "casia"), False, "casia")  # relative: under the data root
    assert (web.name, web.on_bad_image) == ("web", "skip")
    assert (emore.name, emore.max_images) == ("faces_emore", 1000)
    # config.json / experiment.yaml hold the checked pools, and load back to the same config
    again = own / "again.yaml"
    again.write_text(yaml.safe_dump(asdict(cfg)))
    assert load_experiment(again).data.pools == cfg.data.pools


@pytest.mark.parametrize(
    "pool, message",
    [
        ({"kind": "casia", "path": "casia", "aligned": False}, r"data.pools\[1\].kind must be one of identities"),
        ({"kind": "identities", "path": "casia"}, r"data.pools\[1\].aligned is required"),
        ({"kind": "identities", "path": "nope", "aligned": False}, r"data.pools\[1\].path: .*nope .*folder not found"),
        ({"kind": "recordio", "path": "faces", "aligned": True}, r"data.pools\[1\].path: .*train.rec not found"),
        (
            {"kind": "unlabelled", "path": "faces", "aligned": True, "labels": 1},
            r"data.pools\[1\]: unknown key 'labels'",
        ),
        ({"kind": "unlabelled", "path": "faces", "aligned": "yes"}, r"data.pools\[1\].aligned: expected bool"),
        ("imdb", r"data.pools\[1\] must be a built-in pool \['lfw', 'celeba', 'utkface'\] or a mapping"),
    ],
)
def test_bad_pool_fails_at_load_naming_the_file_and_key(own, pool, message):
    path = write_config(own, ["lfw", pool], data_root=str(own))
    with pytest.raises(ConfigError, match=message) as err:
        load_experiment(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_pool_listed_twice_is_refused(own):
    twice = [{"kind": "unlabelled", "path": "faces", "aligned": True}] * 2
    with pytest.raises(ConfigError, match=r"data.pools\[1\].path .*faces is also data.pools\[0\]'s"):
        load_experiment(write_config(own, twice, data_root=str(own)))
    named = [
        {"kind": "unlabelled", "path": "faces", "aligned": True, "name": "x"},
        {"kind": "identities", "path": "casia", "aligned": True, "name": "x"},
    ]
    with pytest.raises(ConfigError, match=r"data.pools\[0\] and data.pools\[1\] are both 'x'; set name:"):
        load_experiment(write_config(own, named, data_root=str(own)))


def test_pools_too_large_for_memory_are_refused_before_aligning(own, monkeypatch):
    monkeypatch.setattr(distill_data, "memory_bytes", lambda: 10**9)  # 1 GB: room for about 11,800 chips
    monkeypatch.setattr(distill_data, "align_images", lambda *a, **k: pytest.fail("aligned before the check"))
    big = PoolSpec("unlabelled", str(own / "faces"), True, "big")
    monkeypatch.setattr(
        distill_data, "pool_items", lambda spec: ([own / f"{i}.jpg" for i in range(20_000)], [None] * 20_000)
    )
    with pytest.raises(DataError, match=r"20,000 images, whose 150 px chips need 1 GB .* 'big'.* set max_images:"):
        build_training_set(own, "A", teacher=None, pools=[big])


@pytest.fixture(scope="module")
def teacher():
    from aird.models.teacher import DlibTeacher

    return DlibTeacher("torch")


@pytest.mark.data
@pytest.mark.slow
def test_own_pools_through_the_training_set(data_root, tmp_path, monkeypatch, teacher):
    """An identities folder, an unlabelled folder and an aligned pack, with the real teacher and leak filter."""
    monkeypatch.setenv("AIRD_CACHE", str(tmp_path / "cache"))
    lfw = LFW(data_root)
    people = [items for items in lfw.folder().by_identity().values() if len(items) >= 2][:6]
    for items in people[:2]:  # two people, two photos each
        for it in items[:2]:
            (tmp_path / "people" / it.identity).mkdir(parents=True, exist_ok=True)
            (tmp_path / "people" / it.identity / it.path.name).write_bytes(it.path.read_bytes())
    leaked, kept = people[2][0].path, people[3][0].path  # photos; the first stands for a test person's
    (tmp_path / "web" / "sub").mkdir(parents=True)
    (tmp_path / "web" / "sub" / "a.jpg").write_bytes(leaked.read_bytes())
    (tmp_path / "web" / "b.jpg").write_bytes(kept.read_bytes())
    crops = []  # aligned chips: LFW deep-funneled's centre, where the face is
    for i, items in enumerate(people[4:6]):
        for it in items[:2]:
            crop = Image.open(it.path).crop((70, 75, 180, 185))
            path = tmp_path / f"crop{len(crops)}.jpg"
            crop.save(path, quality=95)
            crops.append((path.read_bytes(), 7 + i))
    write_pack(tmp_path / "pack", crops)

    def test_people(root, split, teacher_, chip_size, progress):
        chips = align_images([leaked], align_settings_for("lfw", chip_size), progress=False)
        return embed_chips(teacher_, chips, progress=False)

    monkeypatch.setattr(distill_data, "embeddings_of_test_people", test_people)
    pools = [
        PoolSpec("identities", "people", False),
        PoolSpec("unlabelled", "web", False),
        PoolSpec("recordio", "pack", True, name="emore"),
    ]
    data = build_training_set(tmp_path, "A", teacher, pools, progress=False)

    report = data.report["pools"]
    assert report["people"] == {
        "kind": "identities",
        "path": str(tmp_path / "people"),
        "aligned": False,
        "images": 4,
        "kept": 4,
        "dropped_by_leak_filter": 0,
        "no_face_detected": 0,
        "skipped": 0,
    }
    assert {k: report["web"][k] for k in ("images", "kept", "dropped_by_leak_filter")} == {
        "images": 2,
        "kept": 1,
        "dropped_by_leak_filter": 1,
    }
    assert report["emore"]["images"] == report["emore"]["kept"] == 4 and report["emore"]["aligned"] is True
    assert len(data) == 4 + 1 + 4 and data.chips.shape == (9, 150, 150, 3)
    names = [data.identities[i] if i >= 0 else None for i in data.labels]
    assert (
        names
        == [f"people:{p[0].identity}" for p in people[:2] for _ in range(2)]
        + [None]
        + ["emore:7"] * 2
        + ["emore:8"] * 2
    )
    assert data.report["unlabelled"] == 1 and data.report["identities"] == 4
    # the pack's images are keyed by their bytes, as the same image's file would be
    assert data.digests[5:] == [hashlib.sha1(b).hexdigest() for b, _ in crops]
    assert np.isfinite(data.teacher).all() and data.teacher.shape == data.teacher_flip.shape == (9, 128)


class PixelTeacher:
    """A stand-in teacher for mechanics: the first 128 pixel values of each chip (not cached)."""

    name = "pixels"

    def fingerprint(self) -> None:
        return None

    def embed(self, faces: np.ndarray) -> np.ndarray:
        return faces.reshape(len(faces), -1)[:, :128].astype(np.float32) + 1


def test_skipped_images_keep_the_others_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(distill_data, "embeddings_of_test_people", lambda *a: -np.ones((2, 128), np.float32))
    rng = np.random.default_rng(0)
    images = []
    for _ in range(3):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)).save(buf, format="PNG")
        images.append(buf.getvalue())
    write_pack(tmp_path / "pack", [(images[0], 3), (b"not an image", 4), (images[2], 5)])
    pools = [PoolSpec("recordio", "pack", True, on_bad_image="skip")]
    data = build_training_set(tmp_path, "A", PixelTeacher(), pools, chip_size=64, progress=False)
    assert data.identities == ["pack:3", "pack:5"] and data.labels.tolist() == [0, 1]
    entry = data.report["pools"]["pack"]
    assert (entry["images"], entry["kept"], entry["skipped"]) == (3, 2, 1)
    assert "record 2" in entry["skipped_images"][0]["reason"]
    with pytest.raises(DataError, match="record 2: not a readable image"):
        build_training_set(tmp_path, "A", PixelTeacher(), [PoolSpec("recordio", "pack", True)], 0.95, 64, False)
