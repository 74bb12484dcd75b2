"""Dilated ResNet encoders: the paper's ResNet-101 and lighter variants for CPUs.

The paper (tpm-method.md section 1) keeps the backbone of torchvision's DeepLabv3-ResNet-101:
layer3 and layer4 trade their stride for dilation (2 and 4), so the output stride is 8, and a
bias-free 1x1 convolution projects the 2048 channels to the 256-d embedding, with no activation
after it. Slices are repeated to 3 channels so ImageNet weights apply unchanged.

The trunk is written here from torch.nn (torchvision is not a dependency), but its parameter
names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer3.0.downsample.0``...),
under the ``backbone.`` prefix, so a torchvision ImageNet ``resnet*.pth`` file loads directly
with ``load_imagenet_weights``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_tpm.encoders.base import Encoder


@dataclass(frozen=True)
class ResNetSpec:
    """Shape of one trunk: block type, blocks per stage, which stages trade stride for dilation."""

    bottleneck: bool
    blocks: tuple[int, ...]
    dilate: tuple[bool, ...]  # for stages 2.. (stage 1 never strides); output stride stays 8


RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet101": ResNetSpec(True, (3, 4, 23, 3), (False, True, True)),
    "resnet50": ResNetSpec(True, (3, 4, 6, 3), (False, True, True)),
    "resnet34": ResNetSpec(False, (3, 4, 6, 3), (False, True, True)),
    "resnet18": ResNetSpec(False, (2, 2, 2, 2), (False, True, True)),
    # Truncated after layer3: no 512-channel stage, several times cheaper than resnet18.
    "resnet18-l3": ResNetSpec(False, (2, 2, 2), (False, True)),
}


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; unlike torchvision's, it accepts dilation > 1."""

    expansion = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided or dilated), 1x1 expand by 4, residual (torchvision v1.5 layout)."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetTrunk(nn.Module):
    """Stem + residual stages, named like torchvision's ResNet but without avgpool/fc."""

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        block = Bottleneck if spec.bottleneck else BasicBlock
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._cin, self._dilation = 64, 1
        strides = (1, *(2 for _ in spec.blocks[1:]))
        dilate = (False, *spec.dilate)
        for i, (n, stride, dil) in enumerate(zip(spec.blocks, strides, dilate)):
            stage = self._make_stage(block, 64 * 2**i, n, stride, dil)
            self.add_module(f"layer{i + 1}", stage)
        self.out_channels = self._cin
        self.n_stages = len(spec.blocks)
        self._init_weights()

    def _make_stage(
        self, block: type[nn.Module], planes: int, n: int, stride: int, dilate: bool
    ) -> nn.Sequential:
        # Same rule as the DeepLab trunks: a dilated stage keeps resolution, and its first block
        # still uses the *previous* dilation so the receptive field grows smoothly.
        previous = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        out = planes * block.expansion
        downsample = None
        if stride != 1 or self._cin != out:
            downsample = nn.Sequential(
                nn.Conv2d(self._cin, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        layers = [block(self._cin, planes, stride, downsample, previous)]
        self._cin = out
        layers += [block(out, planes, 1, None, self._dilation) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # He init for ReLU networks; only matters when no ImageNet/trained weights are loaded.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x


class ResNetEncoder(Encoder):
    """Dilated ResNet trunk (output stride 8) + bias-free 1x1 projection to ``out_channels``.

    Args:
        arch: one of ``RESNET_SPECS`` ("resnet101" is the paper's encoder).
        out_channels: embedding size after the projection (256 in the paper).
    """

    stride = 8

    def __init__(self, arch: str = "resnet101", out_channels: int = 256) -> None:
        super().__init__()
        if arch not in RESNET_SPECS:
            raise ValueError(f"unknown ResNet {arch!r}; known: {', '.join(RESNET_SPECS)}")
        self.name = arch
        self.backbone = ResNetTrunk(RESNET_SPECS[arch])
        self.projection = nn.Conv2d(self.backbone.out_channels, out_channels, 1, bias=False)
        self.out_channels = int(out_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone(x.expand(-1, 3, -1, -1)))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "out_channels": self.out_channels}


@dataclass(frozen=True)
class WeightsReport:
    """What ``load_imagenet_weights`` did: loaded keys and what did not match, by reason."""

    loaded: tuple[str, ...]
    missing: tuple[str, ...]  # trunk parameters the file did not provide (kept at their init)
    unexpected: tuple[str, ...]  # file keys with no place in this trunk (fc.*, cut layers...)


def load_imagenet_weights(
    encoder: ResNetEncoder, path: str | Path, *, strict: bool = False
) -> WeightsReport:
    """Load a torchvision ImageNet ResNet state dict (``resnet101-*.pth``) into the trunk.

    The classifier (``fc.*``) is dropped, and keys of stages a truncated trunk does not have
    (``layer4.*`` for "resnet18-l3") are reported as unexpected rather than failing. The file is
    read with ``torch.load(weights_only=True)``, so it cannot execute code. A shape mismatch
    (e.g. a ResNet-50 file into a ResNet-101) or a file that shares no key with the trunk raises
    ``ValueError``; with ``strict=True`` any missing key does too.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ImageNet weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ValueError(f"{path} is not a plain tensor state dict: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        if not key.startswith("fc."):
            cleaned[key] = value
    own = encoder.backbone.state_dict()
    loaded = sorted(k for k in cleaned if k in own)
    if not loaded:
        raise ValueError(f"{path} shares no parameter names with the {encoder.name} trunk")
    bad = [k for k in loaded if tuple(cleaned[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise ValueError(
            f"{path} does not fit {encoder.name}: {len(bad)} shape mismatches, e.g. {k} "
            f"{tuple(cleaned[k].shape)} in the file vs {tuple(own[k].shape)} in the trunk"
        )
    # BatchNorm step counters are absent from older torchvision files and carry no weights.
    missing = sorted(k for k in own if k not in cleaned and not k.endswith("num_batches_tracked"))
    if strict and missing:
        raise ValueError(f"{path} lacks {len(missing)} trunk parameters, e.g. {missing[0]}")
    encoder.backbone.load_state_dict({k: cleaned[k] for k in loaded}, strict=False)
    unexpected = sorted(k for k in cleaned if k not in own)
    return WeightsReport(tuple(loaded), tuple(missing), tuple(unexpected))
