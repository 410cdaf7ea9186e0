"""benchmarks/loss_curve.py: per-epoch means from a run's log, the share of the fall its last epoch took,
the JSON and the figure; a directory without a log is a clear error."""

import json
import sys
from pathlib import Path

import pytest

from aird.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark  # noqa: E402


@pytest.fixture(scope="module")
def loss_curve():
    return load_benchmark("loss_curve")


def write_run(folder: Path, totals: list[float]) -> Path:
    folder.mkdir(parents=True)
    lines = []
    for epoch, total in enumerate(totals):
        for k, jitter in enumerate((-0.1, 0.1)):  # two logged steps per epoch, mean = total
            step = {"step": 10 * (2 * epoch + k + 1), "epoch": epoch, "loss": total + jitter, "cls": 2 * total}
            lines.append(json.dumps({**step, "ild": total / 2, "rld": 0.1, "lr": 0.01, "elapsed_s": 1.0}))
    lines.append(json.dumps({"event": "saved"}))  # not a step: ignored
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "config.json").write_text(json.dumps({"name": folder.name, "train": {"epochs": len(totals)}}))
    return folder


def test_epoch_means_and_last_epoch_share(loss_curve, tmp_path):
    run = write_run(tmp_path / "r", [3.0, 2.0, 1.5, 1.4])
    means = loss_curve.epoch_means(run)
    assert means["loss"] == pytest.approx([3.0, 2.0, 1.5, 1.4]) and means["cls"] == pytest.approx([6.0, 4.0, 3.0, 2.8])
    assert loss_curve.last_epoch_share(means["loss"]) == pytest.approx(0.1 / 1.6)
    assert loss_curve.last_epoch_share([1.0, 1.2]) is None  # it never fell


def test_main_writes_json_and_png(loss_curve, tmp_path, monkeypatch, capsys):
    a, b = write_run(tmp_path / "a", [3.0, 2.0, 1.9]), write_run(tmp_path / "b", [2.0, 1.0, 1.01])
    out = tmp_path / "out" / "curve"
    monkeypatch.setattr(sys, "argv", ["loss_curve.py", "--run", str(a), "--run", str(b), "--out", str(out)])
    loss_curve.main()
    doc = json.loads(out.with_suffix(".json").read_text())
    assert set(doc["runs"]) == {"a", "b"} and doc["command"].startswith("python benchmarks/loss_curve.py")
    assert doc["runs"]["a"]["last_epoch_share_of_fall"] == pytest.approx(0.1 / 1.1)
    assert doc["runs"]["b"]["config"]["train"]["epochs"] == 3
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "rose" in capsys.readouterr().out  # run b's last epoch went up: said, not hidden


def test_a_folder_without_a_log_is_a_clear_error(loss_curve, tmp_path):
    with pytest.raises(ConfigError, match="no log.jsonl"):
        loss_curve.epoch_means(tmp_path)
