"""Caches never stop a run: a damaged entry is recomputed, a cache folder that cannot be written is a
one-line error naming AIRD_CACHE."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aird.cli import main
from aird.data.align import AlignSettings
from aird.data.chips import ChipCache, align_images
from aird.errors import ModelFileError, OutputError
from aird.io import read_npz_cache
from aird.models.bn_restore import load_bn_stats
from aird.models.embedder import EmbeddingCache, embed_cached
from aird.models.heads import CosineClassifier, load_head, save_head
from aird.paths import cache_dir


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the compressed payload: a CRC / inflate error on reading
    path.write_bytes(bytes(data))


def test_a_damaged_chip_cache_entry_is_recomputed(tmp_path):
    image = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    store = ChipCache(AlignSettings(), root=tmp_path / "cache")
    first = align_images([image], cache=store, progress=False, workers=1)
    (entry,) = (tmp_path / "cache").rglob("*.npz")
    for damage in (_truncate, _flip_a_byte, lambda p: p.write_bytes(b"")):
        damage(entry)
        again = align_images([image], cache=store, progress=False, workers=1)
        assert (again.chips == first.chips).all()
        assert read_npz_cache(entry, ("chip", "landmarks", "detected")) is not None  # rewritten whole


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte])
def test_a_damaged_embedding_cache_is_rebuilt(tmp_path, damage):
    class Doubler:
        name, calls = "doubler", 0

        def fingerprint(self) -> str:
            return "doubler-v1"

        def embed(self, faces: np.ndarray) -> np.ndarray:
            Doubler.calls += 1
            return faces.reshape(len(faces), -1).astype(np.float32) * 2

    faces = np.random.default_rng(0).integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    keys = [f"k{i}" for i in range(len(faces))]
    cache = EmbeddingCache("doubler-v1", "t", root=tmp_path)
    cache.put(keys, faces.reshape(40, -1).astype(np.float32) * 2)
    cache.flush()
    damage(cache.path)
    assert EmbeddingCache("doubler-v1", "t", root=tmp_path).missing(keys) == list(range(40))


def test_embed_cached_survives_a_damaged_cache_file(cache):
    class Ones:
        name = "ones"

        def fingerprint(self) -> str:
            return "ones-v1"

        def embed(self, faces: np.ndarray) -> np.ndarray:
            return np.ones((len(faces), 3), np.float32)

    keys = ["a", "b"]
    embed_cached(Ones(), keys, lambda idx: np.zeros((len(idx), 2, 2, 3), np.uint8), "t", progress=False)
    (path,) = cache.rglob("*.npz")
    _truncate(path)
    out = embed_cached(Ones(), keys, lambda idx: np.zeros((len(idx), 2, 2, 3), np.uint8), "t", progress=False)
    assert out.shape == (2, 3) and (out == 1).all()


@pytest.mark.parametrize("input_size, reused", [(16, False), (150, True)])
def test_a_small_input_networks_embeddings_from_before_area_shrinking_are_not_reused(cache, input_size, reused):
    """Shrinking a face for a network smaller than the HR chip changed (bicubic -> area) on 2026-11-30, so a
    16 px student's old cache entries must be recomputed; a 150 px network never shrinks and keeps them."""
    calls = []

    class Net:
        name = "net"

        def __init__(self):
            self.input_size = input_size

        def fingerprint(self) -> str:
            return "net-v1"

        def embed(self, faces: np.ndarray) -> np.ndarray:
            calls.append(len(faces))
            return np.ones((len(faces), 3), np.float32)

    keys = ["a", "b"]
    before = EmbeddingCache("net-v1", "t")  # what the cache held under the old key
    before.put(keys, np.full((2, 3), 7.0, np.float32))
    before.flush()
    out = embed_cached(Net(), keys, lambda idx: np.zeros((len(idx), 2, 2, 3), np.uint8), "t", progress=False)
    assert (out == 7.0).all() == reused and (calls == []) == reused


def test_damaged_head_and_bn_statistics_are_model_file_errors(tmp_path):
    head = tmp_path / "head.safetensors"
    save_head(head, CosineClassifier(8, 3))
    _truncate(head)
    with pytest.raises(ModelFileError, match="head.safetensors"):
        load_head(head)  # the distillation's head cache catches this and refits
    stats = tmp_path / "stats.npz"
    np.savez(stats, **{"a:mean": np.zeros(3), "a:var": np.ones(3), "a:count": np.array(5)})
    _truncate(stats)
    with pytest.raises(ModelFileError, match="stats.npz"):
        load_bn_stats(stats)


def test_aird_cache_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch):
    target = tmp_path / "cache-file"
    target.write_text("not a folder")
    monkeypatch.setenv("AIRD_CACHE", str(target))
    with pytest.raises(OutputError, match="AIRD_CACHE") as err:
        cache_dir("chips")
    assert str(target) in str(err.value)


def test_read_only_aird_cache_is_a_clear_error(tmp_path, monkeypatch):
    target = tmp_path / "ro-cache"
    (target / "chips").mkdir(parents=True)
    target.chmod(0o555)
    (target / "chips").chmod(0o555)
    monkeypatch.setenv("AIRD_CACHE", str(target))
    if os.geteuid() == 0:  # root writes anyway: let the check see what a user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(target)) else real(p, mode))
    try:
        with pytest.raises(OutputError, match="read-only") as err:
            cache_dir("chips")
        assert "AIRD_CACHE" in str(err.value)
    finally:
        target.chmod(0o755)
        (target / "chips").chmod(0o755)


def test_cli_with_a_non_directory_aird_cache_says_so_in_one_line(
    fake_lfw, tmp_path, monkeypatch, capsys, one_error_line
):
    target = tmp_path / "cache-file"
    target.write_text("not a folder")
    monkeypatch.setenv("AIRD_CACHE", str(target))
    argv = ["eval", "--model", "dlib_resnet", "--data-root", str(fake_lfw), "--folds", "1-2"]
    assert main([*argv, "--out", str(tmp_path / "eval.json"), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "AIRD_CACHE" in line and str(target) in line
