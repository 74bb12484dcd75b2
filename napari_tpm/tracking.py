"""Follow a narrow structure past where the painted prototypes stop, slice by slice.

Why: the painted slice's prototypes describe the structure as it looks there, with its
surroundings. A long, narrow structure keeps its own look but not its surroundings: a
contrast-filled aorta painted on its middle slice has the same density twenty slices up, but
the filter bank's context channels (Hessians at up to 30 mm, neighbourhood histograms, depth)
move as the organs around it change, so its score falls below the boundary a few centimetres
from the paint (BTCV 21's aorta from its middle slice: found on 12 of its 73 slices, Dice
0.27; the inferior vena cava alike). From one slice to the next the surroundings change
little, so the structure's features one slice further on lie close to those of its section
on the slice before.

So from each end of the result, slice by slice outward, the structure's mean feature on the
slice before is a prototype for the next: its pixels score by that prototype on the painted
prototypes' own scale (the score is a line in the squared distance, fitted on the painted
slice, :func:`distance_scale`) and are kept where they pass the boundary in a 2-D piece that
touches the section before. The walk ends where no piece passes, where the piece is more than
:data:`GROWTH` times the section before or the painted one, whichever is larger (it has
joined a neighbour) and where the painted prototypes score the piece :data:`MARGIN`
log-odds under the boundary at its median (it has followed the structure into other tissue:
BTCV 18's gallbladder walked on through 45 slices of bowel, scored 9-12 under the boundary,
where the aorta's own sections scored at most 6 under it).

The session walks for each painted structure whose painted section is narrow, on its own
class's scores and prototypes (``SegmentationSession._track``), and adds the kept pixels after
its 3-D steps, at the slider's boundary. Measured in benchmarks/RESULTS-accuracy.md,
"Following a narrow structure slice by slice".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

if TYPE_CHECKING:
    from napari_tpm.preprocess import WorkingGrid

__all__ = [
    "FIT_BAND",
    "GROWTH",
    "GROWTH_PIXELS",
    "MARGIN",
    "NARROW_MM",
    "distance_scale",
    "grid_mask",
    "is_narrow",
    "track_ends",
    "walk_scores",
]

#: a tracked section may be this many times the larger of the section before it and the
#: painted section (plus a few pixels); more, and the walk ends: it has run into a neighbour.
#: The painted section counts because the result's end section, where the walk starts, is
#: often a sliver where the score faded, and the structure's full section on the next slice
#: then looked like a neighbour joining (BTCV 16's vena cava 4 -> 21 pixels, BTCV 21's aorta);
#: a neighbour joining still widens the section past the painted one. Tuning (BTCV's five
#: other structures): 0.536 -> 0.542, 4 up, 2 down; held out BTCV 0.500 -> 0.506, TS CT 0.495
#: -> 0.497, 5 up, none down; the four organs held out 1 down of 210 (CHAOS 34's left kidney
#: at 85 %, 0.69 -> 0.65) (benchmarks/RESULTS-accuracy.md, "The walk's growth test
#: against the painted section"). Measured against the largest of the last three sections
#: instead, livers, kidneys and spleens walked into their neighbours (tuning, every paint of
#: the four organs: 26 up, 58 down) and gallbladders into bowel
GROWTH = 1.5
#: ... plus this many feature-grid pixels, so a section of one or two pixels may still grow
GROWTH_PIXELS = 4
#: the walk ends where the painted prototypes score a kept piece this many log-odds under the
#: boundary at its median (tuning, BTCV's five other structures: none 0.525, 4 -> 0.530,
#: 8 -> 0.536)
MARGIN = 8.0
#: the painted slice's pixels within this many log-odds of the boundary fit the line
FIT_BAND = 3.0
#: the session walks for a structure whose largest painted section has an equivalent radius
#: up to this (mm): the aortas and venae cavae of every development volume (7-16 mm), not its
#: kidneys, spleens or livers (19 mm and more), which its 3-D steps serve and which the walk
#: led into their neighbours (tuning, every paint of the four organs, 8 down by > 0.005, the
#: worst CHAOS 21's right kidney 0.88 -> 0.77: 9 slices of liver below it)
NARROW_MM = 16.0
#: how far under the boundary the walk's score is held where it did not keep a pixel (log-odds)
HELD_UNDER = 1.0e-3


def distance_scale(
    features: torch.Tensor, scores: np.ndarray, means: torch.Tensor, threshold: float
) -> tuple[float, float] | None:
    """``(a, b)`` with ``score ~ a * d2 + b``, where ``d2`` is a pixel's squared distance to
    its nearest prototype, fitted on one slice's pixels near the boundary ``threshold``.

    ``features`` ``[C, h, w]``, ``scores`` ``[h, w]`` (that slice's class log-odds),
    ``means`` ``[K, C]``. None when too few pixels lie near the boundary or the score does
    not fall with the distance (no scale to track on).
    """
    c = features.shape[0]
    f = features.reshape(c, -1).T.float()
    d2 = torch.cdist(f, means.float()).pow(2).min(1).values.numpy()
    s = scores.reshape(-1)
    near = np.abs(s - threshold) < FIT_BAND
    if near.sum() < 8 or np.ptp(d2[near]) <= 0:
        return None
    a, b = np.polyfit(d2[near], s[near], 1)
    if not np.isfinite(a) or a >= 0:
        return None
    return float(a), float(b)


def track_ends(
    features: torch.Tensor,
    scores: np.ndarray,
    found: np.ndarray,
    scale: tuple[float, float],
    threshold: float,
    section: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(tracked, kept)``, both ``[n, h, w]``: each reached slice's tracked score (NaN on
    slices the walk did not reach) and the pixels the walk kept there.

    ``features`` ``[n, C, h, w]`` (the feature grid of every slice), ``scores`` the painted
    prototypes' class log-odds there, ``found`` ``[n, h, w]`` the result on that grid,
    ``scale`` from :func:`distance_scale`, ``threshold`` the boundary in log-odds,
    ``section`` the painted section's size in grid pixels (:data:`GROWTH`). The walk starts
    at the first and the last slice holding ``found`` and goes outward until no piece passes,
    a piece grows too fast or scores too low by the painted prototypes, or the volume ends.
    """
    a, b = scale
    tracked = np.full(found.shape, np.nan, np.float32)
    kept = np.zeros(found.shape, bool)
    along = np.flatnonzero(found.any((1, 2)))
    if len(along) == 0:
        return tracked, kept
    n = found.shape[0]
    for step, start in ((1, int(along[-1])), (-1, int(along[0]))):
        prev = found[start]
        z = start + step
        while 0 <= z < n:
            prototype = features[z - step][:, torch.from_numpy(prev)].float().mean(1)
            d2 = (features[z].float() - prototype[:, None, None]).pow(2).sum(0).numpy()
            score = a * d2 + b
            pieces, _ = ndimage.label(score > threshold)
            touching = np.unique(pieces[ndimage.binary_dilation(prev) & (pieces > 0)])
            keep = np.isin(pieces, touching) & (pieces > 0)
            if not keep.any() or keep.sum() > GROWTH * max(prev.sum(), section) + GROWTH_PIXELS:
                break
            if np.median(scores[z][keep]) < threshold - MARGIN:
                break
            tracked[z], kept[z] = score, keep
            prev = keep
            z += step
    return tracked, kept


def is_narrow(area_mm2: float | None) -> bool:
    """Whether a structure whose largest painted section measures ``area_mm2`` is one the
    session walks for: that section's equivalent radius is at most :data:`NARROW_MM`. None
    (painted as a stroke, :func:`napari_tpm.paint_size.section_areas`: a stroke's own area
    says nothing of the structure's) is not."""
    return area_mm2 is not None and math.sqrt(area_mm2 / math.pi) <= NARROW_MM


def grid_mask(found: np.ndarray, grid: WorkingGrid, features: torch.Tensor) -> np.ndarray:
    """``found`` ``[n, H, W]`` (native slices) on the feature grid of ``features``
    ``[n, C, h, w]``: a grid pixel is in where over half of it is."""
    mask = torch.from_numpy(found.astype(np.float32))[:, None]
    pooled = F.adaptive_avg_pool2d(grid.to_working(mask, pad_value=0.0), features.shape[-2:])
    return pooled[:, 0].numpy() > 0.5


def walk_scores(
    features: torch.Tensor,
    scores: np.ndarray,
    found: np.ndarray,
    painted: int,
    means: torch.Tensor,
    threshold: float,
) -> tuple[np.ndarray, torch.Tensor] | None:
    """The walk past the ends of ``found`` as the session keeps it: ``(reached, own)``, the
    slices it reached and ``[m, 1, h, w]`` scores there, or None where it reached none (or
    the painted slice ``painted`` gives no scale, :func:`distance_scale`).

    ``own`` is the walk's score where it kept a pixel and, elsewhere, held just under the
    boundary: upsampled, the outline then falls between the grid's pixels as the session's
    own does, and nothing the walk left out passes. ``scores`` ``[n, h, w]`` and ``means``
    ``[K, C]`` are the painted prototypes' log-odds and means.
    """
    scale = distance_scale(features[painted].float(), scores[painted], means, threshold)
    if scale is None:
        return None
    # the result on the painted slice: the paint itself where the slice was outlined
    section = int(found[painted].sum())
    tracked, kept = track_ends(features, scores, found, scale, threshold, section)
    reached = np.flatnonzero(kept.any((1, 2)))
    if len(reached) == 0:
        return None
    part = tracked[reached]
    own = np.where(kept[reached], part, np.minimum(part, threshold - HELD_UNDER))
    return reached, torch.from_numpy(own.astype(np.float32))[:, None]
