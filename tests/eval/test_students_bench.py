"""benchmarks/students.py and benchmarks/tsne.py on tiny settings: the records, the table, the figures,
and clear errors. Real faces (a 16-pair LFW file, three ORL people); tiny models (the teacher and a
random-init native-16 px student), one repeat: the figures themselves are not checked, their shape is."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aird.errors import ConfigError
from aird.eval.compare import named_students, split_student_spec, with_shipped
from aird.eval.records import load_records
from aird.models import get_model
from aird.models.shipped import SHIPPED_PATH
from aird.models.student import save_student

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark, small_pairs_file  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def light_student(path: Path, seed: int, card: dict | None = None) -> Path:
    torch.manual_seed(seed)
    meta = {"card": json.dumps(card)} if card else {}
    save_student(path, get_model("lr_light").eval(), "lr_light", 16, method="none", run=path.parent.name, **meta)
    return path


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("students")
    (tmp / "run-a").mkdir()
    main = light_student(tmp / "run-a" / "student.safetensors", 0)
    fast = light_student(tmp / "fast.safetensors", 1, card={"name": "carded"})
    return tmp, main, fast


def test_named_students(students):
    _, main, fast = students
    named = named_students([str(main), str(fast), f"other={fast}"])
    # the run folder of a student.safetensors, the card's name, the given name
    assert list(named) == ["run-a", "carded", "other"]
    assert named["other"].path == fast and named["run-a"].embedder.input_size == 16
    with pytest.raises(ConfigError, match="two students named 'carded'"):
        named_students([str(fast), str(fast)])
    assert split_student_spec("a=b/c.safetensors") == ("a", Path("b/c.safetensors"))
    assert split_student_spec("runs/x=1/student.safetensors") == (None, Path("runs/x=1/student.safetensors"))
    # the shipped student joins, first, unless it is given already (under any name)
    assert with_shipped([f"f={fast}"]) == [str(SHIPPED_PATH), f"f={fast}"]
    assert with_shipped([f"f={fast}", f"s={SHIPPED_PATH}"]) == [f"f={fast}", f"s={SHIPPED_PATH}"]


@pytest.fixture(scope="module")
def bench_run(students, data_root):
    tmp, main, fast = students
    pairs = small_pairs_file(data_root, tmp / "pairs_small.txt")
    out = tmp / "results"
    argv = [
        "--teacher", "--no-shipped", "--student", f"main={main}", "--student", f"fast={fast}", "--onnx", "fast",
        "--main", "main",
        "--pairs-file", str(pairs), "--data-root", str(data_root), "--threads", "1", "--speed-faces", "64",
        "--repeats", "1", "--latency-faces", "4", "--out", str(out), "--quiet",
    ]  # fmt: skip
    bench = load_benchmark("students")
    assert bench.main(argv) == 0
    return bench, out, argv


def test_students_records(bench_run):
    _, out, _ = bench_run
    doc = json.loads((out / "students.json").read_text())
    assert doc["command"].startswith("python benchmarks/students.py --teacher")
    records = load_records(out / "students.json")
    cells = {(r["model"], r["res"], r["pairs"]) for r in records}
    full = {(16, "lr-lr"), (12, "lr-lr"), (8, "lr-lr"), (16, "hr-lr")}
    assert cells == {(m, *c) for m in ("dlib_resnet", "main", "fast") for c in full} | {("fast-onnx", 16, "lr-lr")}
    by_model: dict[str, list] = {}
    for r in records:
        by_model.setdefault(r["model"], []).append(r)
        assert r["benchmark"] == "lfw" and r["task"] == "verification" and r["n"] == 16
        assert r["split"] == "custom:pairs_small.txt"
        assert {"accuracy", "tar@far=1e-3", "faces_per_s", "p50_ms"} <= set(r["metrics"])
        # one accuracy per fold, averaging to the record's: any two models can be paired over the folds
        folds = r["settings"]["fold_accuracies"]
        assert len(folds) == len(r["settings"]["folds"]) >= 2
        assert np.mean(folds) == pytest.approx(r["metrics"]["accuracy"])
        speed = r["settings"]["speed"]
        assert speed["main"] == "main" and speed["threads"] == 1 and speed["batch_size"] == 64 and speed["res"] == 16
    for model, recs in by_model.items():
        # one speed figure per model, on every one of its records
        assert len({r["metrics"]["faces_per_s"] for r in recs}) == 1, model
    assert {r["method"] for r in by_model["dlib_resnet"]} == {"teacher"}
    assert {r["method"] for r in by_model["main"]} == {"none"}
    assert by_model["main"][0]["settings"]["speed"]["ratio_to_main"] == 1.0
    fast, onnx = by_model["fast"][0], by_model["fast-onnx"][0]
    assert fast["settings"]["speed"]["backend"] == "torch" and onnx["settings"]["speed"]["backend"] == "onnxruntime"
    assert onnx["settings"]["onnx_parity_min_cosine"] > 0.9999
    # the graph computes what the module computes: the same pairs, the same accuracy
    fast16 = next(r for r in by_model["fast"] if r["res"] == 16 and r["pairs"] == "lr-lr")
    assert onnx["metrics"]["accuracy"] == fast16["metrics"]["accuracy"]
    hr = next(r for r in by_model["fast"] if r["pairs"] == "hr-lr")
    assert hr["settings"]["gallery_model"] == "dlib_resnet"


def test_students_table_and_plot(bench_run):
    _, out, _ = bench_run
    assert (out / "students.png").read_bytes().startswith(PNG)
    md = (out / "students.md").read_text()
    for model in ("dlib_resnet", "main", "fast", "fast-onnx"):
        assert f"| {model} |" in md
    assert "16 px lr-lr | 12 px lr-lr | 8 px lr-lr | 16 px hr-lr" in md and "students.png" in md
    paired = md[md.index("minus `main`, paired over the folds") :]
    assert "| model | lr-lr 16 px |" in paired and "| fast | " in paired and "| dlib_resnet | " in paired


def test_students_speed_only_with_the_shipped_student_by_default(bench_run, students, tmp_path, capsys):
    """Without --no-shipped the shipped student is in, first, and the main one; --speed-only writes nothing."""
    bench, _, argv = bench_run
    _, _, fast = students
    common = argv[argv.index("--pairs-file") :]
    common[common.index("--out") + 1] = str(tmp_path / "none")
    assert bench.main(["--student", f"fast={fast}", "--speed-only"] + common) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| model", "| aird-shipped", "| fast"]
    shipped = rows[1].split(" | ")
    assert shipped[1] == "torch" and shipped[2] == "150" and shipped[4] == "1.00"  # input px; x main
    assert not (tmp_path / "none").exists()


def test_students_errors(bench_run, tmp_path, capsys):
    bench, _, argv = bench_run
    base = ["--no-shipped"] + argv[argv.index("--pairs-file") :]
    main_file = argv[argv.index("--student") + 1].split("=", 1)[1]
    assert bench.main(["--student", main_file, "--onnx", "nobody"] + base) == 2
    assert "--onnx 'nobody' is not one of the students" in capsys.readouterr().err
    assert bench.main(["--student", main_file, "--main", "nobody"] + base) == 2
    assert "--main 'nobody'" in capsys.readouterr().err
    assert bench.main(["--student", "/nonexistent/student.safetensors"] + base) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--student", main_file, "--res", "12", "--speed-res", "16"] + base)
    (tmp_path / "students.json").mkdir()  # the results file cannot be written: said before any work
    assert bench.main(["--student", main_file] + base + ["--out", str(tmp_path)]) == 2
    assert "is a folder, not a results file" in capsys.readouterr().err


def test_tsne(students, orl_root, tmp_path, capsys):
    _, main, fast = students
    out = tmp_path / "results"
    tsne = load_benchmark("tsne")
    common = ["--data-root", str(orl_root), "--threads", "1", "--out", str(out), "--quiet"]
    common = ["--no-shipped"] + common
    argv = ["--student", f"main={main}", "--student", f"fast={fast}", "--people", "s1", "s2", "s3"] + common
    assert tsne.main(argv) == 0
    records = load_records(out / "tsne.json")
    assert [r["model"] for r in records] == ["dlib_resnet", "main", "fast"]
    assert [r["method"] for r in records] == ["teacher", "none", "none"]
    for r in records:
        s = r["settings"]
        assert r["benchmark"] == "orl-loo" and r["task"] == "identification" and r["pairs"] is None
        assert r["n"] == 30 and r["res"] == 16 and r["split"] == "people:s1,s2,s3"
        assert 0 <= r["metrics"]["rank1"] <= 1 and -1 <= s["silhouette"] <= 1 and -1 <= s["silhouette_map"] <= 1
        assert len(s["xy"]) == 30 and all(len(p) == 2 for p in s["xy"])
        assert s["labels"] == [p for p in ("s1", "s2", "s3") for _ in range(10)]
        assert s["tsne"]["perplexity"] < 10  # clipped under a third of the 30 points
    # the teacher tells three ORL people apart at 16 px far above chance (1 in 3)
    assert records[0]["metrics"]["rank1"] > 0.8
    assert (out / "tsne.png").read_bytes().startswith(PNG)
    assert tsne.main(["--student", str(main), "--people", "s1", "s99"] + common) == 2
    assert "'s99' is not an ORL person" in capsys.readouterr().err
    assert tsne.main(["--student", f"dlib_resnet={main}", "--people", "s1", "s2"] + common) == 2
    assert "the teacher's panel" in capsys.readouterr().err


def test_tsne_loo_nearest_neighbour():
    import numpy as np

    tsne = load_benchmark("tsne")
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.2]])
    labels = np.array(["a", "a", "b", "b", "b"])
    # the last "b" sits among the "a"s: its nearest other face is an "a"
    assert tsne.loo_nearest_neighbour(emb, labels) == pytest.approx(4 / 5)
