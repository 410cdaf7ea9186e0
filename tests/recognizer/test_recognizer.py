"""The Python verbs on real faces: represent, verify, typed results, no silent fallback, loading errors."""

import io

import numpy as np
import pytest
from PIL import Image
from students import CARD, lr_crop, write_student

import aird
from aird.errors import ConfigError, DataError, ModelFileError
from aird.results import HR_MIN_PX, NoFaceError, pair_mode

pytestmark = pytest.mark.data


def test_front_door_exports():
    for name in ("load", "Recognizer", "Gallery", "FaceResult", "VerifyResult", "IdentifyResult", "StreamStates"):
        assert getattr(aird, name).__name__ == name


def test_represent_a_photo(recognizer, lfw_sample):
    faces = recognizer.represent(lfw_sample[0])
    assert len(faces) == 1
    f = faces[0]
    assert f.found and f.route == "hr" and f.face_px > 80 and not f.cropped
    assert f.source == str(lfw_sample[0]) and f.faces_in_image == 1 and f.face == 0
    assert f.embedding.shape == (128,) and f.embedding.dtype == np.float32
    assert abs(np.linalg.norm(f.embedding) - 1) < 1e-5
    # LFW deep-funneled photos are 250 x 250 with the face in the middle.
    assert 40 < f.box.left < f.box.right < 210 and 40 < f.box.top < f.box.bottom < 230
    assert f.to_dict()["box"] == f.box.to_list() and len(f.to_dict()["embedding"]) == 128


def test_several_faces_give_several_results(recognizer, lfw_sample):
    a, b = (np.asarray(Image.open(p).convert("RGB")) for p in lfw_sample[:2])
    both = np.concatenate([a, b], axis=1)  # two people side by side in one 500 x 250 photo
    faces = recognizer.represent(both)
    assert len(faces) == 2 and all(f.found and f.faces_in_image == 2 for f in faces)
    assert sorted(f.face for f in faces) == [0, 1]
    left, right = sorted(faces, key=lambda f: f.box.left)
    assert left.box.right <= 250 <= right.box.left
    alone = recognizer.represent([a, b])
    assert float(left.embedding @ alone[0].embedding) > 0.98
    assert float(right.embedding @ alone[1].embedding) > 0.98


def test_no_face_says_so_and_suggests_cropped(recognizer, orl_chips):
    blank = np.full((200, 200, 3), 120, np.uint8)
    [result] = recognizer.represent(blank)
    assert not result.found and result.embedding is None and result.box is None
    assert "no face found" in result.message and "cropped=True" in result.message and "upsample=2" in result.message
    # A CCTV crop given as a photo: nothing to detect in 16 px; the message says it is a crop.
    crop = lr_crop(orl_chips["s1"][1], 16, "k")
    [result] = recognizer.represent(crop)
    assert not result.found and "face crop" in result.message and "cropped=True" in result.message
    with pytest.raises(NoFaceError, match="cropped=True"):
        recognizer.verify(crop, orl_chips["s1"][0])
    # ... and read as a crop it is a face.
    [face] = recognizer.represent(crop, cropped=True)
    assert face.found and face.route == "lr" and face.face_px == 16 and face.box.to_list() == [0, 0, 16, 16]


def test_every_input_kind_gives_the_same_embedding(recognizer, orl_chips):
    chip = orl_chips["s2"][0]
    buf = io.BytesIO()
    Image.fromarray(chip).save(buf, format="PNG")
    rgba = np.concatenate([chip, np.full(chip.shape[:2] + (1,), 255, np.uint8)], axis=2)
    kinds = [chip, buf.getvalue(), Image.fromarray(chip), rgba]
    faces = recognizer.represent(kinds, cropped=True)
    assert [f.source for f in faces] == ["<array #0>", "<bytes #1>", "<PIL image #2>", "<array #3>"]
    for f in faces[1:]:
        assert np.abs(f.embedding - faces[0].embedding).max() < 1e-6


def test_routes_follow_the_face_size(recognizer, orl_chips):
    chip = orl_chips["s3"][0]
    sizes = [8, 16, HR_MIN_PX - 8, HR_MIN_PX, 150]
    faces = recognizer.represent([lr_crop(chip, s, "k") if s < 150 else chip for s in sizes], cropped=True)
    assert [f.route for f in faces] == ["lr", "lr", "lr", "hr", "hr"]
    assert [f.face_px for f in faces] == sizes
    assert pair_mode("lr", "hr") == pair_mode("hr", "lr") == "hr-lr"


