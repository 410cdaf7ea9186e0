"""degradation.jitter in experiment configs: validated at load, off by default, and drawn by the trainer."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from tiny import synthetic_set, tiny_settings  # noqa: E402

from aird.config import from_dict  # noqa: E402
from aird.data.jitter import Jitter  # noqa: E402
from aird.distill.config import ExperimentConfig, load_experiment  # noqa: E402
from aird.distill.trainer import Trainer, config_changes  # noqa: E402
from aird.errors import ConfigError  # noqa: E402
from aird.models.heads import fit_cosine_head  # noqa: E402
from aird.models.registry import get_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MAIN_TRAINING_KEY = "4a0fcfca5e82"  # configs/aird.yaml's degradation key before jitter existed
LIGHT = {"model": "lr_light", "input_size": 16}


def _config(tmp_path: Path, jitter) -> ExperimentConfig:
    settings = tiny_settings(tmp_path, student=LIGHT, max_steps=1)
    if jitter is not None:
        settings["degradation"]["jitter"] = jitter
    return from_dict(ExperimentConfig, settings)


def test_main_config_has_no_jitter_and_keeps_its_cache_key():
    cfg = load_experiment(REPO / "configs" / "aird.yaml")
    assert cfg.degradation.jitter is None
    deg = cfg.degradation.build(cfg.student.input_size, cfg.train.seed)
    assert deg.jitter is None and deg.key() == MAIN_TRAINING_KEY


def test_null_jitter_stays_off_through_a_json_round_trip(tmp_path):
    """A config written to JSON (config.json, a resumed run, a benchmark's overrides) and read back keeps
    jitter None: null was once read as a zero-jitter object, which made identical configs compare unequal."""
    cfg = load_experiment(REPO / "configs" / "aird.yaml")
    again = from_dict(ExperimentConfig, json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again.degradation.jitter is None and again == cfg
    assert _config(tmp_path, None).degradation.jitter is None


def test_jitter_config_builds_the_jitter():
    cfg = load_experiment(REPO / "configs" / "aird-jitter.yaml")
    deg = cfg.degradation.build(cfg.student.input_size, cfg.train.seed)
    assert deg.jitter == Jitter(0.1, (0.9, 1.1), 10.0)
    assert deg.settings()["jitter"] == {"shift": 0.1, "scale": [0.9, 1.1], "rotate": 10.0}
    assert deg.key() != MAIN_TRAINING_KEY


@pytest.mark.parametrize(
    "jitter, message",
    [
        ({"shift": 0.7}, r"degradation.jitter.shift must be in \[0, 0.5\]"),
        ({"shift": -0.1}, r"degradation.jitter.shift must be in"),
        ({"scale": [1.2, 0.8]}, r"degradation.jitter.scale must be a range \[low, high\]"),
        ({"scale": [0.9]}, r"degradation.jitter.scale must be a range"),
        ({"rotate": 60}, r"degradation.jitter.rotate must be in \[0, 45.0\] degrees"),
        ({"rotate": float("nan")}, r"degradation.jitter.rotate: must be a finite number"),
        ({"shift": 0.1, "angle": 5}, r"degradation.jitter: unknown key 'angle'; valid keys: rotate, scale, shift"),
        ({"scale": "0.9-1.1"}, r"degradation.jitter.scale: expected a list"),
    ],
)
def test_bad_jitter_fails_at_load_naming_the_key(tmp_path, jitter, message):
    path = tmp_path / "bad.yaml"
    settings = tiny_settings(tmp_path)
    settings["degradation"]["jitter"] = jitter
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(ConfigError, match=message) as err:
        load_experiment(path)
    assert str(path) in str(err.value)


def test_a_checkpoint_from_before_jitter_still_resumes(tmp_path):
    """A run's saved config has no degradation.jitter key; with jitter off nothing differs from it."""
    now = json.loads(json.dumps(dataclasses.asdict(_config(tmp_path, None))))
    saved = json.loads(json.dumps(now))
    del saved["degradation"]["jitter"]
    assert config_changes(saved, now) == []
    jittered = json.loads(json.dumps(dataclasses.asdict(_config(tmp_path, {"shift": 0.1}))))
    assert any(c.startswith("degradation.jitter") for c in config_changes(saved, jittered))


def _first_batch(cfg: ExperimentConfig, tmp_path: Path) -> torch.Tensor:
    data = synthetic_set()
    head = fit_cosine_head(data.teacher, data.labels, steps=2)
    trainer = Trainer(cfg, data, get_model(cfg.student.model), head, tmp_path, progress=False)
    x, _, _ = trainer._batch(epoch=0, index_in_epoch=0)
    return x


def test_the_trainer_draws_the_configured_jitter(tmp_path):
    plain = _first_batch(_config(tmp_path / "a", None), tmp_path / "a")
    jitter = {"shift": 0.1, "scale": [0.9, 1.1], "rotate": 10.0}
    jittered = _first_batch(_config(tmp_path / "b", jitter), tmp_path / "b")
    again = _first_batch(_config(tmp_path / "c", jitter), tmp_path / "c")
    assert plain.shape == jittered.shape
    assert torch.equal(jittered, again)  # seeded: another trainer draws the same boxes
    differs = (plain != jittered).flatten(1).any(1).numpy()
    assert differs.all()  # every face of the batch was re-framed
    # ... and only re-framed: the same batch without jitter is the plain one
    none = _first_batch(_config(tmp_path / "d", {"shift": 0.0}), tmp_path / "d")
    assert torch.equal(none, plain)
    assert np.isfinite(jittered.numpy()).all()
