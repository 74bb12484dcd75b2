"""A result's 3D parts: drop an unpainted part that runs on past the painted one.

The slice walk (:mod:`napari_tpm.continuity`) lets a piece grow while the result widens, since
an organ widens towards its widest slice. A neighbour that joins the organ there is kept: on T2
MR the left kidney's upper pole meets the spleen a slice below the spleen's widest slice, both
score alike, and the kidney's sections then keep the result as wide as the spleen's, so the
walk follows the kidney down to its lower pole (CHAOS 31's spleen, 0.60; 0.79 with this step).

In 3D the two are still two blobs. The result is split at its saddles: a watershed of its
distance map (mm) from the maxima at least :data:`H_MM` deep, and adjacent parts whose saddle
stands at least :data:`MERGE` of the shallower part's depth are one part again (a kidney's two
halves beside its hilum, a liver's lobes joined broadly). A part that holds almost none of
the paint (:data:`PAINT_SHARE`), is not deeper than the painted part (so not the organ's body
seen from paint near its end) and reaches more than :data:`BEYOND_MM` beyond the painted part's
first or last slice is another structure, and goes, with what it alone connected to the paint.
Chosen on the tuning volumes (benchmarks/RESULTS-accuracy.md, "3D parts that run on past the
painted one"); held out, every mode painted on the volume: 9 results up, 1 down, CHAOS same scan
0.812 -> 0.832 (two spleens 0.65-0.68 -> 0.85-0.88). The session runs it on the user's own
paint only (``SegmentOptions.outrunning_parts``).

Written here rather than taken from a library: the split is scikit-image's h-maxima and
watershed on scipy's exact distance transform (:func:`napari_tpm.postprocess.split_at_saddles`,
the slice walk's 2D split at necks too); the saddles between parts and their merging
(a union-find over a few dozen parts) are a few lines of numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_tpm.postprocess import (
    bounding_box,
    keep_connected,
    labelled_max,
    split_at_saddles,
)

__all__ = [
    "BEYOND_MM",
    "GRID_MM",
    "H_MM",
    "MAX_VOXELS",
    "MERGE",
    "PAINT_SHARE",
    "drop_outrunning_parts",
]

#: a distance-map maximum starts its own part when it stands this many mm above the saddle
#: to its neighbour's (skimage's h-maxima).
H_MM = 3.0
#: adjacent parts whose saddle stands at least this fraction of the shallower one's depth are
#: one part: on the tuning volumes the left kidney met CHAOS 31's spleen at 0.75 of the
#: kidney's depth, while a kidney's halves beside its hilum and a liver's lobes joined at
#: 0.80-0.92; at 0.7 BTCV 16's spleen kept its kidney (benchmarks/RESULTS-accuracy.md, "3D parts
#: that run on past the painted one").
MERGE = 0.8
#: a part holding at least this fraction of the paint is painted (a watershed line through the
#: painted slice leaves a neighbour a few painted pixels).
PAINT_SHARE = 0.02
#: how far (mm, along the slice axis) an unpainted part must reach beyond the painted part's
#: slices to go. 40 mm kept CHAOS 31's liver leak and lost its gains.
BEYOND_MM = 20.0
#: the in-plane grid (mm) the parts are found on, whole pixels pooled: a pixel of 1.34 mm or
#: more as it is, 1-1.33 mm (CHAOS) 2 x 2, a 512-pixel CT's 0.7 mm 3 x 3. The h-maxima's
#: reconstruction dominates the cost, a second on a liver at 1.5 mm. Pooling every BTCV
#: volume 2 x 2 (2.5 mm) left the kidney in BTCV 16's spleen (tuning BTCV same scan 0.895 ->
#: 0.888).
GRID_MM = 2.0
#: the most coarse voxels the parts are found in: a structure that would hold more is pooled
#: further in-plane. The h-maxima's reconstruction costs about 5 us a voxel, so a 3.3-million
#: voxel liver on a 512-pixel grid of 1.5 mm took 15-18 s; no development volume's result
#: comes near this (a BTCV liver holds ~0.25 million, the 0.7 mm phantom's pooled 0.37 million).
MAX_VOXELS = 1_000_000


def drop_outrunning_parts(
    mask: np.ndarray,
    paint: np.ndarray,
    spacing: Sequence[float],
    *,
    h_mm: float = H_MM,
    merge: float = MERGE,
    share: float = PAINT_SHARE,
    beyond_mm: float = BEYOND_MM,
) -> np.ndarray:
    """``mask`` without the unpainted parts that run on past the painted part.

    Args:
        mask: 3D boolean result of one structure, slice axis first.
        paint: 3D boolean, that structure's paint (same shape).
        spacing: voxel size (mm) of the three axes, slice axis first.
        h_mm, merge, share, beyond_mm: see :data:`H_MM`, :data:`MERGE`, :data:`PAINT_SHARE`,
            :data:`BEYOND_MM`.

    Returns:
        A boolean subset of ``mask``: ``mask`` itself (a new array) when nothing goes, else
        what stays connected to the paint once the outrunning parts are dropped.
    """
    mask = np.asarray(mask, dtype=bool)
    paint = np.asarray(paint, dtype=bool)
    if mask.ndim != 3 or paint.shape != mask.shape:
        raise ValueError(f"mask {mask.shape} and paint {paint.shape} must be one 3D shape")
    if len(spacing) != 3:
        raise ValueError(f"spacing needs three values, got {spacing!r}")
    out = mask.copy()
    painted = paint & mask
    if not painted.any():
        return out
    # the parts are tens of millimetres across: found on a grid of about GRID_MM in-plane, a
    # watershed costs a tenth (the h-maxima's reconstruction dominates), and every voxel of
    # the result lies in a coarse voxel that holds some of it
    f = max(1, round(GRID_MM / min(spacing[1], spacing[2])))
    # a huge structure (a liver on a wide, fine grid) is pooled further, for a bounded cost
    f = max(f, int(np.ceil(np.sqrt(np.count_nonzero(mask) / MAX_VOXELS))))
    # within the structure's own box (several structures share the caller's), its in-plane
    # start on the coarse grid's blocks: the same blocks, the same parts, a fraction of the cost
    box = bounding_box(mask)
    assert box is not None  # the paint lies on the mask
    box = (box[0], *(slice(b.start - b.start % f, b.stop) for b in box[1:]))
    crop, crop_paint = mask[box], painted[box]
    coarse, coarse_paint = _pooled(crop, f), _pooled(crop_paint, f)
    grid = (spacing[0], spacing[1] * f, spacing[2] * f)
    drop = _outrunning(coarse, coarse_paint, grid, h_mm, merge, share, beyond_mm)
    if drop is None:
        return out
    grown = np.repeat(np.repeat(drop, f, axis=1), f, axis=2)[:, : crop.shape[1], : crop.shape[2]]
    out[box] &= ~grown
    return keep_connected(out.astype(np.uint8), paint.astype(np.uint8)) > 0


def _pooled(mask: np.ndarray, f: int) -> np.ndarray:
    """``mask`` on a grid ``f`` times coarser in-plane: a coarse voxel holds any of its block."""
    if f == 1:
        return mask
    n, h, w = mask.shape
    padded = np.pad(mask, ((0, 0), (0, -h % f), (0, -w % f)))
    return padded.reshape(n, padded.shape[1] // f, f, padded.shape[2] // f, f).any(axis=(2, 4))


def _outrunning(
    mask: np.ndarray,
    paint: np.ndarray,
    spacing: tuple[float, float, float],
    h_mm: float,
    merge: float,
    share: float,
    beyond_mm: float,
) -> np.ndarray | None:
    """The voxels of ``mask``'s outrunning parts, or None when none (see the module)."""
    total = int(paint.sum())
    depth_map, parts, n = split_at_saddles(mask, spacing, h_mm)
    if n < 2:
        return None
    depth = np.zeros(n + 1)
    depth[1:] = labelled_max(depth_map, parts, n)
    group = _merged(parts, depth_map, depth, n, merge)
    grouped = group[parts]
    held = np.bincount(grouped[paint], minlength=n + 1)
    painted = np.flatnonzero(held >= share * total)
    painted = painted[painted > 0]
    if painted.size == 0:
        return None
    on_painted = np.isin(grouped, painted)
    slices = np.flatnonzero(on_painted.any(axis=(1, 2)))
    first, last = int(slices[0]), int(slices[-1])
    painted_depth = float(depth_map[on_painted].max())
    drop = np.zeros(mask.shape, dtype=bool)
    for g in np.unique(group[1:]):
        if g in painted:
            continue
        part = grouped == g
        if depth_map[part].max() > painted_depth:  # the organ's body, the paint near its end
            continue
        zs = np.flatnonzero(part.any(axis=(1, 2)))
        if max(first - zs[0], zs[-1] - last, 0) * spacing[0] > beyond_mm:
            drop |= part
    return drop if drop.any() else None


def _merged(
    parts: np.ndarray, depth_map: np.ndarray, depth: np.ndarray, n: int, merge: float
) -> np.ndarray:
    """(n + 1,) each part's group: adjacent parts whose saddle stands at least ``merge`` of the
    shallower one's depth share one. The saddle is the deepest voxel pair across their border
    (6-neighbours), each pair counted at its deeper voxel."""
    saddle = np.zeros((n + 1) * (n + 1))
    for axis in range(3):
        a = np.moveaxis(parts, axis, 0)
        d = np.moveaxis(depth_map, axis, 0)
        border = (a[:-1] != a[1:]) & (a[:-1] > 0) & (a[1:] > 0)
        if not border.any():
            continue
        lo = np.minimum(a[:-1][border], a[1:][border]).astype(np.int64)
        hi = np.maximum(a[:-1][border], a[1:][border]).astype(np.int64)
        np.maximum.at(saddle, lo * (n + 1) + hi, np.maximum(d[:-1][border], d[1:][border]))
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for key in np.flatnonzero(saddle):
        a, b = divmod(int(key), n + 1)
        if saddle[key] >= merge * min(depth[a], depth[b]):
            parent[root(a)] = root(b)
    return np.array([root(i) for i in range(n + 1)])