def test_a_small_face_in_a_photo_takes_the_lr_route(recognizer, data_root):
    """A photo shrunk so its face is ~25 px: the detector needs upsample=2, and the face goes to the student."""
    photo = np.asarray(Image.open(data_root / "orl" / "s1" / "1.pgm").convert("RGB"))
    small = np.asarray(Image.fromarray(photo).resize((30, 37), Image.BICUBIC))
    canvas = np.full((120, 120, 3), 100, np.uint8)
    canvas[40:77, 40:70] = small
    assert not recognizer.represent(canvas, upsample=1)[0].found
    found = [f for f in recognizer.represent(canvas, upsample=2) if f.found]
    if not found:
        pytest.skip("dlib's detector finds no face this small in this photo")
    assert found[0].face_px < HR_MIN_PX and found[0].route == "lr"


def test_verify(recognizer, orl_chips):
    s1, s2 = orl_chips["s1"], orl_chips["s2"]
    same = recognizer.verify(s1[0], s1[1], cropped=True)
    assert same.verified and same.mode == "hr-hr" and same.threshold == CARD["thresholds"]["hr-hr"]["1e-3"]
    assert same.similarity >= same.threshold and same.far == 1e-3 and same.model == "test-student"
    other = recognizer.verify(s1[0], s2[0], cropped=True, far=1e-2)
    assert not other.verified and other.threshold == CARD["thresholds"]["hr-hr"]["1e-2"]
    mixed = recognizer.verify(s1[0], lr_crop(s1[1], 16, "k"), cropped=True)
    assert mixed.mode == "hr-lr" and mixed.a.route == "hr" and mixed.b.route == "lr"
    given = recognizer.verify(s1[0], s2[0], cropped=True, threshold=-1.0)
    assert given.verified and given.far is None and given.threshold == -1.0
    assert set(same.to_dict()) >= {"verified", "similarity", "threshold", "mode", "a", "b"}


def test_verify_errors(recognizer, orl_chips):
    chip = orl_chips["s1"][0]
    with pytest.raises(ConfigError, match="no hr-hr threshold at far=0.05"):
        recognizer.verify(chip, chip, cropped=True, far=0.05)
    with pytest.raises(ConfigError, match="threshold must be"):
        recognizer.verify(chip, chip, cropped=True, threshold=float("nan"))
    with pytest.raises(ConfigError, match="upsample must be"):
        recognizer.represent(chip, upsample=9)


def test_a_model_without_a_card_needs_a_threshold(tmp_path, orl_chips):
    plain = aird.load(write_student(tmp_path / "plain.safetensors", card=None))
    chip = orl_chips["s1"][0]
    with pytest.raises(ConfigError, match="no calibrated thresholds"):
        plain.verify(chip, chip, cropped=True)
    assert plain.verify(chip, chip, cropped=True, threshold=0.9).verified
    assert plain.name == "plain" and plain.card == {}


def test_bad_images_raise_naming_the_input(recognizer, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(DataError, match="broken.jpg"):
        recognizer.represent(bad)
    with pytest.raises(DataError, match="too small"):
        recognizer.represent(np.zeros((1, 1, 3), np.uint8), cropped=True)
    results, skipped = recognizer.represent_files([bad, tmp_path / "missing.png"])
    assert results == [] and [s.source for s in skipped] == [str(bad), str(tmp_path / "missing.png")]
    assert "corrupt or truncated" in skipped[0].reason and "not found" in skipped[1].reason


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, good: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]), "not a readable safetensors"),
        (lambda p, good: p.write_bytes(np.random.default_rng(0).bytes(4096)), "not a readable safetensors"),
        (lambda p, good: write_student(p, model="lr_light"), None),
    ],
    ids=["truncated", "random-bytes", "other-architecture"],
)
def test_bad_student_files(tmp_path, student_file, recognizer, make, message):
    path = tmp_path / "student.safetensors"
    make(path, student_file)
    if message is None:
        # Another architecture that is a valid student loads as that architecture (16 px input).
        rec = aird.load(path)
        assert rec.student_size == 16 and rec.fingerprint != recognizer.fingerprint
        return
    with pytest.raises(ModelFileError, match=message) as err:
        aird.load(path)
    assert str(path) in str(err.value)


