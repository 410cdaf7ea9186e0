"""The CLI verbs: verify, enrol (names or a folder), identify (CSV / JSON), gallery list/remove/export/import;
user errors are one line and exit code 2."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from students import lr_crop

import aird.cli as cli
from aird.cli import main

pytestmark = pytest.mark.data


@pytest.fixture
def fast_model(monkeypatch, recognizer):
    """The session's recognizer instead of loading --model again for every command."""
    monkeypatch.setattr(cli, "_recognizer", lambda args: recognizer)
    return recognizer


@pytest.fixture
def known(data_root, tmp_path):
    """face_recognition's layout: known/<person>/<photo>, one HR photo each, plus a bad file."""
    folder = tmp_path / "known"
    for k in (1, 2, 3):
        (folder / f"s{k}").mkdir(parents=True)
        shutil.copy(data_root / "orl" / f"s{k}" / "1.pgm", folder / f"s{k}" / "1.pgm")
    (folder / "s3" / "truncated.jpg").write_bytes(b"\xff\xd8\xff")
    return folder


@pytest.fixture
def probes(orl_chips, tmp_path):
    """16 px crops of s1-s3 (images 2 and 3), as a detector writes them, plus a non-image."""
    folder = tmp_path / "probes"
    (folder / "cam").mkdir(parents=True)
    for name in ("s1", "s2", "s3"):
        for k in (1, 2):
            Image.fromarray(lr_crop(orl_chips[name][k], 16, f"{name}{k}")).save(folder / "cam" / f"{name}_{k}.png")
    (folder / "cam" / "readme.txt").write_text("not a face")
    return folder


def test_verify(student_file, data_root, orl_chips, tmp_path, capsys):
    crop = tmp_path / "crop.png"
    Image.fromarray(lr_crop(orl_chips["s1"][2], 16, "k")).save(crop)
    photo = data_root / "orl" / "s1" / "1.pgm"
    # The one test that loads --model itself.
    assert main(["verify", str(photo), str(data_root / "orl" / "s1" / "2.pgm"), "--model", str(student_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("same person: similarity") and "hr-hr at FAR 0.001" in out
    assert (
        main(["verify", str(photo), str(crop), "--cropped", "b", "--format", "json", "--model", str(student_file)]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "hr-lr" and result["b"]["route"] == "lr" and result["b"]["face_px"] == 16


def test_verify_errors_are_one_line(fast_model, data_root, tmp_path, orl_chips, capsys):
    crop = tmp_path / "crop.png"
    Image.fromarray(lr_crop(orl_chips["s1"][2], 16, "k")).save(crop)
    assert main(["verify", str(data_root / "orl" / "s1" / "1.pgm"), str(crop)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aird: error:") and "--cropped" in err and len(err.strip().splitlines()) == 1
    assert main(["verify", str(tmp_path / "nope.jpg"), str(crop)]) == 2
    assert "not found" in capsys.readouterr().err


def test_bad_model_file_is_exit_2(tmp_path, data_root, capsys):
    bad = tmp_path / "student.safetensors"
    bad.write_bytes(b"\x00" * 100)
    photo = str(data_root / "orl" / "s1" / "1.pgm")
    assert main(["verify", photo, photo, "--model", str(bad)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


def test_enrol_folder_identify_and_manage(fast_model, known, probes, tmp_path, capsys):
    gallery = tmp_path / "g.db"
    assert main(["identify", "--gallery", str(gallery), str(probes)]) == 2
    assert "no such gallery" in capsys.readouterr().err and not gallery.exists()

    assert main(["enrol", "--gallery", str(gallery), str(known), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "enrolled 3 face(s) of 3 person(s)" in captured.out
    assert "skipped 1 file(s)" in captured.err and "truncated.jpg" in captured.err

    out = tmp_path / "who.csv"
    assert (
        main(
            [
                "identify",
                "--gallery",
                str(gallery),
                str(probes),
                "--cropped",
                "--top-k",
                "2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "6 result(s) from 6 image(s)" in err and "readme.txt: not a readable image" in err
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 6 and all(r["route"] == "lr" and r["face_px"] == "16" for r in rows)
    assert all(r["candidates"].count(":") == 2 and r["status"] in ("match", "unknown") for r in rows)
    rank1 = np.mean([r["candidates"].split(":")[0] == r["source"].split("/")[-1].split("_")[0] for r in rows])
    assert rank1 >= 0.5  # of 3 people: chance is 1/3

    assert (
        main(
            [
                "identify",
                "--gallery",
                str(gallery),
                str(probes / "cam" / "s1_1.png"),
                "--cropped",
                "--format",
                "json",
                "--threshold",
                "-1",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["results"][0]["status"] == "match" and result["results"][0]["threshold"] == -1.0

    assert main(["gallery", "list", "--gallery", str(gallery)]) == 0
    listing = capsys.readouterr().out
    assert "3 people" in listing and "s2" in listing and fast_model.fingerprint in listing
    export = tmp_path / "g.npz"
    assert main(["gallery", "export", "--gallery", str(gallery), str(export)]) == 0
    assert main(["gallery", "remove", "--gallery", str(gallery), "s2"]) == 0
    assert "removed s2 (1 embedding(s))" in capsys.readouterr().out
    assert main(["gallery", "remove", "--gallery", str(gallery), "s2"]) == 2
    assert "no person 's2'" in capsys.readouterr().err
    assert main(["gallery", "import", "--gallery", str(gallery), str(export)]) == 0
    assert "imported 1 embedding(s)" in capsys.readouterr().out
    assert main(["gallery", "list", "--gallery", str(gallery), "--format", "json"]) == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)["people"]] == ["s1", "s2", "s3"]


def test_enrol_one_person_from_images(fast_model, data_root, tmp_path, capsys):
    gallery = tmp_path / "g.db"
    images = [str(data_root / "orl" / "s7" / f"{n}.pgm") for n in (1, 2)]
    assert main(["enrol", "--gallery", str(gallery), "Ann Smith", *images, str(tmp_path / "missing.jpg")]) == 0
    captured = capsys.readouterr()
    assert "enrolled 2 face(s) of 1 person(s)" in captured.out and "missing.jpg: image file not found" in captured.err
    assert main(["enrol", "--gallery", str(gallery), "not-a-folder"]) == 2
    assert "NAME IMAGE" in capsys.readouterr().err
    assert main(["gallery", "list", "--gallery", str(tmp_path / "other.db")]) == 2
    assert "no such gallery" in capsys.readouterr().err


def test_identify_keeps_a_cameras_stream_state_across_runs(fast_model, known, probes, tmp_path, capsys):
    gallery, state = tmp_path / "g.db", tmp_path / "cam-state"
    assert main(["enrol", "--gallery", str(gallery), str(known), "--quiet"]) == 0
    fast_model.streams.reset()
    run = ["identify", "--gallery", str(gallery), str(probes), "--cropped", "--stream", "cam-7", "--quiet"]
    assert main([*run, "--stream-state", str(state)]) == 0
    assert (state / "streams.pt").is_file()
    fast_model.streams.reset()  # a new process would start empty: the state comes back from the folder
    assert main([*run, "--stream-state", str(state)]) == 0
    assert fast_model.streams.show("cam-7").faces == 12  # 6 probes in each run
    capsys.readouterr()
    assert main(["identify", "--gallery", str(gallery), str(probes), "--adapt", "facebn-ema"]) == 2
    assert "--stream" in capsys.readouterr().err
