"""benchmarks/merge_splits.py: two split runs merged into one 6,000-pair record with ten fold accuracies,
paired against a reference student; a missing run is a clear error."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from aird.eval.metrics import kfold_accuracy
from aird.eval.records import make_record, write_records

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark  # noqa: E402


@pytest.fixture(scope="module")
def merge_splits():
    return load_benchmark("merge_splits")


def write_run(folder: Path, folds: list[int], shift: float, seed: int) -> None:
    """A run as benchmarks/distill.py leaves it: results.json and the 16 px LR-LR per-pair scores."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    labels = np.tile(np.repeat([1, 0], 30), len(folds))
    scores = rng.normal(0.0, 1.0, len(labels)) + labels * (1.5 + shift)
    fold_ids = np.repeat(folds, 60)
    np.savez(folder / "scores-16-lr-lr.npz", scores=scores, labels=labels, folds=fold_ids)
    rec = make_record(
        benchmark="lfw",
        task="verification",
        model=folder.name,
        method="aird",
        adapt="off",
        res=16,
        pairs="lr-lr",
        split="A" if folds[0] == 1 else "B",
        n=len(labels),
        metrics={"accuracy": 0.5},
        settings={"experiment": {"name": folder.name}},
    )
    write_records(folder / "results.json", [rec], "test")


def test_merges_both_splits_and_pairs_against_the_reference(merge_splits, tmp_path, capsys):
    for name, shift in (("base", 0.0), ("better", 1.0)):
        write_run(tmp_path / f"{name}-A", [1, 2, 3, 4, 5], shift, seed=1)
        write_run(tmp_path / f"{name}-B", [6, 7, 8, 9, 10], shift, seed=2)
    out = tmp_path / "merged.json"
    argv = [
        "--student",
        f"base={tmp_path / 'base-A'},{tmp_path / 'base-B'}",
        "--student",
        f"better={tmp_path / 'better-A'},{tmp_path / 'better-B'}",
        "--reference",
        "base",
        "--out",
        str(out),
    ]
    assert merge_splits.main(argv) == 0
    records = {r["model"]: r for r in json.loads(out.read_text())["records"]}
    assert set(records) == {"base", "better"}
    base = records["base"]
    assert base["split"] == "all" and base["n"] == 600 and len(base["settings"]["fold_accuracies"]) == 10
    with np.load(tmp_path / "base-A" / "scores-16-lr-lr.npz") as z:
        first_five = kfold_accuracy(z["scores"], z["labels"], z["folds"])["fold_accuracies"]
    assert base["settings"]["fold_accuracies"][:5] == pytest.approx(first_five)
    assert base["metrics"]["accuracy"] == pytest.approx(np.mean(base["settings"]["fold_accuracies"]))
    # the same noise with wider-apart classes: better on every fold, and the paired table says so
    diffs = np.subtract(records["better"]["settings"]["fold_accuracies"], base["settings"]["fold_accuracies"])
    assert (diffs >= 0).all() and diffs.mean() > 0
    table = out.with_suffix(".md").read_text()
    assert f"| better | +{100 * diffs.mean():.2f} ± " in table
    assert "merge_splits.py" in json.loads(out.read_text())["command"]


def test_a_run_without_results_is_a_clear_error(merge_splits, tmp_path):
    write_run(tmp_path / "a", [1, 2, 3, 4, 5], 0.0, seed=1)
    with pytest.raises(SystemExit, match=r"no results.json.*split-B"):
        merge_splits.main(
            [
                "--student",
                f"x={tmp_path / 'a'},{tmp_path / 'missing'}",
                "--reference",
                "x",
                "--out",
                str(tmp_path / "o.json"),
            ]
        )
