"""The ``aird`` command end to end on a small real subset of LFW and ORL."""

import json

import pytest

from aird.cli import main


@pytest.fixture(scope="module")
def small_pairs(lfw_view2, tmp_path_factory):
    """Two folds of 4 same + 4 different real LFW pairs, in pairs.txt format."""
    lines = (lfw_view2 / "lfw" / "pairs.txt").read_text().splitlines()[1:]
    per_fold = 600
    body = ["2\t4"]
    for fold in range(2):
        block = lines[fold * per_fold : (fold + 1) * per_fold]
        body += block[:4] + block[300:304]
    path = tmp_path_factory.mktemp("pairs") / "pairs_small.txt"
    path.write_text("\n".join(body) + "\n")
    return path


@pytest.mark.parametrize("model", [pytest.param("dlib", marks=pytest.mark.slow), "dlib_resnet"])
def test_eval_verification_end_to_end(data_root, small_pairs, tmp_path, capsys, model):
    out = tmp_path / "results.json"
    rc = main(
        [
            "eval",
            "--model",
            model,
            "--res",
            "16",
            "--pairs-file",
            str(small_pairs),
            "--data-root",
            str(data_root),
            "--out",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
            "--quiet",
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    (rec,) = doc["records"]
    assert rec["benchmark"] == "lfw" and rec["task"] == "verification" and rec["model"] == model
    assert rec["res"] == 16 and rec["pairs"] == "lr-lr" and rec["n"] == 16 and rec["split"] == "custom:pairs_small.txt"
    # Chance is 0.5 (AUC 0.5); the teacher separates these 16 pairs fully even at 16 px (accuracy and AUC 1.0
    # when measured), and an AUC >= 0.95 of 8 genuine vs 8 impostor pairs has odds below 1e-4 at chance.
    assert rec["metrics"]["auc"] >= 0.95 and rec["metrics"]["accuracy"] >= 0.875
    assert rec["settings"]["degradation"]["res"] == 16 and rec["settings"]["alignment"]["images"] > 0
    assert "--pairs-file" in doc["command"]
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 2 and all((tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_orl_identification(orl_root, tmp_path):
    out = tmp_path / "orl.json"
    assert (
        main(["eval", "--benchmark", "orl", "--res", "16", "--data-root", str(orl_root), "--out", str(out), "--quiet"])
        == 0
    )
    (rec,) = json.loads(out.read_text())["records"]
    assert rec["task"] == "identification" and rec["pairs"] is None and rec["n"] == 360
    assert rec["metrics"]["rank1"] <= rec["metrics"]["rank5"] <= rec["metrics"]["rank10"]
    assert rec["metrics"]["rank1"] > 0.5  # 40 people; chance is 2.5%


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    assert main(["eval", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e.json"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "AIRD_DATA" in err
    with pytest.raises(SystemExit):
        main(["eval", "--res", "15"])
    assert "unknown resolution 15" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--folds", "0-3"])
    assert main(["eval", "--benchmark", "orl", "--task", "verification", "--quiet"]) == 2


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "eval" in text and "examples" in text


@pytest.mark.slow
def test_eval_with_facebn_adaptation(data_root, small_pairs, tmp_path):
    from aird.models import get_model
    from aird.models.student import save_student

    student = tmp_path / "student.safetensors"
    save_student(student, get_model("dlib_resnet_bn"), "dlib_resnet_bn", 150)
    records = {}
    for adapt in ("off", "facebn-ema", "adabn"):
        out = tmp_path / f"{adapt}.json"
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(student),
                    "--res",
                    "16",
                    "--pairs-file",
                    str(small_pairs),
                    "--adapt",
                    adapt,
                    "--momentum",
                    "0.2",
                    "--test-batch",
                    "8",
                    "--data-root",
                    str(data_root),
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 0
        )
        (records[adapt],) = json.loads(out.read_text())["records"]
    ema = records["facebn-ema"]
    assert ema["adapt"] == "facebn-ema"
    assert ema["settings"]["adaptation"]["momentum"] == 0.2 and ema["settings"]["adaptation"]["test_batch_size"] == 8
    assert records["off"]["settings"]["adaptation"] == {"adapter": "off"}
    # an adapted record still names the weights it measured: the same file as the unadapted one
    assert ema["settings"]["model_fingerprint"] == records["off"]["settings"]["model_fingerprint"] is not None
    # adaptation changes the embeddings, so the AUC moves
    assert len({round(r["metrics"]["auc"], 6) for r in records.values()}) > 1


def test_adapt_needs_a_bn_model(data_root, capsys):
    assert main(["eval", "--model", "dlib", "--adapt", "facebn-ema", "--data-root", str(data_root), "--quiet"]) == 2
    assert "--adapt needs a PyTorch model" in capsys.readouterr().err


def test_eval_flip_fuse_embeds_each_face_and_its_mirror(data_root, small_pairs, tmp_path, capsys):
    """--flip-fuse: the record names the fused model and its scores are those of the summed unit embeddings."""
    import numpy as np

    from aird.models.embedder import FlipFused
    from aird.models.load import load_embedder

    out = tmp_path / "fused.json"
    common = ["--model", "fast", "--res", "16", "--pairs-file", str(small_pairs), "--data-root", str(data_root)]
    assert main(["eval", *common, "--flip-fuse", "--out", str(out), "--quiet"]) == 0
    (rec,) = json.loads(out.read_text())["records"]
    assert rec["model"].endswith("+flip") and rec["settings"]["model_fingerprint"].endswith("-flipfuse")
    assert "--flip-fuse" in json.loads(out.read_text())["command"]

    fused = FlipFused(load_embedder("fast"))
    faces = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    plain = load_embedder("fast").embed(faces)
    mirrored = load_embedder("fast").embed(np.ascontiguousarray(faces[:, :, ::-1]))

    def unit(e: np.ndarray) -> np.ndarray:
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    assert np.allclose(unit(fused.embed(faces)), unit(unit(plain) + unit(mirrored)), atol=1e-5)

    capsys.readouterr()
    assert main(["eval", *common, "--flip-fuse", "--adapt", "facebn-ema", "--quiet"]) == 2
    assert "--flip-fuse with --adapt" in capsys.readouterr().err
