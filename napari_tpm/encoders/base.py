"""The encoder contract shared by the trained ResNets and the training-free filter bank.

Every encoder maps a batch of intensity-normalised slices ``[B, 1, H, W]`` to feature maps
``[B, C, ceil(H / stride), ceil(W / stride)]`` that are unit vectors along ``C``. Everything
downstream (prototypes, squared distances ``D2 = 2 (1 - cos)``) relies on that, so the
normalisation lives here, once, rather than in each architecture.

An encoder is rebuilt from ``config()`` alone (plain builtins, JSON-safe). That is what a
checkpoint stores next to the weights, so loading never needs to unpickle Python objects. The
factory that does it, ``build_encoder``, lives in ``registry.py``: it imports every
implementation, and every implementation imports this module, so it cannot live here.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-6


class Encoder(nn.Module):
    """Base class: subclasses implement ``features`` (raw maps) and ``config``.

    Runtime options that do not change the architecture (bf16 autocast, channels-last memory
    format) are set with ``set_runtime`` and are deliberately *not* part of ``config()``: a
    checkpoint written on a GPU in bf16 must load as the same model on a CPU in fp32.
    """

    name: str = ""
    stride: int = 1
    out_channels: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.autocast_dtype: torch.dtype | None = None
        self.channels_last: bool = False

    # -- to implement -------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw feature maps ``[B, C, h, w]`` (not yet normalised)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Plain-builtin description from which ``build_encoder`` rebuilds this architecture."""
        raise NotImplementedError

    def group_channels(self, group: str) -> slice | None:
        """The output channels of a named feature group (``"position"``, ...), or None where
        this encoder has no such group. Learned encoders have none."""
        return None

    # -- shared behaviour ---------------------------------------------------------------------
    def set_runtime(self, *, bf16: bool = False, channels_last: bool = False) -> Encoder:
        """Choose reduced-precision autocast and/or channels-last memory format.

        Both are speed options only: results stay within a small tolerance of fp32 (the tests
        check this). Returns ``self`` so it chains like ``.to()``.
        """
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        self.channels_last = bool(channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=fmt)
        return self

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Feature-map size for an input of ``height x width`` (ceil division by the stride)."""
        return (-(-height // self.stride), -(-width // self.stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``x [B, 1, H, W]`` into unit-norm features ``[B, C, ceil(H/s), ceil(W/s)]``."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"{type(self).__name__} expects [B, 1, H, W], got {tuple(x.shape)}")
        x = x.float()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = (
            torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            y = self.features(x)
        y = F.normalize(y.float(), dim=1, eps=_EPS)
        return y.contiguous()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, stride={self.stride}, out_channels={self.out_channels}"
