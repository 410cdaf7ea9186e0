"""benchmarks/facebn_anchor.py's label-free signals, on a toy model (the study itself runs on real faces)."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark  # noqa: E402


def test_the_tail_divergence_is_zero_on_training_statistics_and_grows_with_a_shift():
    """facebn_anchor.py's second signal: the deep BN layers' inputs against their running statistics."""
    study = load_benchmark("facebn_anchor")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(6),
        torch.nn.BatchNorm1d(6),
    )
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (256, 8, 8, 3), dtype=np.uint8)
    model.train()
    with torch.no_grad():  # running statistics = these faces' own (momentum 1: one full batch)
        for bn in (model[1], model[4]):
            bn.momentum = 1.0
        model(torch.from_numpy(faces).permute(0, 3, 1, 2).float())
    model.eval()
    # depth 0.5 of 2 layers: only the last (BatchNorm1d) is the tail
    same = study.tail_divergence(model, faces, 8, depth=0.5)
    shifted = study.tail_divergence(model, np.clip(faces.astype(int) + 60, 0, 255).astype(np.uint8), 8, depth=0.5)
    assert 0 <= same < 1e-3 < shifted


def test_the_flip_margin_rewards_mirror_agreement_not_collapse():
    """facebn_anchor.py's third signal: a face's agreement with its mirror, less its agreement with other faces."""
    study = load_benchmark("facebn_anchor")
    e = np.eye(4, dtype=np.float32)  # four faces, mutually orthogonal
    assert study.flip_signals(e, e) == {"flip_agreement": 1.0, "flip_margin": 1.0}
    mirrored = np.roll(e, 1, axis=0)  # each face's mirror looks like another face
    assert study.flip_signals(e, mirrored)["flip_margin"] == 0.0
    collapsed = np.ones((4, 4), dtype=np.float32) / 2  # every face one vector: full agreement, no margin
    signals = study.flip_signals(collapsed, collapsed)
    assert signals["flip_agreement"] == 1.0 and abs(signals["flip_margin"]) < 1e-6
