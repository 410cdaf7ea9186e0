"""benchmarks/fast_ablation.py: one row per run, with its ORL and monochrome-LFW figures where the run has them."""

import json
import sys
from pathlib import Path

import pytest

from aird.eval.records import make_record, write_records

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark  # noqa: E402

EXPERIMENT = {
    "student": {"model": "lr_resnet", "input_size": 16},
    "losses": {"ild": {}},
    "train": {"epochs": 36},
    "bridge": {"student": "shipped"},
}


@pytest.fixture(scope="module")
def fast_ablation():
    return load_benchmark("fast_ablation")


def lfw(accuracy: float, grey: bool) -> dict:
    settings = {"degradation": {"res": 16, "grayscale": grey}}
    if not grey:
        settings.update(experiment=EXPERIMENT, train_wall_s=600.0)
    return make_record(
        benchmark="lfw-shift:grayscale" if grey else "lfw",
        task="verification",
        model="aird-fast",
        method="aird",
        adapt="off",
        res=16,
        pairs="lr-lr",
        split="all",
        n=6000,
        metrics={"accuracy": accuracy, "tar@far=1e-3": 0.3},
        settings=settings,
    )


def test_rows_read_the_grey_record_apart_from_the_colour_one(fast_ablation, tmp_path):
    full, bare = tmp_path / "full", tmp_path / "bare"
    for run in (full, bare):
        run.mkdir()
        write_records(run / "results.json", [lfw(0.89, False)], "aird distill", merge=False)
    write_records(full / "grey.json", [lfw(0.84, True)], "aird eval --grayscale", merge=False)
    out = tmp_path / "ablation.json"
    assert fast_ablation.main(["--run", f"a={full}", "--run", f"b={bare}", "--out", str(out)]) == 0
    table = out.with_suffix(".md").read_text()
    assert (
        "| a | `lr_resnet` | 16 | shipped student (bridge) | 36 | no | no | 89.00 | 84.00 | 30.00 | — | — | 10 |"
        in table
    )
    assert (
        "| b | `lr_resnet` | 16 | shipped student (bridge) | 36 | no | no | 89.00 | — | 30.00 | — | — | 10 |" in table
    )
    assert len(json.loads(out.read_text())["records"]) == 3
