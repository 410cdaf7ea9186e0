"""``aird compare``: a student beside the HR teacher on LFW, one table, records written."""

import json
import sys
from pathlib import Path

import pytest

from aird.cli import main
from aird.eval.compare import comparison_table
from aird.eval.records import make_record
from aird.models import shipped

sys.path.insert(0, str(Path(__file__).parent))
from small_run import small_pairs_file, tiny_run  # noqa: E402


def _rec(model, method, res, pairs, acc, tar):
    return make_record(
        benchmark="lfw",
        task="verification",
        model=model,
        method=method,
        adapt="off",
        res=res,
        pairs=pairs,
        split="all",
        n=6000,
        metrics={"accuracy": acc, "tar@far=1e-3": tar},
        settings={},
    )


def test_comparison_table_puts_teacher_and_student_side_by_side():
    records = [
        _rec("dlib_resnet", "teacher", 16, "lr-lr", 0.8933, 0.2),
        _rec("aird-shipped", "aird", 16, "lr-lr", 0.9328, 0.5),
        _rec("dlib_resnet", "teacher", 12, "hr-lr", 0.8228, 0.1),
        _rec("aird-shipped", "aird", 12, "hr-lr", 0.9247, 0.4),
    ]
    table = comparison_table(records)
    assert "6,000 pairs" in table and "teacher = dlib_resnet" in table and "student = aird-shipped" in table
    assert "| 16 | lr-lr | 89.33 | 93.28 | +3.95 | 20.00 | 50.00 |" in table
    assert "| 12 | hr-lr | 82.28 | 92.47 | +10.19 | 10.00 | 40.00 |" in table
    with pytest.raises(ValueError, match="teacher and student"):
        comparison_table(records[:1])


def test_compare_cli_on_real_pairs(data_root, tmp_path, capsys, monkeypatch):
    pairs = small_pairs_file(data_root, tmp_path / "pairs_small.txt")
    run = tiny_run(tmp_path / "run")
    out = tmp_path / "compare.json"
    # Without --model: the shipped student (here the tiny run's file stands in for it).
    monkeypatch.setattr(shipped, "SHIPPED_PATH", run / "student.safetensors")
    base = ["compare", "--pairs-file", str(pairs), "--data-root", str(data_root), "--quiet"]
    assert main(base + ["--out", str(out), "--res", "16", "12"]) == 0
    text = capsys.readouterr().out
    assert "| 16 | lr-lr |" in text and "| 12 | hr-lr |" in text and "teacher = dlib_resnet" in text
    doc = json.loads(out.read_text())
    cells = {(r["model"], r["res"], r["pairs"]): r for r in doc["records"]}
    assert len(cells) == 8 and doc["command"].startswith("aird compare")
    for res in (16, 12):
        for mode in ("lr-lr", "hr-lr"):
            # named by its run (folder), not by the file's stem that every run's student shares
            teacher, student = cells["dlib_resnet", res, mode], cells["run", res, mode]
            assert teacher["method"] == "teacher" and student["method"] == "student"
            assert teacher["n"] == student["n"] == 16 and student["split"] == "custom:pairs_small.txt"
            assert student["settings"]["degradation"]["out_size"] == 150
    # hr-lr: the student's HR side is the teacher, as deployed.
    assert cells["run", 16, "hr-lr"]["settings"]["gallery_model"] == "dlib_resnet"
    assert cells["run", 16, "hr-lr"]["settings"]["student_file"].endswith("student.safetensors")
    # The same student exported to ONNX: the other backend gives the same figures.
    graph = tmp_path / "student.onnx"
    assert main(["export", "--model", str(run / "student.safetensors"), "--out", str(graph)]) == 0
    onnx_out = tmp_path / "compare-onnx.json"
    onnx_args = ["--model", str(graph), "--res", "16", "--pairs", "hr-lr", "--out", str(onnx_out)]
    assert main(base + onnx_args) == 0
    (rec,) = [r for r in json.loads(onnx_out.read_text())["records"] if r["model"] == "student"]
    assert rec["settings"]["model_fingerprint"].startswith("student-onnx-")
    assert rec["metrics"]["accuracy"] == cells["run", 16, "hr-lr"]["metrics"]["accuracy"]
    # A missing student is one clear line.
    assert main(["compare", "--model", str(tmp_path / "none.safetensors"), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err
