"""`aird adapt-check`: a camera's labelled crops played through a stream adapter and through the plain
model, paired over the probes, with a verdict; bad folders and an unadapted recognizer are clear errors."""

import json

import numpy as np
import pytest
from PIL import Image
from students import lr_crop

import aird
from aird.cli import main
from aird.errors import ConfigError, DataError
from aird.eval.camera import _labelled_probes, check_adaptation, verdict
from aird.eval.records import load_records

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def camera(orl_chips, tmp_path_factory):
    """A gallery of five ORL people (image 1, HR) and a camera folder of their 16 px crops (images 2-5),
    one HR crop among them, and a folder of someone the gallery does not hold."""
    root = tmp_path_factory.mktemp("camera")
    probes = root / "probes"
    for name, chips in orl_chips.items():
        (probes / name).mkdir(parents=True)
        for k in range(1, 5):
            Image.fromarray(lr_crop(chips[k], 16, f"{name}-{k}")).save(probes / name / f"{k:03d}-{name}.png")
    Image.fromarray(orl_chips["s1"][4]).save(probes / "s1" / "009-hr.png")  # 150 px: the HR route
    (probes / "stranger").mkdir()
    Image.fromarray(lr_crop(orl_chips["s2"][4], 16, "x")).save(probes / "stranger" / "001.png")
    return root, probes


@pytest.fixture(scope="module")
def gallery_file(student_file, orl_chips, camera):
    path = camera[0] / "people.db"
    gallery = aird.load(student_file).gallery(path)
    for name, chips in orl_chips.items():
        gallery.enrol(name, [chips[0]], cropped=True)
    return path


def test_verdict_needs_the_bound_to_clear_zero():
    assert verdict(3.0, 1.0) == "helps"  # 3 - 1.645 > 0
    assert verdict(1.5, 1.0) == "no clear difference"
    assert verdict(0.0, 0.0) == "no clear difference"
    assert verdict(-2.0, 1.0) == "hurts"


def test_the_stream_order_is_names_times_or_folders(tmp_path):
    import os

    for person, names in {"ann": ["002.png", "010.png"], "bob": ["001.png", "003.png"]}.items():
        (tmp_path / person).mkdir()
        for n in names:
            (tmp_path / person / n).write_bytes(b"")
    for t, f in enumerate(["bob/003.png", "ann/010.png", "bob/001.png", "ann/002.png"]):
        os.utime(tmp_path / f, (1_000_000 + t, 1_000_000 + t))

    def order(how):
        files, label, excluded = _labelled_probes(tmp_path, {"ann", "bob"}, how)
        assert excluded == [] and label[str(tmp_path / "bob" / "001.png")] == "bob"
        return [f"{f.parent.name}/{f.name}" for f in files]

    assert order("name") == ["bob/001.png", "ann/002.png", "bob/003.png", "ann/010.png"]
    assert order("mtime") == ["bob/003.png", "ann/010.png", "bob/001.png", "ann/002.png"]
    assert order("folder") == ["ann/002.png", "ann/010.png", "bob/001.png", "bob/003.png"]


def test_a_camera_is_measured_paired_over_its_probes(student_file, gallery_file, camera):
    recognizer = aird.load(student_file, adapt="facebn-ema", momentum=0.5, batch_size=4)
    check = check_adaptation(recognizer, recognizer.gallery(gallery_file), camera[1], order="folder")
    off, adapted = check.records
    assert (off["adapt"], adapted["adapt"]) == ("off", "facebn-ema")
    assert off["n"] == adapted["n"] == 20 and off["res"] == 16 and adapted["task"] == "identification"
    assert check.hr_probes == 1 and check.excluded_people == ["stranger"]
    hits = [np.array([int(c) for c in r["settings"]["probe_hits"]]) for r in (adapted, off)]
    assert len(hits[0]) == 20 and adapted["metrics"]["rank1"] == pytest.approx(hits[0].mean())
    assert check.difference == pytest.approx(100 * (hits[0] - hits[1]).mean())
    assert check.verdict == verdict(check.difference, check.se)
    named = [np.array([int(c) for c in r["settings"]["probe_identified"]]) for r in (adapted, off)]
    assert adapted["metrics"]["dir@far=1e-3"] == pytest.approx(named[0].mean()) and named[0].sum() <= hits[0].sum()
    assert check.identified_difference == pytest.approx(100 * (named[0] - named[1]).mean())
    settings = adapted["settings"]["adaptation"]
    assert settings["order"] == "folder" and settings["test_batch_size"] == 4 and settings["momentum"] == 0.5
    assert settings["stream_info"]["faces"] == 20  # the adapted pass saw every LR crop as one stream
    assert adapted["settings"]["model_fingerprint"] == recognizer.fingerprint
    # the check used a stream of its own and left none behind
    assert recognizer.streams.names() == []


def test_cli_writes_both_records_and_says_what_to_do(student_file, gallery_file, camera, tmp_path, capsys):
    out = tmp_path / "check.json"
    argv = ["adapt-check", "--gallery", str(gallery_file), str(camera[1]), "--model", str(student_file)]
    plot = tmp_path / "stream.png"
    assert main([*argv, "--out", str(out), "--plot", str(plot), "--quiet"]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr()
    assert "rank-1: off" in printed.out and "verdict:" in printed.out
    assert "stranger" in printed.err and "1 crop(s) of 32 px or more" in printed.err
    records = load_records(out)
    assert [r["adapt"] for r in records] == ["off", "facebn-safe"]
    assert records[1]["settings"]["adaptation"]["test_batch_size"] == 1  # the default: one crop per step
    assert records[1]["settings"]["adaptation"]["order"] == "name"
    assert json.loads(out.read_text())["command"].startswith("aird adapt-check --gallery")


def test_bad_inputs_are_named(student_file, gallery_file, camera, tmp_path):
    plain = aird.load(student_file)
    with pytest.raises(ConfigError, match="adapt='off'"):
        check_adaptation(plain, plain.gallery(gallery_file), camera[1])
    limited = aird.load(student_file, adapt="facebn-safe", adapt_streams=["cam-1"])
    with pytest.raises(ConfigError, match="adapt_streams"):  # its check stream would not adapt
        check_adaptation(limited, limited.gallery(gallery_file), camera[1])
    recognizer = aird.load(student_file, adapt="facebn-safe", batch_size=1)
    gallery = recognizer.gallery(gallery_file)
    with pytest.raises(DataError, match="no sub-folder of face crops"):
        check_adaptation(recognizer, gallery, tmp_path)
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "1.png").write_bytes(b"")
    with pytest.raises(DataError, match="bob"):  # names no one in the gallery
        check_adaptation(recognizer, gallery, tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        check_adaptation(recognizer, gallery, tmp_path / "missing")
    with pytest.raises(ConfigError, match="order"):
        check_adaptation(recognizer, gallery, camera[1], order="random")
    assert main(["adapt-check", "--gallery", str(gallery_file), str(camera[1]), "--batch", "0"]) == 2
