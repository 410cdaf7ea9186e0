"""Result files lose nothing: concurrent merges all land, students of different runs keep their own
records, and a finished evaluation is printed before its record is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from aird.cli import main
from aird.errors import DataError, OutputError
from aird.eval.records import load_records, make_record, write_records
from aird.models import get_model
from aird.models.load import load_embedder
from aird.models.student import save_student

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from aird.eval.records import write_records

    path, proc, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    while not go.exists():  # start together, so the merges overlap
        time.sleep(0.005)
    for i in range(40):
        record = dict(benchmark="lfw", task="verification", model=f"m{proc}-{i}", method="aird", adapt="off",
                      res=16, pairs="lr-lr", split="all", n=10, metrics={"accuracy": 0.9}, settings={})
        # top: a top-level key set in the same locked write (benchmarks/facebn.py names its default so)
        write_records(path, [record], command=f"writer {proc}", top={"default_adapt": "facebn-safe"})
    """
)


@pytest.mark.slow
def test_concurrent_writers_all_land(tmp_path):
    """4 processes x 40 merges into one file, each also setting a top-level key: all 160 records land."""
    path, go = tmp_path / "results.json", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(p), str(go)], env=env, stderr=subprocess.PIPE)
        for p in range(4)
    ]
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    models = sorted(r["model"] for r in load_records(path))
    assert models == sorted(f"m{p}-{i}" for p in range(4) for i in range(40))
    assert json.loads(path.read_text())["default_adapt"] == "facebn-safe"


def _student(path: Path, shift: float, **meta: str) -> Path:
    model = get_model("lr_light")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(shift)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_student(path, model, "lr_light", 16, **meta)
    return path


def _record(embedder=None, **over) -> dict:
    fields = dict(
        benchmark="lfw",
        task="verification",
        model=embedder.name if embedder else "some-model",
        method=embedder.method if embedder else "aird",
        adapt="off",
        res=16,
        pairs="lr-lr",
        split="all",
        n=6000,
        metrics={"accuracy": 0.9},
        settings={},
    )
    return make_record(**{**fields, **over})


def test_students_are_named_by_run_and_weights_with_their_method(tmp_path):
    a = load_embedder(str(_student(tmp_path / "runs/aird-A/student.safetensors", 0.01, method="aird", run="aird-A")))
    b = load_embedder(str(_student(tmp_path / "runs/aird-B/student.safetensors", 0.02, method="aird", run="aird-B")))
    assert a.name.startswith("aird-A@") and b.name.startswith("aird-B@") and a.method == b.method == "aird"
    # The same run name with other weights is still another model.
    c = load_embedder(str(_student(tmp_path / "elsewhere/student.safetensors", 0.03, method="kd", run="aird-A")))
    assert c.name.startswith("aird-A@") and c.name != a.name and c.method == "kd"
    path = tmp_path / "eval.json"
    write_records(path, [_record(a)], "eval A")
    write_records(path, [_record(b)], "eval B")
    assert [(r["model"], r["method"]) for r in load_records(path)] == [(a.name, "aird"), (b.name, "aird")]


def test_an_older_student_file_is_never_reported_as_the_teacher(tmp_path):
    bare = load_embedder(str(_student(tmp_path / "old-run/student.safetensors", 0.01)))
    assert bare.name.startswith("old-run@") and bare.method == "unknown"
    # Files from earlier 'aird distill' versions hold their experiment config: its method is used.
    cfg = json.dumps({"name": "aird", "method": "feature-l2"})
    older = load_embedder(str(_student(tmp_path / "fl2-A/student.safetensors", 0.02, config=cfg)))
    assert older.name.startswith("fl2-A@") and older.method == "feature-l2"


