"""A hybrid encoder: the training-free filter bank's channels next to a compact learned network.

Why a hybrid: on real abdominal scans the filter bank (context histograms, body depth and
body-relative position) already separates organs far better than a small network trained for
an hour on a CPU, while such a network can still learn what the bank lacks: invariances to the
augmentations of the supervoxel episodes and nonlinear combinations of context and shape. So
the output is the concatenation ``[filter-bank channels, learned channels]`` and the learned
head starts near zero: before training the hybrid measures like the filter bank (its learned
channels hold a few percent of the feature norm), and training moves away from it only where
the episode loss says so.

The learned branch sees the slice at full resolution (two stride-2 convolutions to the bank's
stride 4) and the bank's own channels, then a stack of dilated residual blocks gives it a
receptive field of several centimetres at a few hundred MFLOP per slice. GroupNorm, not
BatchNorm, so a slice's features never depend on the other slices of its batch (training uses
batches of two slices, inference of many).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from napari_tpm.encoders.base import Encoder
from napari_tpm.encoders.filterbank import FilterBankEncoder

#: Initial spread of the learned head's weights: learned channels start at a few percent of the
#: bank's feature norm, so the untrained hybrid measures like the bank.
HEAD_INIT_STD = 0.01


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // 16), channels)


class _Block(nn.Module):
    """Residual block: two 3x3 convolutions, the second dilated, GroupNorm and ReLU."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = _norm(channels)
        self.conv2 = nn.Conv2d(
            channels, channels, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.norm2 = _norm(channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(x + y)


class HybridEncoder(Encoder):
    """Filter-bank channels concatenated with learned channels (stride 4, like the bank).

    Args:
        width: channels of the learned trunk.
        learned_channels: channels the learned branch adds to the bank's.
        dilations: one residual block per entry, with that dilation of its second convolution.
        learned_scale: factor on the learned channels relative to the bank's (a fixed number,
            part of the architecture, so checkpoints stay comparable).
        filterbank: ``FilterBankEncoder.config()`` options of the fixed branch (default bank).
    """

    name = "hybrid"

    def __init__(
        self,
        width: int = 48,
        learned_channels: int = 32,
        dilations: tuple[int, ...] | list[int] = (1, 2, 4, 8, 16),
        learned_scale: float = 1.0,
        filterbank: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        options = dict(filterbank or {})
        options.pop("name", None)
        self.bank = FilterBankEncoder(**options)
        self.stride = self.bank.stride
        if self.stride != 4:
            raise ValueError(f"the hybrid encoder needs a stride-4 filter bank, got {self.stride}")
        self.width = int(width)
        self.learned_channels = int(learned_channels)
        self.dilations = tuple(int(d) for d in dilations)
        self.learned_scale = float(learned_scale)
        half = max(8, self.width // 2)
        self.stem = nn.Sequential(
            nn.Conv2d(1, half, 3, stride=2, padding=1, bias=False),
            _norm(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, self.width, 3, stride=2, padding=1, bias=False),
            _norm(self.width),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(self.width + self.bank.out_channels, self.width, 1, bias=False),
            _norm(self.width),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*(_Block(self.width, d) for d in self.dilations))
        self.head = nn.Conv2d(self.width, self.learned_channels, 1)
        # Small, not zero: with every learned channel at exactly 0 in support and query alike,
        # the cosine's gradient along those channels is 0 too and they never start to learn.
        nn.init.normal_(self.head.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.head.bias)
        self.out_channels = self.bank.out_channels + self.learned_channels

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "width": self.width,
            "learned_channels": self.learned_channels,
            "dilations": list(self.dilations),
            "learned_scale": self.learned_scale,
            "filterbank": self.bank.config(),
        }

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            fixed = self.bank.features(x)  # [B, Cb, h, w], no parameters to train
        h, w = fixed.shape[-2:]
        y = self.stem(x)
        y = y[..., :h, :w]
        if y.shape[-2:] != (h, w):  # sizes not divisible by 4: pad to the bank's ceil size
            y = nn.functional.pad(y, (0, w - y.shape[-1], 0, h - y.shape[-2]), mode="replicate")
        y = self.fuse(torch.cat([y, fixed.to(y.dtype)], 1))
        y = self.head(self.blocks(y))
        return torch.cat([fixed, self.learned_scale * y.float()], 1)
