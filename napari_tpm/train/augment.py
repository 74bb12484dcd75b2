"""Episode augmentations: gamma, random affine and elastic deformation (tpm-method.md section 4).

Supervoxel episodes pair two *neighbouring* slices, which look almost alike; without
augmentation the encoder could match them by low-level texture alone. A gamma change on one side
and a small geometric warp on one side force it to match by appearance that survives those
changes. Everything here is numpy/scipy for the random fields and torch for the resampling, so it
runs inside DataLoader workers without OpenCV.

All random draws come from the ``numpy.random.Generator`` passed in, so an episode is a pure
function of its seed (the trainer seeds every episode by its index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms; the defaults are the reference's."""

    gamma: tuple[float, float] = (0.5, 1.5)
    rotation_deg: float = 5.0
    translation_px: float = 5.0
    shear_deg: float = 5.0
    zoom: tuple[float, float] = (0.9, 1.2)
    elastic_alpha: float = 10.0
    elastic_sigma: float = 5.0
    elastic_kernel: int = 21


def gamma_transform(image: torch.Tensor, gamma: float) -> torch.Tensor:
    """``min + range * ((x - min) / range) ** gamma``: a contrast change that keeps the range."""
    lo, hi = image.min(), image.max()
    span = hi - lo
    if float(span) <= 0:
        return image.clone()
    return lo + span * ((image - lo) / span).clamp(0, 1) ** gamma


def random_gamma(image: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    return gamma_transform(image, float(rng.uniform(*cfg.gamma)))


def random_affine(
    rng: np.random.Generator, shape_hw: tuple[int, int], cfg: AugmentConfig
) -> np.ndarray:
    """A 3x3 forward affine in pixel coordinates (x, y), about the image centre.

    Rotation, shear and translation are uniform in +-their limits, the zoom isotropic in its
    range, as in the reference.
    """
    h, w = shape_hw
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    rot = math.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    shear = math.radians(rng.uniform(-cfg.shear_deg, cfg.shear_deg))
    zoom = rng.uniform(*cfg.zoom)
    tx, ty = rng.uniform(-cfg.translation_px, cfg.translation_px, size=2)
    c, s = math.cos(rot), math.sin(rot)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    shearing = np.array([[1, math.tan(shear), 0], [0, 1, 0], [0, 0, 1]])
    scaling = np.diag([zoom, zoom, 1.0])
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1]])
    return back @ rotation @ shearing @ scaling @ to_origin


def random_elastic(
    rng: np.random.Generator, shape_hw: tuple[int, int], cfg: AugmentConfig
) -> np.ndarray:
    """Displacement ``[2, H, W]`` (dx, dy) in pixels: blurred U(-1, 1) noise times alpha.

    The blur is a Gaussian of ``elastic_sigma`` truncated to ``elastic_kernel`` taps with
    mirrored borders, i.e. OpenCV's GaussianBlur with its default border.
    """
    radius = cfg.elastic_kernel // 2
    noise = rng.uniform(-1.0, 1.0, size=(2, *shape_hw))
    out = np.empty_like(noise)
    for i in range(2):
        out[i] = ndi.gaussian_filter(
            noise[i], cfg.elastic_sigma, mode="mirror", truncate=radius / cfg.elastic_sigma
        )
    return (out * cfg.elastic_alpha).astype(np.float32)


def _reflect(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror coordinates into [0, size - 1] without repeating the edge pixel."""
    if size == 1:
        return torch.zeros_like(coord)
    period = 2 * (size - 1)
    c = torch.remainder(coord, period)
    return torch.where(c > size - 1, period - c, c)


def warp(
    image: torch.Tensor,
    masks: torch.Tensor,
    affine: np.ndarray,
    displacement: np.ndarray | None,
    pad_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the affine, then the elastic field, to ``image [C, H, W]`` and ``masks [K, H, W]``.

    Composed into one sampling step: output pixel p reads the input at ``A^-1 reflect(p + u(p))``
    (the elastic step mirrors at the border, the affine step pads with ``pad_value``). Images are
    bilinear; masks are resampled bilinearly and rounded, as in the reference.
    """
    _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    if displacement is not None:
        u = torch.from_numpy(displacement)
        xs = _reflect(xs + u[0], w)
        ys = _reflect(ys + u[1], h)
    inv = torch.from_numpy(np.linalg.inv(affine)).float()
    src_x = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    src_y = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    # pixel index i -> normalised (2 i + 1) / n - 1 (align_corners=False)
    grid = torch.stack([(2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1], dim=-1)[None]
    stacked = torch.cat([image - pad_value, masks.to(image.dtype)], dim=0)[None]
    out = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out[0]
    c = image.shape[0]
    return out[:c] + pad_value, (out[c:] >= 0.5).to(masks.dtype)


def random_geometric(
    image: torch.Tensor,
    masks: torch.Tensor,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    pad_value: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine followed by a random elastic deformation, applied jointly."""
    shape = tuple(image.shape[-2:])
    affine = random_affine(rng, shape, cfg)
    field = random_elastic(rng, shape, cfg)
    pad = float(image.min()) if pad_value is None else float(pad_value)
    return warp(image, masks, affine, field, pad)