def test_a_corrupt_results_file_is_an_error_naming_it_before_any_work(tmp_path, capsys, one_error_line, monkeypatch):
    out = tmp_path / "eval.json"
    out.write_text('{"records": [')
    monkeypatch.setattr("aird.models.load.load_embedder", lambda *a, **k: pytest.fail("evaluated anyway"))
    assert main(["eval", "--out", str(out), "--data-root", str(tmp_path / "nowhere"), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "not valid JSON" in line
    assert out.read_text() == '{"records": ['  # never silently replaced
    with pytest.raises(DataError, match="eval.json"):
        write_records(out, [_record()], "cmd")


@pytest.mark.parametrize("kind", ["directory", "parent-is-file"])
def test_an_out_that_cannot_be_a_file_is_refused_before_any_work(tmp_path, capsys, one_error_line, kind, monkeypatch):
    out = tmp_path / "results"
    if kind == "directory":
        out.mkdir()
    else:
        out.write_text("a file")
        out = out / "eval.json"
    monkeypatch.setattr("aird.models.load.load_embedder", lambda *a, **k: pytest.fail("evaluated anyway"))
    assert main(["eval", "--out", str(out), "--data-root", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert str(tmp_path / "results") in one_error_line(capsys.readouterr().err)


def test_a_read_only_out_is_refused_before_any_work(tmp_path, capsys, one_error_line, monkeypatch):
    out = tmp_path / "eval.json"
    write_records(out, [_record()], "cmd")
    out.chmod(0o444)
    if os.geteuid() == 0:  # root writes anyway: let the check see what a user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(out) else real(p, mode))
    monkeypatch.setattr("aird.models.load.load_embedder", lambda *a, **k: pytest.fail("evaluated anyway"))
    assert main(["eval", "--out", str(out), "--data-root", str(tmp_path / "nowhere"), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "read-only" in line


def _break(kind: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make writing ``out`` fail the way ``kind`` says, after the up-front checks passed."""
    if kind == "unwritable":

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(os, "replace", refuse)
    elif kind == "corrupt":
        out.write_text("{not json")
    else:
        out.mkdir()


@pytest.mark.parametrize("kind", ["unwritable", "corrupt", "directory"])
def test_figures_are_printed_before_the_record_and_a_failed_write_says_so(
    fake_lfw, cache, tmp_path, capsys, one_error_line, monkeypatch, kind
):
    """The results file goes bad during the evaluation: the figures are on screen, the error is one line."""
    import aird.eval.runner as runner

    out = tmp_path / "eval.json"
    real = runner.run_verification

    def run_then_break(*args, **kwargs):
        result = real(*args, **kwargs)
        _break(kind, out, monkeypatch)
        return result

    monkeypatch.setattr(runner, "run_verification", run_then_break)
    student = _student(tmp_path / "run/student.safetensors", 0.01)
    argv = ["eval", "--model", str(student), "--data-root", str(fake_lfw), "--folds", "1-2", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "accuracy" in captured.out and "auc" in captured.out
    line = one_error_line(captured.err)
    assert str(out) in line and "figures above were not saved" in line


def test_write_failures_are_output_errors_naming_the_file(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match=r"eval\.json: cannot write \(Permission denied\)"):
        write_records(tmp_path / "eval.json", [_record()], "cmd")
    assert not (tmp_path / "eval.json").exists()


def test_two_splits_students_evaluated_into_one_file_keep_both_records(fake_lfw, cache, tmp_path):
    """End to end: split A's and split B's students, each file named student.safetensors."""
    out = tmp_path / "eval.json"
    for split, shift in (("A", 0.01), ("B", 0.02)):
        student = _student(
            tmp_path / f"runs/aird-{split}/student.safetensors", shift, method="aird", run=f"aird-{split}"
        )
        argv = ["eval", "--model", str(student), "--data-root", str(fake_lfw), "--folds", "1-2", "--out", str(out)]
        assert main([*argv, "--quiet"]) == 0
    records = load_records(out)
    assert [r["model"].split("@")[0] for r in records] == ["aird-A", "aird-B"]
    assert {r["method"] for r in records} == {"aird"}
