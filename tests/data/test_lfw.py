from pathlib import Path

import numpy as np
import pytest

from aird.data.lfw import LFW, read_pairs
from aird.errors import DataError


@pytest.fixture(scope="module")
def pairs(lfw_view2):
    return LFW(lfw_view2).pairs()


def test_real_pairs_file_has_view2_shape(pairs):
    assert len(pairs) == 6000
    assert int(pairs.same.sum()) == 3000
    assert sorted(set(pairs.fold.tolist())) == list(range(1, 11))
    for f in range(1, 11):
        in_fold = pairs.fold == f
        assert in_fold.sum() == 600 and pairs.same[in_fold].sum() == 300
    same = np.flatnonzero(pairs.same)
    assert all(pairs.left_identity[i] == pairs.right_identity[i] for i in same)
    diff = np.flatnonzero(~pairs.same)
    assert all(pairs.left_identity[i] != pairs.right_identity[i] for i in diff)


def test_folds_are_identity_disjoint(pairs):
    people = [set() for _ in range(10)]
    for a, b, f in zip(pairs.left_identity, pairs.right_identity, pairs.fold):
        people[f - 1].update((a, b))
    for i in range(10):
        for j in range(i + 1, 10):
            assert not people[i] & people[j], (i + 1, j + 1)


def test_subset_and_images(pairs):
    sub = pairs.subset([1, 2])
    assert len(sub) == 1200 and set(sub.fold.tolist()) == {1, 2}
    assert len(sub.images()) == len(set(sub.left + sub.right))


def _write_pairs(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(body)
    return path


def _images(tmp_path: Path) -> Path:
    root = tmp_path / "img"
    for name, n in (("Ann", 2), ("Bob", 1)):
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    return root


def test_toy_pairs_parse(tmp_path):
    root = _images(tmp_path)
    pl = read_pairs(_write_pairs(tmp_path, "1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n"), root)
    assert pl.same.tolist() == [True, False] and pl.fold.tolist() == [1, 1]
    assert pl.right[1] == root / "Bob" / "Bob_0001.jpg"


@pytest.mark.parametrize(
    "body, message",
    [
        ("1\t1\nAnn\t1\nAnn\t1\tBob\t1\n", "line 2: malformed pair"),
        ("1\t1\nAnn\tone\t2\nAnn\t1\tBob\t1\n", "line 2: malformed pair"),
        ("1\t1\nAnn\t1\t2\n", "has 1 pair lines, header promises 2"),
        ("one two\n", "bad header"),
        ("1\t1\nAnn\t1\tBob\t1\nAnn\t1\t2\n", "expected a same-person pair"),
        ("1\t1\nAnn\t1\t3\nAnn\t1\tBob\t1\n", "missing image"),
        ("", "empty"),
    ],
)
def test_bad_pairs_file_names_file_and_line(tmp_path, body, message):
    path = _write_pairs(tmp_path, body)
    with pytest.raises(DataError, match=message) as err:
        read_pairs(path, _images(tmp_path))
    assert str(path) in str(err.value)


def test_missing_pairs_file_says_how_to_get_lfw(tmp_path):
    with pytest.raises(DataError, match="AIRD_DATA"):
        read_pairs(tmp_path / "nope.txt", tmp_path)
