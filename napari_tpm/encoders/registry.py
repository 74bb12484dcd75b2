"""The encoder registry: every encoder name, and the factory that rebuilds one from its config.

Kept out of ``base.py`` on purpose. The factory must import every implementation, and every
implementation imports ``base.py`` for the :class:`Encoder` contract; with the factory in
``base.py`` the two imported each other (hidden behind a function-local import). Here the
dependencies point one way only: registry -> implementations -> base.
"""

from __future__ import annotations

from typing import Any

from napari_tpm.encoders.base import Encoder
from napari_tpm.encoders.filterbank import FilterBankEncoder
from napari_tpm.encoders.hybrid import HybridEncoder
from napari_tpm.encoders.resnet import RESNET_SPECS, ResNetEncoder

#: Every name ``build_encoder`` understands, in order from the paper's encoder to the cheapest.
ENCODER_NAMES: tuple[str, ...] = (
    "resnet101",
    "resnet50",
    "resnet34",
    "resnet18",
    "resnet18-l3",
    "hybrid",
    "filterbank",
)


def build_encoder(config: dict[str, Any] | str) -> Encoder:
    """Rebuild an encoder from ``Encoder.config()`` (or from a bare name with default options).

    Raises ``ValueError`` naming the known encoders when the name is unknown.
    """
    if isinstance(config, str):
        config = {"name": config}
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"an encoder config must be a dict with a 'name', got {config!r}")
    options = dict(config)
    name = options.pop("name")
    if name == "filterbank":
        return FilterBankEncoder(**options)
    if name == "hybrid":
        return HybridEncoder(**options)
    if name in RESNET_SPECS:
        return ResNetEncoder(name, **options)
    raise ValueError(f"unknown encoder {name!r}; known encoders: {', '.join(ENCODER_NAMES)}")
