"""The model registry: names, input sizes, clear errors. Every registered model's forward, backward and ONNX
export are tested in test_every_model.py."""

import pytest

from aird.errors import ConfigError
from aird.models import get_model, list_models
from aird.models.registry import INPUT_SIZES


def test_every_registered_model_declares_its_input_sizes():
    assert set(INPUT_SIZES) == set(list_models())
    for name, (low, high) in INPUT_SIZES.items():
        assert 1 <= low <= high, name


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError, match="dlib_resnet_bn"):
        get_model("resnet9000")
