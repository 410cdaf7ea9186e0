"""benchmarks/centering.py: the centred cosine and its table (the study itself runs on real faces)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from aird.eval.records import make_record

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark  # noqa: E402


@pytest.fixture(scope="module")
def centering():
    return load_benchmark("centering")


def test_centring_removes_the_shared_part_of_a_cone(centering):
    rng = np.random.default_rng(0)
    shared = np.zeros(64)
    shared[0] = 3.0
    faces = shared + rng.normal(0, 1, (200, 64)) / 8  # 200 people around one shared direction
    mean = centering.unit(faces).mean(0)
    out = centering.centred(faces, mean)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)

    def mean_pair_cosine(x: np.ndarray) -> float:
        c = x @ x.T
        return float(c[~np.eye(len(x), dtype=bool)].mean())

    assert mean_pair_cosine(centering.unit(faces)) > 0.8  # the cone: any two faces look alike
    assert abs(mean_pair_cosine(out)) < 0.05  # centred, two people are as unrelated as random vectors


def record(model: str, hits: str) -> dict:
    return make_record(
        benchmark="orl",
        task="identification",
        model=model,
        method="aird",
        adapt="off",
        res=16,
        pairs=None,
        split="all",
        n=len(hits),
        metrics={"rank1": hits.count("1") / len(hits)},
        settings={"probe_hits": hits},
    )


def test_table_pairs_each_student_with_its_centred_scores(centering):
    lines = centering.table([record("s", "1100"), record("s+centred", "1110")])
    assert lines[2] == "| s | ORL 16 px (teacher's HR gallery) | 50.00% | 75.00% | +25.00 ± 25.00 | — |"
