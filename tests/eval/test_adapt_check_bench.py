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