def test_student_file_of_an_unknown_architecture_or_misfit_weights(tmp_path, student_file):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(student_file))
    unknown = tmp_path / "unknown.safetensors"
    save_file(weights, str(unknown), metadata={"model": "resnet9000", "input_size": "150"})
    with pytest.raises(ModelFileError, match="unknown model 'resnet9000'") as err:
        aird.load(unknown)
    assert str(unknown) in str(err.value)
    misfit = tmp_path / "misfit.safetensors"
    save_file(weights, str(misfit), metadata={"model": "lr_light", "input_size": "16"})
    with pytest.raises(ModelFileError, match="do not fit model 'lr_light'"):
        aird.load(misfit)


def test_model_names_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="without trained weights"):
        aird.load("lr_light")
    with pytest.raises(ModelFileError, match="not found"):
        aird.load(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match="is a folder"):
        aird.load(tmp_path)
    with pytest.raises(ConfigError, match="unknown backend"):
        aird.load("dlib_resnet", backend="tpu")


def test_default_model_is_the_shipped_student_or_a_clear_error(monkeypatch):
    try:
        from aird.models import shipped
    except ImportError:
        with pytest.raises(ModelFileError, match="no shipped student"):
            aird.load()
        return
    if shipped.SHIPPED_PATH.is_file():
        assert aird.load().path == shipped.SHIPPED_PATH
    else:
        with pytest.raises(ModelFileError):
            aird.load()


def test_teacher_alone(orl_chips):
    teacher = aird.load("dlib_resnet")
    chip = orl_chips["s1"][0]
    hr, lr = teacher.represent([chip, lr_crop(chip, 16, "k")], cropped=True)
    assert hr.route == "hr" and lr.route == "lr" and teacher.student_size == 150
    with pytest.raises(ConfigError, match="no batch-norm layer"):
        aird.load("dlib_resnet", adapt="facebn-ema")


@pytest.mark.slow
def test_onnx_backend_matches_torch(student_file, recognizer, orl_chips, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRD_CACHE", str(tmp_path))
    onnx = aird.load(student_file, backend="onnx")
    chip = orl_chips["s4"][0]
    inputs = [chip, lr_crop(chip, 16, "k")]
    for a, b in zip(onnx.represent(inputs, cropped=True), recognizer.represent(inputs, cropped=True)):
        assert a.route == b.route and float(a.embedding @ b.embedding) > 0.9999
    assert onnx.fingerprint == recognizer.fingerprint
    with pytest.raises(ConfigError, match="torch backend"):
        aird.load(student_file, backend="onnx", adapt="facebn-ema")


def test_an_exported_graph_is_a_model_float_or_int8(student_file, recognizer, orl_chips, tmp_path):
    """`aird export` output loads like a student file: its card (thresholds) comes with it, the float graph
    embeds as the file does, the int8 one closely and under a fingerprint of its own; it cannot adapt."""
    from aird.models.export import export_model, quantize_int8

    float_graph = export_model(student_file, tmp_path / "student.onnx")
    chip = orl_chips["s2"][0]
    crops = [lr_crop(c, 16, "k") for c in orl_chips["s2"] + orl_chips["s3"]]
    int8_graph = quantize_int8(float_graph, tmp_path / "student-int8.onnx", np.stack(crops[:6]))
    want = recognizer.represent([chip, *crops[6:]], cropped=True)
    for graph, closeness in ((float_graph, 0.9999), (int8_graph, 0.95)):
        rec = aird.load(graph)
        got = rec.represent([chip, *crops[6:]], cropped=True)
        assert [g.route for g in got] == [w.route for w in want] == ["hr"] + ["lr"] * 4
        assert all(float(g.embedding @ w.embedding) > closeness for g, w in zip(got[1:], want[1:]))
        assert rec.card == recognizer.card and rec.info()["student_backend"] == "onnxruntime"
        assert (
            rec.verify(chip, crops[6], cropped=True).threshold
            == recognizer.verify(chip, crops[6], cropped=True).threshold
        )
    assert aird.load(float_graph).fingerprint != recognizer.fingerprint != aird.load(int8_graph).fingerprint
    assert aird.load(int8_graph).name.endswith("-int8")
    with pytest.raises(ConfigError, match="exported graph runs as it was exported"):
        aird.load(int8_graph, adapt="facebn-ema")
