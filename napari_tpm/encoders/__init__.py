"""Slice encoders: ``[B, 1, H, W]`` intensity-normalised slices -> unit-norm feature maps.

``build_encoder(config)`` rebuilds any of ``ENCODER_NAMES`` from ``Encoder.config()``.
"""

from napari_tpm.encoders.base import Encoder
from napari_tpm.encoders.filterbank import FilterBankEncoder
from napari_tpm.encoders.registry import ENCODER_NAMES, build_encoder
from napari_tpm.encoders.resnet import (
    RESNET_SPECS,
    ResNetEncoder,
    WeightsReport,
    load_imagenet_weights,
)

__all__ = [
    "ENCODER_NAMES",
    "RESNET_SPECS",
    "Encoder",
    "FilterBankEncoder",
    "ResNetEncoder",
    "WeightsReport",
    "build_encoder",
    "load_imagenet_weights",
]
