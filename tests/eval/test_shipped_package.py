"""benchmarks/shipped.py: packaging a finished run into the shipped student, and checking a run against it."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from aird.models.shipped import read_card
from aird.models.student import file_fingerprint, load_student

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark, small_pairs_file, tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("shipped")


@pytest.fixture(scope="module")
def packaged(bench, data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shipped")
    pairs = small_pairs_file(data_root, tmp / "pairs_small.txt")
    run = tiny_run(tmp / "aird-shipped-all")
    out = tmp / "assets" / "aird_shipped.safetensors"
    common = ["--run", str(run), "--out", str(out), "--pairs-file", str(pairs), "--data-root", str(data_root)]
    assert bench.main(common + ["--docs", str(tmp / "docs"), "--quiet"]) == 0
    return tmp, run, out, common


def test_package_writes_a_float16_file_with_its_card(packaged):
    tmp, run, out, _ = packaged
    card = read_card(out)
    with safe_open(str(out), framework="pt") as fh:
        meta = fh.metadata()
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys()}
    assert meta["model"] == "dlib_resnet_bn" and meta["input_size"] == "150" and "config" in meta
    # A teacher-initialised student keeps its accuracy in float16, so float16 ships: about half the size.
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    assert out.stat().st_size < 12 * 2**20 < (run / "student.safetensors").stat().st_size
    assert card["weights_dtype"] == "float16" and card["fingerprint"] == file_fingerprint(out)
    check = card["dtype_check"]
    assert check["embedding_cosine"]["min"] > 0.999 and set(check["accuracy"]) == {"lr-lr", "hr-lr"}
    assert card["name"] == "aird-shipped" and card["architecture"] == "dlib_resnet_bn" and card["input_size"] == 150
    assert card["colour"] == "RGB" and card["trained_resolutions"] == [8, 12, 16, 20] and card["method"] == "aird"
    assert card["pools"]["celeba"] == {"images": 500, "kept": 480, "dropped_by_leak_filter": 20}
    assert card["lfw"]["lr-lr"] == {"16": 0.93, "12": 0.9, "8": 0.83} and card["lfw"]["hr-lr"]["16"] == 0.95
    assert "configs/shipped.yaml" in card["command"] and card["gallery_model"] == "dlib_resnet"
    assert "LFW" in card["threshold_source"] and card["threshold_res"] == 16
    for mode in ("lr-lr", "hr-lr", "hr-hr"):
        t = card["thresholds"][mode]
        assert -1 < t["1e-2"] <= t["1e-3"] <= 1
        cal = card["threshold_calibration"][mode]
        assert cal["1e-2"]["far"] <= 1e-2 and cal["impostor_pairs"] > 0
    # 27 images: hr-lr scores every ordered pair, the symmetric modes every unordered one.
    calib = card["threshold_calibration"]
    assert calib["hr-lr"]["impostor_pairs"] == 2 * calib["lr-lr"]["impostor_pairs"]
    module, _ = load_student(out)
    assert not module.training and next(module.parameters()).dtype == torch.float32


def test_package_writes_records_and_the_card_page(packaged):
    tmp, _, out, _ = packaged
    doc = json.loads((tmp / "docs" / "results" / "shipped.json").read_text())
    cells = {(r["model"], r["res"], r["pairs"]) for r in doc["records"]}
    models, modes = ("aird-shipped", "dlib_resnet"), ("lr-lr", "hr-lr")
    assert cells == {(m, res, p) for m in models for res in (16, 12) for p in modes}
    student = [r for r in doc["records"] if r["model"] == "aird-shipped"]
    assert all(r["settings"]["fingerprint"] == read_card(out)["fingerprint"] for r in student)
    assert all(r["settings"]["gallery_model"] == "dlib_resnet" for r in student if r["pairs"] == "hr-lr")
    assert doc["command"].startswith("python benchmarks/shipped.py --run")
    page = (tmp / "docs" / "shipped.md").read_text()
    assert read_card(out)["fingerprint"] in page and "aird distill --config configs/shipped.yaml" in page
    assert "| hr-lr |" in page and "bit-exact only on the same CPU" in page
    assert "(records: `results/shipped.json`)" in page  # the page names its own records file


def test_check_reports_match_and_mismatch(bench, packaged, tmp_path, capsys):
    tmp, run, out, common = packaged
    capsys.readouterr()
    assert bench.main(common + ["--check"]) == 0
    assert "MATCH" in capsys.readouterr().out
    other = tiny_run(tmp_path / "other-run", seed=1)  # a run that came out differently
    args = ["--run", str(other), "--out", str(out), "--check"]
    assert bench.main(args) == 1
    text = capsys.readouterr().out
    assert "MISMATCH" in text and "same CPU model with the same thread count" in text
    assert "lr-lr   16   0.9400   0.9300          +1.00" in text  # the LFW figures compared instead
    assert bench.main(["--run", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "config.json" in capsys.readouterr().err
