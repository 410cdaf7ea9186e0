"""What a user can get wrong on the command line is a one-line error naming the thing and the fix,
found before the work starts; ``--on-bad-image skip`` reports what it left out."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

import aird.data.chips
from aird.cli import main
from aird.data.degrade import Degradation
from aird.errors import ConfigError
from aird.models.load import load_embedder


@pytest.fixture
def student(tmp_path):
    """A small student weights file (the light architecture), as 'aird distill' writes one."""
    from aird.models import get_model
    from aird.models.student import save_student

    path = tmp_path / "run-A" / "student.safetensors"
    path.parent.mkdir()
    save_student(path, get_model("lr_light"), "lr_light", 16)
    return path


def _eval(root, out, *extra: str, model: str = "random:lr_light") -> int:
    argv = ["eval", "--model", model, "--data-root", str(root), "--out", str(out), "--quiet"]
    return main([*argv, *extra])


@pytest.fixture
def no_alignment(monkeypatch):
    """Fail the test if any image is aligned: the error must come before the work."""
    monkeypatch.setattr(aird.data.chips, "align_images", lambda *a, **k: pytest.fail("aligned images first"))
    monkeypatch.setattr("aird.eval.runner.align_images", lambda *a, **k: pytest.fail("aligned images first"))


@pytest.mark.parametrize(
    "option, value",
    [("--blur", "nan"), ("--gamma", "inf"), ("--noise", "-inf"), ("--momentum", "nan"), ("--alpha", "NaN")],
)
def test_non_finite_option_values_are_refused(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_:
        _eval(tmp_path / "nowhere", tmp_path / "eval.json", f"{option}={value}")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be a finite number, got {value!r}" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "setting, match",
    [
        ({"blur_sigma": math.nan}, "blur_sigma"),
        ({"noise_std": (0.0, math.inf)}, "noise_std"),
        ({"gamma": math.nan}, "gamma"),
        ({"gamma": math.inf}, "gamma"),
    ],
)
def test_the_library_refuses_non_finite_degradations_too(setting, match):
    with pytest.raises(ConfigError, match=match):
        Degradation(res=16, **setting)


def test_a_registry_name_without_weights_is_refused_unless_asked_for(tmp_path, capsys, one_error_line):
    assert main(["eval", "--model", "lr_light", "--out", str(tmp_path / "e.json"), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "'lr_light' has no trained weights" in line and "--model random:lr_light" in line
    untrained = load_embedder("random:lr_light")
    assert untrained.name == "random:lr_light" and untrained.method == "untrained"
    assert load_embedder("dlib_resnet_bn").method == "teacher"  # dlib's weights: fine as they are
    with pytest.raises(ConfigError, match="drop the 'random:' prefix"):
        load_embedder("random:dlib_resnet_bn")


def test_untrained_on_purpose_runs_end_to_end_and_says_so(fake_lfw, cache, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert _eval(fake_lfw, out, "--folds", "1-2", "--plots", str(tmp_path / "plots")) == 0
    (rec,) = json.loads(out.read_text())["records"]
    assert rec["model"] == "random:lr_light" and rec["method"] == "untrained" and rec["n"] == 8
    assert "(untrained)" in capsys.readouterr().out
    assert len(list((tmp_path / "plots").glob("*.png"))) == 2


def test_plots_path_that_is_a_file(tmp_path, capsys, one_error_line, no_alignment, student):
    plots = tmp_path / "plots.png"
    plots.write_text("a file")
    assert _eval(tmp_path / "nowhere", tmp_path / "eval.json", "--plots", str(plots), model=str(student)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(plots) in line and "--plots folder is a file" in line


def test_pairs_file_that_is_not_utf8(fake_lfw, cache, tmp_path, capsys, one_error_line, no_alignment, student):
    pairs = tmp_path / "pairs.txt"
    pairs.write_bytes("2\t2\nJos\xe9\t1\t2\n".encode("latin-1"))
    assert (
        _eval(fake_lfw, tmp_path / "eval.json", "--pairs-file", str(pairs), "--folds", "1-2", model=str(student)) == 2
    )
    line = one_error_line(capsys.readouterr().err)
    assert str(pairs) in line and "not UTF-8" in line and "0xe9" in line


def test_a_single_fold_is_refused_before_any_work(
    fake_lfw, cache, tmp_path, capsys, one_error_line, no_alignment, student
):
    assert _eval(fake_lfw, tmp_path / "eval.json", "--folds", "2", model=str(student)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "at least two folds" in line and "--folds 1-2" in line


def test_a_fold_absent_from_the_pairs_file(fake_lfw, cache, tmp_path, capsys, one_error_line, no_alignment, student):
    assert _eval(fake_lfw, tmp_path / "eval.json", "--folds", "1-3", model=str(student)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "fold 3 is not in this pairs file, which has folds 1-2" in line and "pairs.txt" in line


def test_on_bad_image_skip_counts_what_it_left_out(fake_lfw, cache, tmp_path, capsys, one_error_line, student):
    bad = fake_lfw / "lfw" / "lfw-deepfunneled" / "P01" / "P01_0002.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    out = tmp_path / "eval.json"
    # The default, right for benchmarks: stop, naming the file.
    assert _eval(fake_lfw, out, "--folds", "1-2", model=str(student)) == 2
    assert str(bad) in one_error_line(capsys.readouterr().err) and not out.exists()
    assert _eval(fake_lfw, out, "--folds", "1-2", "--on-bad-image", "skip", model=str(student)) == 0
    printed = capsys.readouterr().out
    # The image is in two of the 8 pairs (P01 1 2 and P01 2 P03 1).
    assert "skipped 1 image(s) that could not be read (2 pairs left out)" in printed and str(bad) in printed
    (rec,) = json.loads(out.read_text())["records"]
    settings = rec["settings"]
    assert settings["on_bad_image"] == "skip" and settings["pairs_dropped"] == 2 and rec["n"] == 6
    (skipped,) = settings["skipped_images"]
    assert skipped["path"] == str(bad) and "corrupt or truncated" in skipped["reason"]


def test_on_bad_image_skip_in_identification_drops_probes_without_a_gallery(tmp_path, cache, capsys):
    """ORL-shaped: image 1 of each person is the gallery; a skipped gallery image takes its person's probes."""
    rng = np.random.default_rng(0)
    orl = tmp_path / "data" / "orl"
    for person in ("s1", "s2", "s3", "s4", "s5", "s6"):
        (orl / person).mkdir(parents=True)
        for k in (1, 2, 3):
            Image.fromarray(rng.integers(0, 256, (56, 46), dtype=np.uint8)).save(orl / person / f"{k}.pgm")
    for broken in (orl / "s2" / "1.pgm", orl / "s3" / "2.pgm"):
        broken.write_bytes(b"P5\n46 56\n255\n")  # header, no pixels
    out = tmp_path / "orl.json"
    argv = ["eval", "--benchmark", "orl", "--model", "random:lr_light", "--data-root", str(tmp_path / "data")]
    assert main([*argv, "--out", str(out), "--on-bad-image", "skip", "--quiet"]) == 0
    (rec,) = json.loads(out.read_text())["records"]
    settings = rec["settings"]
    assert [s["path"] for s in settings["skipped_images"]] == [str(orl / "s2" / "1.pgm"), str(orl / "s3" / "2.pgm")]
    # 12 probes listed; s3/2 is unreadable and s2's two probes have no gallery image left.
    assert rec["n"] == 9 and settings["probes_dropped"] == 3 and settings["protocol"]["gallery"] == 5
    assert "skipped 2 image(s) that could not be read (3 probes left out)" in capsys.readouterr().out
