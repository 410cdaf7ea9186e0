"""ONNX export of student files: onnxruntime parity on real faces, the model card in the graph, clear errors."""

import json

import numpy as np
import pytest
import torch

from aird.cli import main
from aird.errors import ModelFileError
from aird.models import get_model
from aird.models.export import OnnxEmbedder, export_onnx
from aird.models.load import load_embedder
from aird.models.shipped import read_card
from aird.models.student import file_fingerprint, save_student


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def student_file(tmp_path_factory):
    """A teacher-initialised student stored in float16 with a card, as the shipped file is."""
    path = tmp_path_factory.mktemp("student") / "tiny_student.safetensors"
    card = {"name": "tiny-student", "input_size": 150, "thresholds": {"lr-lr": {"1e-3": 0.9}}, "fingerprint": "x"}
    save_student(path, get_model("dlib_resnet_bn"), "dlib_resnet_bn", 150, dtype=torch.float16, card=json.dumps(card))
    return path


@pytest.fixture(scope="module")
def real_faces(lfw_sample):
    """Eight real LFW faces: aligned HR chips and the same faces degraded to 16 px (up-sampled to 150)."""
    from aird.data.align import align_settings_for
    from aird.data.chips import align_images
    from aird.data.degrade import Degradation

    chips = align_images(lfw_sample, align_settings_for("lfw"), progress=False)
    lr = Degradation(res=16).batch(chips.chips, chips.digests)
    return np.concatenate([chips.chips, lr])


def test_student_export_parity_on_real_faces_and_card(student_file, real_faces, tmp_path, capsys):
    out = tmp_path / "student.onnx"
    assert main(["export", "--model", str(student_file), "--out", str(out)]) == 0
    assert "tiny-student" in capsys.readouterr().out
    assert read_card(out) == read_card(student_file)  # the card survives the export
    onnx_emb = load_embedder(str(out))
    torch_emb = load_embedder(str(student_file))
    assert isinstance(onnx_emb, OnnxEmbedder) and onnx_emb.input_size == torch_emb.input_size == 150
    assert onnx_emb.source_fingerprint == file_fingerprint(student_file)
    assert onnx_emb.card["name"] == "tiny-student"
    got, want = onnx_emb.embed(real_faces), torch_emb.embed(real_faces)
    assert got.shape == want.shape == (16, 128)
    assert cosine(got, want).min() >= 0.9999
    one = onnx_emb.embed(real_faces[:1])  # dynamic batch: one face alone gives the same embedding
    assert cosine(one, got[:1]).min() >= 0.99999
    # A different file, a different cache key; the same file, the same key.
    assert onnx_emb.fingerprint() != torch_emb.fingerprint()
    assert onnx_emb.fingerprint() == OnnxEmbedder(out).fingerprint()


def test_onnx_embedder_resizes_like_torch_embedder(tmp_path):
    """A face of any size reaches the graph through the same resampling as the PyTorch model's."""
    model = get_model("lr_light").eval()
    path = tmp_path / "light.safetensors"
    save_student(path, model, "lr_light", 16)
    from aird.models.export import export_model

    onnx_emb = OnnxEmbedder(export_model(path, tmp_path / "light.onnx"))
    faces = np.random.default_rng(0).integers(0, 256, (4, 23, 23, 3), dtype=np.uint8)
    np.testing.assert_allclose(onnx_emb.embed(faces), load_embedder(str(path)).embed(faces), atol=1e-4)


def test_int8_copy_of_the_fast_student_stays_close_and_keeps_its_card(real_faces, tmp_path):
    """Static int8 quantization: calibrated on some faces, it embeds others close to the float graph."""
    from aird.models.export import export_model, quantize_int8
    from aird.models.shipped import shipped_student_path

    fast = shipped_student_path("fast")
    graph = export_model(fast, tmp_path / "fast.onnx")
    int8 = OnnxEmbedder(quantize_int8(graph, tmp_path / "fast-int8.onnx", real_faces[:8]))
    assert int8.metadata["quantized"] == "int8" and int8.card["name"] == read_card(fast)["name"]
    assert int8.path.stat().st_size < 0.5 * graph.stat().st_size  # int8 weights: under half the float file
    got, want = int8.embed(real_faces[8:]), OnnxEmbedder(graph).embed(real_faces[8:])
    assert got.shape == want.shape and np.isfinite(got).all()
    assert cosine(got, want).mean() >= 0.95  # measured on LFW at 16 px: see docs/results/students.md
    with pytest.raises(ModelFileError, match="calibration"):
        quantize_int8(graph, tmp_path / "none.onnx", real_faces[:0])
    # A copy that strays from the float graph is refused, and no file is left behind.
    with pytest.raises(ModelFileError, match="mean cosine"):
        quantize_int8(graph, tmp_path / "strict.onnx", real_faces[:8], min_cosine=1.01)
    assert not (tmp_path / "strict.onnx").exists()


