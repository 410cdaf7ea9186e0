import sys
from pathlib import Path

import numpy as np
import pytest

from aird.data.extra import celeba_items, utkface_items
from aird.distill.config import DataConfig
from aird.distill.data import leak_filter, subsample
from aird.errors import ConfigError, DataError

sys.path.insert(0, str(Path(__file__).parent))
from tiny import synthetic_set  # noqa: E402


def test_leak_filter_drops_images_close_to_a_test_person():
    rng = np.random.default_rng(0)
    test = rng.normal(size=(50, 16))
    extra = np.vstack([test[3] + 0.01 * rng.normal(size=16), rng.normal(size=(20, 16))])
    keep = leak_filter(extra, test, threshold=0.95, chunk=7)
    assert not keep[0] and keep[1:].all()
    assert leak_filter(np.zeros((0, 16)), test, 0.95).shape == (0,)


@pytest.mark.data
def test_extra_pools_read(data_root):
    paths, labels = celeba_items(data_root)
    assert len(paths) == 9682 and len(set(labels)) == 5262 and labels[0].startswith("celeba:")
    assert len(utkface_items(data_root)) == 9780


def test_missing_pools_say_where(tmp_path):
    with pytest.raises(DataError, match="identity.txt"):
        celeba_items(tmp_path)
    with pytest.raises(DataError, match="UTKFace folder not found"):
        utkface_items(tmp_path)


def test_subsample_keeps_a_seeded_share_and_renumbers_people():
    data = synthetic_set(n=40, classes=8)
    data.labels[::5] = -1  # unlabelled faces, as UTKFace's
    half = subsample(data, 0.5, seed=3)
    assert len(half) == 20
    assert half.digests == subsample(data, 0.5, seed=3).digests  # every process draws the same faces
    assert half.digests != subsample(data, 0.5, seed=4).digests
    kept = [data.digests.index(d) for d in half.digests]
    assert kept == sorted(kept)
    np.testing.assert_array_equal(half.teacher, data.teacher[kept])
    np.testing.assert_array_equal(half.chips, data.chips[kept])
    # each kept face keeps its person, under that person's new number; the unlabelled stay unlabelled
    for new, old in zip(half.labels, data.labels[kept]):
        assert (new < 0) == (old < 0)
        if new >= 0:
            assert half.identities[new] == data.identities[old]
    assert set(half.labels[half.labels >= 0]) == set(range(half.num_classes))
    assert half.report["subsample"] == {"share": 0.5, "seed": 3, "images_before": 40, "identities_before": 8}
    assert half.report["images"] == 20
    assert subsample(data, 1.0, seed=3) is data


def test_subsample_share_is_checked():
    with pytest.raises(ConfigError, match=r"data\.subsample"):
        DataConfig(subsample=0)
    with pytest.raises(ConfigError, match=r"data\.subsample"):
        DataConfig(subsample=1.5)
