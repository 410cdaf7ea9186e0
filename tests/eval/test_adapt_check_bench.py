"""benchmarks/adapt_check.py: the split-half figures are each half's paired difference and its error."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark  # noqa: E402


def test_halves_pair_each_half_of_the_stream():
    halves = load_benchmark("adapt_check").halves
    adapted = {"settings": {"probe_hits": "11110000"}}
    off = {"settings": {"probe_hits": "10100101"}}
    (first, first_se), (second, second_se) = halves(adapted, off)
    d = 100 * (np.array([1, 1, 1, 1, 0, 0, 0, 0]) - np.array([1, 0, 1, 0, 0, 1, 0, 1]))
    assert first == pytest.approx(d[:4].mean()) and second == pytest.approx(d[4:].mean())
    assert first_se == pytest.approx(d[:4].std(ddof=1) / 2) and second_se == pytest.approx(d[4:].std(ddof=1) / 2)


def test_gallery_signals_are_read_from_the_two_best_candidates():
    from types import SimpleNamespace as NS

    figures = load_benchmark("gallery_signal").figures

    def result(best, second, status):
        return NS(candidates=[NS(name=best[0], score=best[1]), NS(name=second[0], score=second[1])], status=status)

    gallery = NS(
        search=lambda faces, top_k: [
            result(("ann", 0.9), ("bob", 0.5), "match"),
            result(("bob", 0.6), ("ann", 0.5), "unknown"),
        ]
    )
    got = figures(gallery, [None, None], ["ann", "ann"])
    assert got == pytest.approx({"rank1": 0.5, "best_score": 0.75, "margin": 0.25, "accepted": 0.5})


def test_averaged_embeddings_weigh_the_adapted_pass_and_stay_unit_length():
    from aird.results import FaceResult

    averaged = load_benchmark("gallery_signal").averaged

    def face(source, e):
        return FaceResult(source=source, image=0, found=True, embedding=np.array(e, np.float32))

    adapted, plain = [face("a.png", [1.0, 0.0])], [face("a.png", [0.0, 1.0])]
    assert averaged(adapted, plain, 1.0)[0].embedding == pytest.approx([1.0, 0.0])
    assert averaged(adapted, plain, 0.0)[0].embedding == pytest.approx([0.0, 1.0])
    half = averaged(adapted, plain, 0.7)[0]
    assert half.embedding == pytest.approx(np.array([0.7, 0.3]) / np.hypot(0.7, 0.3))
    assert half.source == "a.png"
    with pytest.raises(RuntimeError, match="differ"):
        averaged(adapted, [face("b.png", [0.0, 1.0])], 0.5)