def test_int8_unit_is_the_block_a_node_came_from():
    from aird.models.export import int8_unit

    assert int8_unit("/features/features.6/body/body.1/Conv") == "/features/features.6"
    assert int8_unit("/features/features.6/Add") == "/features/features.6"
    assert int8_unit("/Sub") == "/Sub" and int8_unit("MatMulBnFusion_Gemm") == "MatMulBnFusion_Gemm"


def test_int8_per_layer_sensitivity_keeps_the_most_sensitive_blocks_float(real_faces, tmp_path):
    """Per-layer sensitivity: each block's held-out cosine when it alone stays float; the most sensitive
    blocks stay float, in that order, until the target is met; their convolutions read float weights."""
    import onnx

    from aird.models.export import export_model, int8_unit, quantize_int8
    from aird.models.shipped import shipped_student_path

    graph = export_model(shipped_student_path("fast"), tmp_path / "fast.onnx")
    calibration, held_out = real_faces[:8], real_faces[8:]
    # A target above what the whole int8 graph reaches on these faces (about 0.9998), so some blocks stay float.
    out = quantize_int8(graph, tmp_path / "mixed.onnx", calibration, held_out=held_out, target_cosine=0.99995)
    meta = OnnxEmbedder(out).metadata
    sensitivity, kept = json.loads(meta["int8_sensitivity"]), json.loads(meta["int8_float_units"])
    blocks = {int8_unit(n.name) for n in onnx.load(str(graph)).graph.node if n.op_type == "Conv"}
    assert blocks <= set(sensitivity) and all(0 < c <= 1 for c in sensitivity.values())
    ranked = sorted(sensitivity, key=lambda u: -sensitivity[u])
    assert kept and kept == ranked[: len(kept)]
    reached = float(meta["int8_held_out_cosine"])
    assert reached >= 0.99995 or kept == ranked
    int8 = onnx.load(str(out)).graph
    dequantized = {o for n in int8.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in int8.node:
        if node.op_type == "Conv":
            assert (int8_unit(node.name) in kept) == (node.input[1] not in dequantized), node.name
    # Its embeddings of the held-out faces are as close to the float graph's as it says.
    got, want = OnnxEmbedder(out).embed(held_out), OnnxEmbedder(graph).embed(held_out)
    assert abs(cosine(got, want).mean() - reached) < 1e-4
    with pytest.raises(ModelFileError, match="held-out faces"):
        quantize_int8(graph, tmp_path / "no-held-out.onnx", calibration, target_cosine=0.995)


def test_cli_exports_an_int8_graph_calibrated_on_a_folder_of_crops(real_faces, tmp_path, capsys):
    """`aird export --int8 FACES`: the user's own face crops (any size) calibrate it; a folder with too few
    faces, or not a folder, is a clear error naming it."""
    from PIL import Image

    from aird.cli import MIN_INT8_FACES

    crops = tmp_path / "crops" / "cam1"
    crops.mkdir(parents=True)
    for i in range(MIN_INT8_FACES):  # every face twice, at two sizes: what a camera's detector gives
        face = real_faces[i % len(real_faces)]
        Image.fromarray(face).resize((16 + i % 9, 16 + i % 9)).save(crops / f"{i}.png")
    out = tmp_path / "fast-int8.onnx"
    args = ["export", "--model", "fast", "--out", str(out), "--int8", str(tmp_path / "crops")]
    assert main(args + ["--int8-target-cosine", "0.99995"]) == 0
    text = capsys.readouterr().out
    assert "aird-fast" in text and f"calibrated on {MIN_INT8_FACES // 2} faces" in text and "float blocks:" in text
    int8 = OnnxEmbedder(out)
    assert int8.metadata["quantized"] == "int8" and int8.input_size == 16
    assert json.loads(int8.metadata["int8_float_units"])  # the target keeps the most sensitive block(s) float
    (crops / "0.png").rename(crops / "0.txt")  # one image fewer than needed
    assert main(args) == 2
    assert f"int8 calibration needs at least {MIN_INT8_FACES}" in capsys.readouterr().err
    assert main(args[:-1] + [str(crops / "1.png")]) == 2
    assert "not a folder of face crops" in capsys.readouterr().err


def test_bad_onnx_files_are_clear_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        OnnxEmbedder(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        OnnxEmbedder(junk)
    with pytest.raises(ModelFileError, match="not a readable ONNX file"):
        read_card(junk)
    bare = export_onnx(get_model("lr_light"), tmp_path / "bare.onnx", 16)  # no aird metadata
    with pytest.raises(ModelFileError, match="not a face model exported by 'aird export'"):
        OnnxEmbedder(bare)
    assert read_card(bare) == {}
    with pytest.raises(ModelFileError, match="must end in .onnx"):
        from aird.models.export import export_model

        export_model("lr_light", tmp_path / "x.bin")
    assert main(["export", "--model", "resnet9000", "--out", str(tmp_path / "x.onnx")]) == 2


def test_channels_last_export_computes_what_the_channels_first_one_does(student_file, real_faces, tmp_path, capsys):
    """`aird export` (``--layout nhwc``, the default): the graph reads (batch, H, W, 3) pixels, says so in its metadata, and its
    embedder feeds it so; embeddings match the channels-first graph and PyTorch, float and int8."""
    import onnx

    from aird.models.export import export_model, graph_input, quantize_int8

    out = tmp_path / "nhwc.onnx"
    assert main(["export", "--model", str(student_file), "--out", str(out)]) == 0  # the default
    assert "(nhwc)" in capsys.readouterr().out
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [150, 150, 3] and dims[0].dim_param
    assert main(["export", "--model", str(student_file), "--out", str(tmp_path / "nchw.onnx"), "--layout", "nchw"]) == 0
    nhwc, nchw = OnnxEmbedder(out), OnnxEmbedder(tmp_path / "nchw.onnx")
    assert (nhwc.layout, nchw.layout) == ("nhwc", "nchw") and nhwc.metadata["input"].startswith("(batch, 150, 150, 3)")
    got, want = nhwc.embed(real_faces), load_embedder(str(student_file)).embed(real_faces)
    assert cosine(got, want).min() >= 0.9999 and cosine(got, nchw.embed(real_faces)).min() >= 0.99999
    x = graph_input(real_faces[:2], 150, "nhwc")
    assert x.shape == (2, 150, 150, 3) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x.transpose(0, 3, 1, 2), graph_input(real_faces[:2], 150, "nchw"))
    int8 = OnnxEmbedder(quantize_int8(out, tmp_path / "nhwc-int8.onnx", real_faces[:8]))
    assert int8.layout == "nhwc" and cosine(int8.embed(real_faces[8:]), got[8:]).mean() >= 0.95
    with pytest.raises(ModelFileError, match="input layout 'nwhc'"):
        export_model(student_file, tmp_path / "bad.onnx", layout="nwhc")


def test_folding_the_input_normalization_into_the_stem_is_exact():
    """The exported copy of dlib's ResNet reads raw pixels (its stem convolution holds the normalization):
    the same function, the original untouched; the LR variant, whose stem is padded, is left as it is."""
    model = get_model("dlib_resnet_bn").eval()
    with torch.no_grad():
        model.input_mean.copy_(torch.tensor([122.8, 117.0, 104.0]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = model.with_input_folded()
    x = torch.rand(3, 3, 150, 150) * 255
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    assert folded.input_folded and not model.input_folded and folded.with_input_folded() is folded
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    lr = get_model("dlib_resnet_lr")
    assert lr.with_input_folded() is lr


def test_a_session_that_does_not_spin_embeds_the_same(student_file, real_faces, tmp_path):
    from aird.models.export import export_model

    graph = export_model(student_file, tmp_path / "s.onnx")
    quiet, spinning = OnnxEmbedder(graph, threads=1, spin=False), OnnxEmbedder(graph, threads=1)
    assert not quiet.spin and spinning.spin
    np.testing.assert_array_equal(quiet.embed(real_faces[:4]), spinning.embed(real_faces[:4]))
