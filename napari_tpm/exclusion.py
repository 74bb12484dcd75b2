"""Background strokes as "not this region": remove the part of a result that a stroke marks.

A background stroke (label 255) says the tissue under it is not the organ. As background
evidence for the prototypes and as erased pixels it barely moves a look-alike neighbour that
touches the organ: the neighbour's region stays joined to the organ's around the stroke, and the
connected-region step and the slice sweep keep it (CHAOS 31's spleen with one to three strokes
across the left kidney below it: 0.61 -> 0.63-0.73; benchmarks/RESULTS-accuracy.md, "Background
strokes against a touching neighbour").

What a user means is the region. So the result is shared out between the paint and the strokes:
every voxel goes to the seed it is nearer to along paths inside the result, scikit-image's
minimum-cost paths on a grid of about ``GRID_MM`` in plane. A path through a narrow part of the
result costs more per millimetre than one through a thick part (``NARROW_MM``), so the shares
part where the organ and its neighbour meet, not halfway between the seeds: with plain path
lengths, an organ's far slices beside a stroked neighbour went to the stroke (a synthetic pair of
touching cylinders lost a quarter of the organ). On the tuning volumes (RESULTS-accuracy.md,
"Background strokes against a touching neighbour"), one to three strokes across the left kidney
under the spleen: CHAOS 31 0.63-0.73 -> 0.66-0.78, BTCV 16 0.77-0.83 -> 0.83-0.87.

A stroke on tissue the result took in beside the organ (a kidney's filled renal sinus, a thin
leak along its edge) lies nearer the organ's sections beyond it than the paint does, and the
shares then gave those sections to the stroke (BTCV 17's left kidney, one stroke in its sinus
five slices from the paint: 0.92 -> 0.80). With the result's scores, voxels scoring well above
the stroked tissue (``STROKE_MARGIN``) stay with the paint: a look-alike neighbour scores like
the tissue under its stroke and still goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.graph import MCP_Geometric
from skimage.measure import block_reduce

__all__ = ["GRID_MM", "NARROW_MM", "STROKE_MARGIN", "drop_stroked"]

#: in-plane size (mm) of the grid the path lengths are measured on
GRID_MM = 2.5
#: a path's cost per mm is ``(depth + NARROW_MM) ** -2``, ``depth`` the distance (mm) from
#: there to the region's edge: narrow parts cost much more than the organ's thick body
NARROW_MM = 5.0
#: with the result's scores, a voxel scoring this many log-odds above the stroked pixels'
#: median stays the organ's (it joins the paint's seeds): a stroke on tissue the result took in
#: beside the organ (a kidney's renal sinus, filled) otherwise claimed the organ's sections
#: beyond it, nearer the stroke than the paint. Chosen on the tuning volumes' one-correction
#: benchmark (``fix`` mode; RESULTS-accuracy.md, "One correction")
STROKE_MARGIN = 2.0


def drop_stroked(
    mask: np.ndarray,
    paint: np.ndarray,
    strokes: np.ndarray,
    spacing: Sequence[float],
    score: np.ndarray | None = None,
) -> np.ndarray:
    """The part of ``mask`` nearer to ``paint`` than to ``strokes`` along paths inside it.

    Args:
        mask: 3D boolean result of one structure.
        paint: 3D boolean, where that structure was painted (same shape).
        strokes: 3D boolean, the background strokes (same shape).
        spacing: voxel size per axis (mm), for the path lengths.
        score: the result's log-odds (same shape), or None. Voxels scoring
            :data:`STROKE_MARGIN` above the median of the stroked ones are kept with the paint.

    Returns:
        A boolean subset of ``mask``. Without paint, or with no stroke touching the result,
        ``mask`` itself (a copy); the painted voxels are always kept.
    """
    mask = np.asarray(mask, dtype=bool)
    paint, strokes = np.asarray(paint, dtype=bool), np.asarray(strokes, dtype=bool)
    if mask.ndim != 3 or mask.shape != paint.shape or mask.shape != strokes.shape:
        raise ValueError(
            f"mask, paint and strokes must be 3-D and one shape, got {mask.shape}, "
            f"{paint.shape}, {strokes.shape}"
        )
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"spacing needs 3 positive values, got {tuple(spacing)}")
    paint = paint & mask
    strokes = strokes & ~paint
    touching = strokes & ndimage.binary_dilation(mask)
    if not paint.any() or not touching.any():
        return mask.copy()
    if score is not None:  # what scores far above the stroked tissue is not what it marks
        paint = paint | (mask & (score >= float(np.median(score[touching])) + STROKE_MARGIN))
    region = mask | touching
    # the path lengths on a grid of about GRID_MM in plane: a contact is centimetres wide, and
    # a fine grid costs seconds per call on a liver (9 M voxels: 30 s at full resolution)
    step = [1] + [max(1, round(GRID_MM / float(s))) for s in spacing[1:]]
    coarse = tuple(float(s) * k for s, k in zip(spacing, step, strict=True))
    small = block_reduce(region, tuple(step), np.any)
    # a step through a narrow part of the region costs more, so the shares part where the
    # organ and its neighbour meet (narrower than either) rather than halfway between seeds
    depth = ndimage.distance_transform_edt(np.pad(small, 1), sampling=coarse)
    costs = np.where(small, (depth[(slice(1, -1),) * 3] + NARROW_MM) ** -2.0, np.inf)
    from_paint = _geodesic(costs, block_reduce(paint, tuple(step), np.any), coarse)
    from_strokes = _geodesic(costs, block_reduce(touching, tuple(step), np.any), coarse)
    nearer = _unpool(from_strokes < from_paint, step, mask.shape)
    return mask & ~(nearer & ~paint)


def _unpool(array: np.ndarray, step: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Each block's value on every voxel of it, cropped to ``shape``."""
    for axis, k in enumerate(step):
        array = np.repeat(array, k, axis=axis)
    return array[tuple(slice(0, n) for n in shape)]


def _geodesic(costs: np.ndarray, seeds: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Path length in mm from ``seeds`` to every voxel, through voxels of finite cost."""
    mcp = MCP_Geometric(costs, sampling=tuple(float(s) for s in spacing))
    lengths, _ = mcp.find_costs([tuple(p) for p in np.argwhere(seeds)])
    return lengths
