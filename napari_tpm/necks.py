"""Cut thin bridges ("necks") between the painted organ and look-alike tissue it touches.

Keeping the 3D component connected to the paint (:func:`napari_tpm.postprocess.keep_connected`)
removes look-alike tissue elsewhere, but not tissue that touches the organ: a left kidney whose
result runs into the spleen, a spleen that runs along the colon, a liver into the stomach wall.
Such leaks join the organ through a neck that is much thinner than the organ itself. A
morphological opening by reconstruction removes them: erode the result by a ball of radius ``r``
(voxels deeper than ``r`` mm inside it), keep the eroded parts that hold the paint, and grow them
back by ``r`` inside the original result. A neck thinner than ``2 r`` does not survive the
erosion, so the tissue beyond it is not grown back; the organ's own outline is restored to
within a voxel.

The radius follows the organ: a fraction of the painted region's inscribed radius on its slice
(:func:`inscribed_radius_mm`), so a liver tolerates thick bridges and a kidney only thin ones.
Distances are in millimetres (scipy's exact Euclidean distance transform with the voxel
spacing), so the same setting means the same on a 0.7 mm CT and on a 9 mm-slice MR.
Measured on the tuning volumes (benchmarks/RESULTS-accuracy.md): same-scan Dice 0.798 -> 0.822
(BTCV CT) and 0.704 -> 0.751 (CHAOS MR) with the fraction 0.25.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "MAX_NECK_MM",
    "MIN_NECK_MM",
    "REACH",
    "cut_necks",
    "inscribed_radius_mm",
    "neck_radius_mm",
]

#: bounds of the erosion radius: below 2 mm the erosion removes nothing at CT/MR resolution;
#: above 10 mm a large organ's own thin parts (a liver lobe tip) are cut off with the leak.
MIN_NECK_MM = 2.0
MAX_NECK_MM = 10.0
#: how far (in erosion radii) the result is grown back around the kept parts; more than 1 so
#: that the corners an erosion rounds off come back (a cube's corner lies sqrt(3) r away).
REACH = 2.0


def inscribed_radius_mm(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Largest distance (mm) from a pixel of the 2D ``mask`` to its outside; 0 when empty."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if not mask.any():
        return 0.0
    padded = np.pad(mask, 1)  # an organ touching the image border still has an outside
    return float(ndimage.distance_transform_edt(padded, sampling=tuple(spacing)[:2]).max())


def neck_radius_mm(inscribed_mm: float, fraction: float) -> float:
    """The erosion radius for an organ of this inscribed radius, clipped to the bounds."""
    return float(np.clip(fraction * inscribed_mm, MIN_NECK_MM, MAX_NECK_MM))


def cut_necks(
    labels: np.ndarray,
    seeds: np.ndarray | None,
    spacing: Sequence[float],
    radius_mm: Mapping[int, float] | float,
) -> np.ndarray:
    """Per label value, keep what is reachable from its seeds without crossing a thin neck.

    Args:
        labels: integer label volume (one component per value after ``keep_connected``; more
            are allowed).
        seeds: same shape; voxels equal to a value are that value's seeds (the paint). None, or
            no seed of a value, keeps that value's largest eroded part (support from another
            volume). Seed voxels that lie in the result are always kept.
        spacing: voxel size in mm per axis of ``labels``.
        radius_mm: erosion radius per value, or one radius for all; a value missing from the
            mapping, or a radius <= 0, is left as it is.

    Returns:
        A new label array. A value whose result is thinner than ``2 r`` everywhere is returned
        unchanged (the erosion would leave nothing to grow back from).
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got {labels.dtype}")
    if seeds is not None and seeds.shape != labels.shape:
        raise ValueError(f"seeds shape {seeds.shape} does not match labels shape {labels.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != labels.ndim or min(spacing) <= 0:
        raise ValueError(f"spacing must be {labels.ndim} positive numbers, got {spacing}")
    out = np.array(labels, copy=True)
    boxes = ndimage.find_objects(labels) if labels.min(initial=0) >= 0 else []
    for value, box in enumerate(boxes, start=1):
        r = radius_mm.get(value, 0.0) if isinstance(radius_mm, Mapping) else float(radius_mm)
        if r <= 0 or box is None:
            continue
        box = _grow(box, r, spacing, labels.shape)
        mask = labels[box] == value
        seed = None if seeds is None else np.asarray(seeds[box]) == value
        # the decision needs no fine grid: on blocks of ~r/2.5 mm the erosion still spans >= 2
        # blocks, and the outline itself stays the fine one (a 3 M-voxel liver: 4.9 s -> ~0.5 s)
        factors = tuple(max(1, int(r / (2.5 * sp))) for sp in spacing)
        coarse = _block_reduce(mask, factors, np.mean) >= 0.5
        cseed = None if seed is None else _block_reduce(seed, factors, np.max) > 0
        cspacing = tuple(sp * f for sp, f in zip(spacing, factors, strict=True))
        kept = _open_by_reconstruction(coarse, cseed, cspacing, r)
        if kept is None:
            continue
        if max(factors) > 1:  # one block of slack so the fine outline is never nicked
            kept = ndimage.binary_dilation(kept, np.ones((3,) * kept.ndim, bool))
        kept = _block_expand(kept, factors, mask.shape) & mask
        if seed is not None:
            kept |= mask & seed
        out[box][mask & ~kept] = 0
    return out


def _block_reduce(mask: np.ndarray, factors: tuple[int, ...], func) -> np.ndarray:
    """``func`` over blocks of ``factors`` voxels (the array zero-padded to whole blocks)."""
    if max(factors) == 1:
        return mask
    pad = [(0, -n % f) for n, f in zip(mask.shape, factors, strict=True)]
    m = np.pad(mask, pad).astype(np.float32)
    shape = []
    for n, f in zip(m.shape, factors, strict=True):
        shape += [n // f, f]
    return func(m.reshape(shape), axis=tuple(range(1, 2 * mask.ndim, 2)))


def _block_expand(coarse: np.ndarray, factors: tuple[int, ...], shape) -> np.ndarray:
    """Nearest-neighbour upsampling of a block grid back to ``shape``."""
    for axis, f in enumerate(factors):
        if f > 1:
            coarse = np.repeat(coarse, f, axis=axis)
    return coarse[tuple(slice(0, n) for n in shape)]


def _grow(box: tuple[slice, ...], r: float, spacing, shape) -> tuple[slice, ...]:
    """The box enlarged by r (plus one voxel) so distances near its faces are exact."""
    pads = [int(np.ceil(r / s)) + 1 for s in spacing]
    return tuple(
        slice(max(b.start - p, 0), min(b.stop + p, n))
        for b, p, n in zip(box, pads, shape, strict=True)
    )


def _open_by_reconstruction(
    mask: np.ndarray, seed: np.ndarray | None, spacing: tuple[float, ...], r: float
) -> np.ndarray | None:
    """Bool mask of what survives, or None when nothing is deeper than ``r`` (leave as is)."""
    core = ndimage.distance_transform_edt(mask, sampling=spacing) > r
    parts, n = ndimage.label(core, structure=np.ones((3,) * mask.ndim, bool))
    if n == 0:
        return None
    has_seed = seed is not None and bool((seed & mask).any())
    if has_seed and (parts[seed] > 0).any():
        keep = np.unique(parts[seed & (parts > 0)])
    elif has_seed:  # paint thinner than 2r: the eroded part nearest to it
        to_seed = ndimage.distance_transform_edt(~seed, sampling=spacing)
        ids = np.arange(1, n + 1)
        keep = ids[[int(np.argmin(ndimage.minimum(to_seed, parts, ids)))]]
    else:
        keep = np.array([1 + int(np.argmax(np.bincount(parts.ravel())[1:]))])
    # every voxel goes with its nearest eroded part (a leak beyond a neck has its own), and
    # only within `REACH * r` of it: a thin strand with no part of its own is cut there too
    dist, nearest = ndimage.distance_transform_edt(~core, sampling=spacing, return_indices=True)
    return mask & np.isin(parts[tuple(nearest)], keep) & (dist <= REACH * r)
