"""Probes cut from detector boxes in the original photo (aird eval --crop detector|jittered), on real faces."""

import json
import sys
from pathlib import Path

import dlib
import numpy as np
import pytest

from aird.cli import main
from aird.data import crops
from aird.data.align import FaceAligner, align_settings_for
from aird.data.chips import align_images
from aird.data.crops import DEFAULT_CROP_JITTER, DetectorCrop, crop_condition, face_boxes, framed_box
from aird.data.images import load_rgb
from aird.data.jitter import Box, Jitter, cut
from aird.errors import ConfigError
from aird.eval.metrics import cosine_similarity
from aird.eval.runner import EvalConfig, run_verification
from aird.models.teacher import DlibTeacher

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark, small_pairs_file, tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """One cache for the module's tests (chips, boxes and embeddings are made once), never the user's."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("crops-cache")
        mp.setenv("AIRD_CACHE", str(path))
        yield path


@pytest.fixture
def cache(module_cache, monkeypatch):
    monkeypatch.setattr(crops, "_last_boxes", None)
    return module_cache


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(crops, "_last_boxes", None)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def teacher():
    return DlibTeacher("torch")


def test_cut_of_dlibs_chip_box_is_dlibs_chip(lfw_sample):
    """``cut`` and dlib's chip extraction agree on what a box is, so a detector's box and the aligned chip
    are framed in the same terms."""
    aligner = FaceAligner(align_settings_for("lfw"))
    for path in lfw_sample[:4]:
        image = load_rgb(path)
        face = aligner.detect(image)[0]
        details = dlib.get_face_chip_details(face.shape, 150, 0.25)
        r = details.rect
        box = Box(
            (r.left() + r.right()) / 2,
            (r.top() + r.bottom()) / 2,
            (r.right() - r.left()) * 150 / 149,
            np.degrees(details.angle),
        )
        ours, theirs = cut(image, box, 150).astype(int), aligner.chip(image, face).astype(int)
        assert np.abs(ours - theirs).mean() < 1.0  # bilinear rounding apart, the same pixels


def test_face_boxes_are_the_alignments_detection_and_are_cached(lfw_sample, fresh_cache, monkeypatch):
    chips = align_images(lfw_sample[:4], align_settings_for("lfw"), progress=False, workers=1)
    boxes = face_boxes(chips, progress=False, workers=1)
    aligner = FaceAligner(chips.settings)
    for i, path in enumerate(chips.paths):
        expected, detected = aligner.face_box(load_rgb(path))
        assert tuple(boxes.boxes[i]) == expected and boxes.detected[i] == detected
    files = sorted((fresh_cache / "boxes").rglob("*.npz"))
    assert len(files) == 4
    # A second run (a new process: no memo) reads the cache and detects again only the damaged entry.
    files[0].write_bytes(files[0].read_bytes()[:20])
    calls = []
    real = FaceAligner.face_box
    monkeypatch.setattr(FaceAligner, "face_box", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    monkeypatch.setattr(crops, "_last_boxes", None)
    again = face_boxes(chips, progress=False, workers=1)
    assert len(calls) == 1
    assert (again.boxes == boxes.boxes).all() and (again.detected == boxes.detected).all()


def test_detector_crop_shows_the_face_the_chip_shows(lfw_sample, cache, teacher):
    chips = align_images(lfw_sample[:6], align_settings_for("lfw"), progress=False, workers=1)
    boxes = face_boxes(chips, progress=False, workers=1)
    detector = crop_condition("detector")
    cut_faces = detector.crops(chips, boxes, range(len(chips.paths)))
    assert cut_faces.shape == chips.chips.shape and (cut_faces != chips.chips).any()
    for i in range(len(chips.paths)):
        framed = framed_box(boxes.boxes[i])
        assert 1.0 < framed.side / (boxes.boxes[i][2] - boxes.boxes[i][0] + 1) < 1.2
    # The teacher at HR sees the same person in the chip and in the detector's crop.
    same = cosine_similarity(teacher.embed(chips.chips), teacher.embed(cut_faces))
    assert same.min() > 0.9


def test_jittered_crops_are_seeded_per_image(lfw_sample, cache):
    chips = align_images(lfw_sample[:3], align_settings_for("lfw"), progress=False, workers=1)
    boxes = face_boxes(chips, progress=False, workers=1)
    jittered = crop_condition("jittered", DEFAULT_CROP_JITTER, seed=0)
    first = jittered.crops(chips, boxes, [0, 1, 2])
    assert (first == jittered.crops(chips, boxes, [2, 0, 1])[[1, 2, 0]]).all()  # each image its own draw
    assert (first != crop_condition("jittered", DEFAULT_CROP_JITTER, seed=1).crops(chips, boxes, [0, 1, 2])).any()
    assert (first != crop_condition("detector").crops(chips, boxes, [0, 1, 2])).any()
    # A zero jitter is the detector's box itself, and both share one embedding cache entry.
    still = DetectorCrop("jittered", Jitter(), 0)
    assert (still.crops(chips, boxes, [0]) == crop_condition("detector").crops(chips, boxes, [0])).all()
    assert still.key() == crop_condition("detector").key() != jittered.key()
    with pytest.raises(ConfigError, match="unknown crop condition 'tight'"):
        crop_condition("tight")


def test_jittered_condition_in_verification(data_root, tmp_path, cache, teacher):
    pairs = str(small_pairs_file(data_root, tmp_path / "pairs.txt"))
    aligned = run_verification(teacher, EvalConfig(res=16, pairs="hr-lr", pairs_file=pairs), data_root, False)
    cfg = EvalConfig(res=16, pairs="hr-lr", pairs_file=pairs, crop="jittered")
    jittered = run_verification(teacher, cfg, data_root, False)
    rec = jittered.record
    assert rec["benchmark"] == "lfw-crop:jittered" and aligned.record["benchmark"] == "lfw"
    assert rec["n"] == 16 and rec["pairs"] == "hr-lr"
    crop = rec["settings"]["crop"]
    assert crop["condition"] == "jittered" and crop["jitter"] == {"shift": 0.1, "scale": [0.9, 1.1], "rotate": 10.0}
    assert crop["seed"] == 0 and crop["frame"]["side"] == 1.09
    assert crop["boxes_detected"] + crop["fallback_boxes"] == rec["settings"]["alignment"]["images"]
    assert aligned.record["settings"]["crop"] == {"condition": "aligned"}
    assert not np.allclose(jittered.scores, aligned.scores)
    # Embeddings are cached per crop condition: a second run gives the same scores without recomputing.
    assert np.array_equal(run_verification(teacher, cfg, data_root, False).scores, jittered.scores)


def test_eval_cli_crop_options(data_root, tmp_path, cache, capsys):
    pairs = small_pairs_file(data_root, tmp_path / "pairs.txt")
    out = tmp_path / "eval.json"
    base = ["eval", "--res", "16", "--pairs-file", str(pairs), "--data-root", str(data_root), "--quiet"]
    assert main(base + ["--out", str(out)]) == 0
    assert main(base + ["--crop", "jittered", "--jitter-shift", "0.05", "--jitter-rotate", "0", "--out", str(out)]) == 0
    assert "probes cut from detector boxes, jittered (shift 0.05" in capsys.readouterr().out
    records = {r["benchmark"]: r for r in json.loads(out.read_text())["records"]}
    assert set(records) == {"lfw", "lfw-crop:jittered"}  # the jittered record does not replace the aligned one
    assert records["lfw-crop:jittered"]["settings"]["crop"]["jitter"] == {
        "shift": 0.05,
        "scale": [0.9, 1.1],
        "rotate": 0.0,
    }
    assert main(base + ["--jitter-shift", "0.05", "--out", str(out)]) == 2
    assert "--jitter-shift applies to --crop jittered only" in capsys.readouterr().err
    assert main(base + ["--crop", "jittered", "--jitter-scale", "1.2", "0.8", "--out", str(out)]) == 2
    assert "aird: error: --jitter-scale must be a range [low, high]" in capsys.readouterr().err


def test_crops_benchmark_on_a_few_pairs(data_root, tmp_path, cache, capsys, monkeypatch):
    bench = load_benchmark("crops")
    pairs = small_pairs_file(data_root, tmp_path / "pairs.txt")
    student = tiny_run(tmp_path / "run") / "student.safetensors"
    out = tmp_path / "crops.json"
    args = ["--no-shipped", "--student", str(student), "--res", "16", "--pairs-file", str(pairs)]
    args += ["--data-root", str(data_root), "--out", str(out), "--quiet"]
    assert bench.main(args) == 0
    records = json.loads(out.read_text())["records"]
    cells = {(r["model"], r["pairs"], r["settings"]["crop"]["condition"]): r for r in records}
    assert len(records) == 12 == len(cells)  # 2 models x 2 pair modes x 3 conditions
    for (model, mode, condition), r in cells.items():
        assert r["benchmark"] == ("lfw" if condition == "aligned" else f"lfw-crop:{condition}")
        assert r["n"] == 16 and r["res"] == 16
        assert r["settings"]["gallery_model"] == ("dlib_resnet" if mode == "hr-lr" else None)
    assert cells["run", "hr-lr", "jittered"]["settings"]["student_file"] == str(student)
    table = (tmp_path / "crops.md").read_text()
    assert "| dlib_resnet | lr-lr | 16 | custom:pairs.txt |" in table and "| run | hr-lr | 16 |" in table
    assert "accuracy detector" in table and "up to 0.1 of its side" in table
    assert "| dlib_resnet | hr-lr | 16 |" in capsys.readouterr().out

    # A subset never lands in docs/results unless asked: without --out it goes to aird-results/.
    monkeypatch.chdir(tmp_path)
    small = ["--no-teacher", "--no-shipped", "--student", str(student), "--res", "16", "--pairs", "lr-lr"]
    small += ["--conditions", "aligned", "--pairs-file", str(pairs), "--data-root", str(data_root), "--quiet"]
    assert bench.main(small) == 0
    assert len(json.loads((tmp_path / "aird-results" / "crops.json").read_text())["records"]) == 1
    assert bench.main(["--no-teacher", "--no-shipped", "--out", str(out)]) == 2
    assert "no model left to evaluate" in capsys.readouterr().err
