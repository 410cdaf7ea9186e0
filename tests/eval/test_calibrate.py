"""Thresholds at named FARs from every impostor pair, checked against brute force."""

import numpy as np
import pytest

from aird.eval.calibrate import far_label, far_thresholds


def brute_force(g, p, ids, symmetric):
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    sim = (g @ p.T).astype(np.float32)
    n = len(ids)
    i, j = np.triu_indices(n, 1) if symmetric else np.nonzero(~np.eye(n, dtype=bool))
    same = ids[i] == ids[j]
    return sim[i, j][~same].astype(np.float64), sim[i, j][same].astype(np.float64)


@pytest.mark.parametrize("symmetric", [True, False])
def test_thresholds_are_the_tightest_within_each_far(symmetric):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30, 300)
    centres = rng.normal(size=(30, 16))
    g = (centres[ids] + rng.normal(size=(300, 16))).astype(np.float32)
    p = g if symmetric else (centres[ids] + rng.normal(size=(300, 16))).astype(np.float32)
    fars = (1e-1, 1e-2, 1e-3)
    got = far_thresholds(g, p, [f"person{k}" for k in ids], fars, symmetric=symmetric, chunk=37)
    impostor, genuine = brute_force(g, p, ids, symmetric)
    assert got["impostor_pairs"] == impostor.size and got["genuine_pairs"] == genuine.size
    assert impostor.size == (300 * 299 // (2 if symmetric else 1)) - genuine.size
    for far in fars:
        cell = got[far_label(far)]
        t = cell["threshold"]
        accepted = (impostor >= t).sum()
        assert accepted <= far * impostor.size  # never above the named FAR
        # Tight: the threshold is the first 5-decimal value above the highest rejected impostor.
        assert t - 1e-5 <= impostor[impostor < t].max()
        assert cell["far"] == pytest.approx(accepted / impostor.size)
        assert cell["tar"] == pytest.approx((genuine >= t).mean())
    assert got["1e-1"]["threshold"] <= got["1e-2"]["threshold"] <= got["1e-3"]["threshold"]


def test_chunking_and_input_checks():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(50, 8)).astype(np.float32)
    ids = [str(k % 5) for k in range(50)]
    assert far_thresholds(g, g, ids, chunk=3) == far_thresholds(g, g, ids, chunk=1000)
    with pytest.raises(ValueError, match="must agree"):
        far_thresholds(g, g[:10], ids)
    with pytest.raises(ValueError, match="at least two people"):
        far_thresholds(g, g, ["same"] * 50)
    with pytest.raises(ValueError, match="far must lie"):
        far_thresholds(g, g, ids, fars=(0.0,))
    assert far_label(1e-3) == "1e-3" and far_label(0.01) == "1e-2"
