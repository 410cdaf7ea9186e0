import numpy as np
import pytest

from aird.data.extra import celeba_items, utkface_items
from aird.distill.data import leak_filter
from aird.errors import DataError


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
