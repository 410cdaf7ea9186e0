"""degradation.grayscale in experiment configs: a share of monochrome training faces, validated at load."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_settings  # noqa: E402

from aird.config import from_dict  # noqa: E402
from aird.distill.config import ExperimentConfig, load_experiment  # noqa: E402
from aird.errors import ConfigError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LIGHT = {"model": "lr_light", "input_size": 16}


def config(tmp_path: Path, share) -> ExperimentConfig:
    settings = tiny_settings(tmp_path, student=LIGHT, max_steps=1)
    settings["degradation"]["grayscale"] = share
    return from_dict(ExperimentConfig, settings)


def test_a_share_reaches_the_training_degradation(tmp_path):
    cfg = config(tmp_path, 0.2)
    deg = cfg.degradation.build(cfg.student.input_size, cfg.train.seed)
    assert deg.grayscale == 0.2
    off = config(tmp_path, 0.0).degradation.build(16, 0)
    assert off.grayscale is False and off.key() == config(tmp_path, 0).degradation.build(16, 0).key()


def test_a_share_outside_0_1_fails_at_load(tmp_path):
    with pytest.raises(ConfigError, match="degradation.*grayscale"):
        config(tmp_path, 1.5)


def test_the_fast_grey_config_loads():
    cfg = load_experiment(REPO / "configs" / "ablations" / "fast-grey.yaml")
    assert cfg.degradation.grayscale == 0.2 and cfg.student.model == "lr_resnet"
