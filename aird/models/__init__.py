"""Backbones, heads, the teacher port and the registry: ``get_model(name)``."""

from aird.models import dlib_resnet as _dlib_resnet  # noqa: F401  (registers dlib_resnet, dlib_resnet_bn)
from aird.models import light as _light  # noqa: F401  (registers lr_light)
from aird.models import prune as _prune  # noqa: F401  (registers dlib_resnet_slim50, _slim25, _slim12)
from aird.models.registry import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
