"""Experiment configs: every field range-checked and every name resolved at load, before any work.

Each bad value is an error that names its key and the valid range, never a silent run or a traceback
after the training set was built.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distill"))
from distill_stub import stub  # noqa: E402
from tiny import synthetic_set, tiny_config, tiny_settings  # noqa: E402

from aird import cli  # noqa: E402
from aird.distill.config import load_experiment  # noqa: E402
from aird.distill.trainer import Trainer  # noqa: E402
from aird.errors import ConfigError  # noqa: E402
from aird.models.heads import fit_cosine_head  # noqa: E402
from aird.models.registry import get_model  # noqa: E402

# (section, key, bad value, what the one-line error must say)
BAD = [
    ("train", "epochs", 0, "train.epochs must be >= 1"),
    ("train", "batch_size", -4, "train.batch_size must be >= 1"),
    ("train", "batch_size", 0, "train.batch_size must be >= 1"),
    ("train", "lr", -0.01, "train.lr must be > 0"),
    ("train", "lr", 0, "train.lr must be > 0"),
    ("train", "head_lr", 0, "train.head_lr must be > 0 or null"),
    ("train", "clip_grad", -1, "train.clip_grad must be > 0 or null"),
    ("train", "queue_size", -1, "train.queue_size must be >= 0"),
    ("train", "checkpoint_every", 0, "train.checkpoint_every must be >= 1"),
    ("train", "log_every", 0, "train.log_every must be >= 1"),
    ("train", "momentum", -0.5, r"train.momentum must be in \[0, 1\)"),
    ("train", "weight_decay", -1e-4, "train.weight_decay must be >= 0"),
    ("train", "warmup_steps", -1, "train.warmup_steps must be >= 0"),
    ("train", "max_steps", 0, "train.max_steps must be >= 1 or null"),
    ("train", "threads", 0, "train.threads must be >= 1 or null"),
    ("train", "seed", -1, "train.seed must be >= 0"),
    ("train", "lr", float("nan"), "train.lr: must be a finite number"),
    ("train", "clip_grad", float("inf"), "train.clip_grad: must be a finite number"),
    ("student", "input_size", 2, r"student.input_size must be in 103\.\.300 for dlib_resnet_bn"),
    ("student", "model", "resnet50", "student.model: unknown model 'resnet50'; choose one of: .*lr_light"),
    ("head", "scale", 0, "head.scale must be > 0"),
    ("head", "margin", -0.2, "head.margin must be >= 0"),
    ("head", "steps", -1, "head.steps must be >= 0"),
    ("head", "margin", float("-inf"), "head.margin: must be a finite number"),
    ("eval", "res", [16, 5], r"eval.res must be a list of resolutions from \[8, 12, 16"),
    ("eval", "res", [], "eval.res must be a list of resolutions"),
    ("eval", "pairs", ["lr-hr"], r"eval.pairs must be a list of pair modes from \['lr-lr', 'hr-lr'\]"),
    ("data", "pools", ["lfw", "imdb"], r"data.pools\[1\] must be a built-in pool \['lfw', 'celeba', 'utkface'\]"),
    ("data", "pools", ["lfw", "lfw"], "data.pools must be a list without repeats"),
    ("data", "leak_threshold", 1.5, r"data.leak_threshold must be in \(0, 1\]"),
    ("degradation", "blur_sigma", [0.0, float("nan")], r"degradation.blur_sigma\[1\]: must be a finite number"),
    ("degradation", "res", [7], "degradation: unknown resolution 7"),
    ("losses", "rld", {"tau": -0.05}, "losses.rld.tau must be a number > 0"),
    ("losses", "cls", {"weight": -1.0}, "losses.cls.weight must be a number >= 0"),
    ("losses", "ild", {"b": float("nan")}, r"losses.ild.b: must be a finite number"),
    ("losses", "rld", {"center": "yes"}, "losses.rld.center must be true or false"),
]


def settings_with(tmp_path: Path, section: str, key: str, value) -> dict:
    settings = tiny_settings(tmp_path / "run")
    settings.setdefault(section, {})[key] = value
    return settings


@pytest.mark.parametrize("section, key, value, message", BAD, ids=[f"{s}.{k}={v}" for s, k, v, _ in BAD])
def test_bad_value_fails_at_load_naming_the_key(tmp_path, section, key, value, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(settings_with(tmp_path, section, key, value)))
    with pytest.raises(ConfigError, match=message) as err:
        load_experiment(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("section, key, value, message", BAD[:6], ids=[f"{s}.{k}" for s, k, *_ in BAD[:6]])
def test_aird_distill_refuses_a_bad_config_before_building_data(
    monkeypatch, tmp_path, capsys, section, key, value, message
):
    def no_data():
        raise AssertionError("training data built for a bad config")

    stub(monkeypatch.setattr, on_data=no_data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(settings_with(tmp_path, section, key, value)))
    assert cli.main(["distill", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aird: error: ") and err.count("\n") == 1 and f"{section}.{key}" in err
    assert not (tmp_path / "run").exists()


def test_light_student_has_its_own_input_range(tmp_path):
    path = tmp_path / "light.yaml"
    settings = tiny_settings(tmp_path, student={"model": "lr_light", "input_size": 150})
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(ConfigError, match=r"student.input_size must be in 8\.\.64 for lr_light, got 150"):
        load_experiment(path)


def test_config_without_a_name_is_an_error(tmp_path):
    # a default name wrote every unnamed experiment into runs/aird-A, on top of each other
    path = tmp_path / "unnamed.yaml"
    settings = tiny_settings(tmp_path)
    del settings["name"], settings["out_dir"]
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        load_experiment(path)
    path.write_text(yaml.safe_dump({**settings, "name": "../elsewhere"}))
    with pytest.raises(ConfigError, match="name must be a plain name"):
        load_experiment(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_config_file_is_an_error(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="empty") as err:
        load_experiment(path)
    assert str(path) in str(err.value)


def test_clip_grad_null_trains_without_clipping(tmp_path):
    # the documented way to turn clipping off (a negative value used to flip the gradient)
    cfg = tiny_config(tmp_path, student={"model": "lr_light", "input_size": 16}, clip_grad=None, max_steps=2)
    data = synthetic_set()
    head = fit_cosine_head(data.teacher, data.labels, steps=2)
    trainer = Trainer(cfg, data, get_model("lr_light"), head, tmp_path, progress=False)
    trainer.fit()
    assert trainer.step == 2
