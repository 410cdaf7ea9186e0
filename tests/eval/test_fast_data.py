"""benchmarks/fast_data.py: the face sets it compares, the paired table and the per-doubling fit."""

import sys
from pathlib import Path

import numpy as np
import pytest

from aird.distill.data import subsample
from aird.eval.records import make_record

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "distill"))
from tiny import synthetic_set  # noqa: E402


@pytest.fixture(scope="module")
def fast_data():
    return load_benchmark("fast_data")


# what every record here shares: LFW's 6,000 pairs at 16 px, split all
LFW_16 = dict(benchmark="lfw", task="verification", method="aird", adapt="off", res=16, split="all", n=6000)


def record(
    fast_data, model: str, faces: int, pairs: str, folds: list[float], cosines: dict | None = None, budget: int = 12
) -> dict:
    metrics = {"accuracy": float(np.mean(folds))}
    metrics.update({fast_data.agreement_key(k): v for k, v in (cosines or {}).items()})
    settings = {"fold_accuracies": folds, "training_faces": faces, "subsample": faces / 400, "budget_epochs": budget}
    return make_record(**LFW_16, model=model, pairs=pairs, metrics=metrics, settings=settings)


def test_face_sets_split_the_pools_into_seen_and_unseen_faces(fast_data, monkeypatch):
    monkeypatch.setattr(fast_data, "FACES", 5)
    full = synthetic_set(n=40)
    used = subsample(full, 0.25, seed=0)
    lfw = np.zeros((5, 150, 150, 3), np.uint8)
    sets = fast_data.face_sets(full, used, lfw)
    seen = {c.tobytes() for c in used.chips}
    assert all(c.tobytes() in seen for c in sets["trained on"])
    assert not any(c.tobytes() in seen for c in sets["unseen, same pools"])
    assert len(sets["trained on"]) == len(sets["unseen, same pools"]) == 5
    assert sets["LFW test people"] is lfw
    assert "unseen, same pools" not in fast_data.face_sets(full, full, lfw)  # a run on every face has none


def test_table_pairs_each_run_with_the_run_of_its_budget_on_every_face(fast_data):
    folds_full = [0.90, 0.91, 0.89, 0.90, 0.92, 0.88, 0.90, 0.91, 0.89, 0.90]
    folds_half = [a - 0.01 for a in folds_full]
    folds_half[0] -= 0.01  # a paired difference of -1.1 +- 0.1 points
    folds_long = [a + 0.02 for a in folds_full]
    cos = {"trained on": 0.97, "LFW test people": 0.95}
    records = [
        record(fast_data, "fast-data-100", 400, "lr-lr", folds_full, {**cos}),
        record(fast_data, "fast-data-100", 400, "hr-lr", folds_full),
        record(fast_data, "fast-data-50", 200, "lr-lr", folds_half, {**cos, "unseen, same pools": 0.93}),
        record(fast_data, "fast-data-50", 200, "hr-lr", folds_full),
        record(fast_data, "fast-36ep", 400, "lr-lr", folds_long, cos, budget=36),
        record(fast_data, "fast-36ep", 400, "hr-lr", folds_long, budget=36),
        record(fast_data, "fast-data-50-36ep", 200, "lr-lr", folds_full, cos, budget=36),
        record(fast_data, "fast-data-50-36ep", 200, "hr-lr", folds_full, budget=36),
    ]
    lines = fast_data.table(records).splitlines()
    assert lines[2:] == [
        "| fast-data-50 | 12 | 0.5 | 200 | 88.90 | -1.10 ± 0.10 | 90.00 | +0.00 ± 0.00 | 0.9700 | 0.9300 | 0.9500 |",
        "| fast-data-100 | 12 | 1 | 400 | 90.00 |  | 90.00 |  | 0.9700 |  | 0.9500 |",
        "| fast-data-50-36ep | 36 | 0.5 | 200 | 90.00 | -2.00 ± 0.00 | 90.00 | -2.00 ± 0.00 | 0.9700 |  | 0.9500 |",
        "| fast-36ep | 36 | 1 | 400 | 92.00 |  | 92.00 |  | 0.9700 |  | 0.9500 |",
    ]
    assert fast_data.doublings(fast_data.budgets(records)[12]) == ["200 -> 400 faces: +1.10 (+1.10 per doubling)"]
    assert fast_data.doublings(fast_data.budgets(records)[36]) == ["200 -> 400 faces: +2.00 (+2.00 per doubling)"]
    assert fast_data.schedule(records) == ["- 400 faces, 12 -> 36 epochs, 16 px LR-LR: +2.00 ± 0.00."]
