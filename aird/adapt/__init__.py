"""Test-time adaptation of a face embedding network: FaceBN (batch-norm statistics) and TENT."""

from aird.adapt.facebn import ADAPTERS, DEFAULT_STREAM, MODE_NAMES, Adapter, FaceBN, embed_two_pass, make_adapter
from aird.adapt.tent import Tent, prediction_entropy

__all__ = [
    "ADAPTERS",
    "DEFAULT_STREAM",
    "MODE_NAMES",
    "Adapter",
    "FaceBN",
    "Tent",
    "embed_two_pass",
    "make_adapter",
    "prediction_entropy",
]
