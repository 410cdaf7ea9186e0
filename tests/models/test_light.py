"""The fast students' network (``ResLRNet``): the flattened embedding is sized from the strides, so the
map its features end on must be what the strides say, for every registered variant."""

import pytest
import torch

from aird.models import get_model
from aird.models.light import ResLRNet

FINAL_MAP = {"lr_resnet": 2, "lr_resnet_wide": 2, "lr_resnet_deep": 2, "lr_resnet_4x4": 4}


@pytest.mark.parametrize("name", sorted(FINAL_MAP))
def test_features_end_on_the_map_the_embedding_was_sized_for(name):
    model = get_model(name).eval()
    with torch.no_grad():
        fmap = model.features(torch.zeros(1, 3, 16, 16))
    assert fmap.shape[-2:] == (FINAL_MAP[name], FINAL_MAP[name])
    assert model.embed.in_features == fmap[0].numel()


@pytest.mark.parametrize("side", [15, 16, 17])
def test_odd_input_sides_size_the_embedding_right(side):
    model = ResLRNet(side, strides=(1, 2, 2, 1)).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, side, side))
    assert out.shape == (2, 128)


def test_a_stride_per_stage_is_required():
    with pytest.raises(ValueError):
        ResLRNet(16, strides=(1, 2, 2))
