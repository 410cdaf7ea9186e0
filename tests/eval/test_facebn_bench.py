"""benchmarks/facebn.py end to end on tiny settings: every kind of condition (ORL identification, the
CelebA web domain) runs, each record carries its stream settings, the file names the default, and
the tables hold the per-student summary. A random-weight native-16 px student keeps it fast."""

import json
import sys
from pathlib import Path

import pytest
import torch

from aird.models import get_model
from aird.models.student import save_student

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def facebn():
    return load_benchmark("facebn")


def test_stream_benchmark_runs_orl_and_web(facebn, orl_root, data_pool, tmp_path, monkeypatch):
    root = data_pool("celeba")
    torch.manual_seed(0)
    student = tmp_path / "tiny-run" / "student.safetensors"
    student.parent.mkdir()
    config = json.dumps({"data": {"split": "A", "pools": ["lfw"]}})  # what a run's student file carries
    save_student(student, get_model("lr_light").eval(), "lr_light", 16, method="aird", run="tiny-run", config=config)
    out = tmp_path / "out"
    argv = ["facebn.py", "--student", str(student), "--conditions", "orl:16", "web", "--orders", "grouped"]
    argv += ["--batches", "8", "--modes", "off", "facebn-safe", "--max-faces", "80", "--out", str(out)]
    argv += ["--data-root", str(root)]
    monkeypatch.setattr(sys, "argv", argv)
    facebn.main()
    doc = json.loads((out / "facebn.json").read_text())
    assert doc["default_adapt"] == "facebn-safe"
    streams = {(r["benchmark"], r["adapt"]): r for r in doc["records"] if "@" in r["benchmark"]}
    assert set(streams) == {(f"{c}@grouped/b8", m) for c in ("orl", "web") for m in ("off", "facebn-safe")}
    safe = streams[("web@grouped/b8", "facebn-safe")]["settings"]
    assert safe["adaptation"]["order"] == "grouped" and safe["adaptation"]["test_batch_size"] == 8
    assert safe["web_domain_unseen"] is True  # the student's pools hold no CelebA
    assert "stream_info" in safe["adaptation"] and len(safe["fold_accuracies"]) == 10
    assert streams[("orl@grouped/b8", "facebn-safe")]["settings"]["probe_hits"]  # probe-paired errors
    md = (out / "facebn.md").read_text()
    assert "## web 16 px, tiny-run-student" in md and "The default (`facebn-safe`) against the issue's bar" in md
