"""3D graph cut of per-voxel log-odds with image-edge pairwise terms (PyMaxflow).

The TPM scores every voxel on its own (slice by slice), so a label volume thresholded from its
log-odds can be ragged in 3D: speckle, one-slice gaps, a boundary that ignores the image edge.
A graph cut finds the labelling that minimises

    E(x) = sum_p [x_p = 1] * (-s_p)  +  sum_{p~q} w_pq * [x_p != x_q]

over the 6-neighbourhood, where ``s_p`` is the log-odds at the chosen prior (``x_p = 1`` is
foreground), so ``weight = 0`` gives back ``s > 0`` exactly, and

    w_pq = weight * exp(-(I_p - I_q)^2 / (2 sigma^2)) / distance_mm(p, q)

is cheap to cut where the image has an edge and dear inside flat tissue (Boykov and Jolly,
ICCV 2001). The max-flow is PyMaxflow's Boykov-Kolmogorov solver (optional dependency:
``pip install PyMaxflow`` or ``pip install napari-tpm[graphcut]``).

Speed: only the bounding box of the current foreground plus a margin in millimetres becomes a
graph; everything outside it stays background, and voxels on the box's faces pay the edge to
the background outside, so the box is a constraint, not a change of the energy inside.

Measured on the development volumes (benchmarks/RESULTS-accuracy.md, "Graph cut with image-edge
pairwise terms"): ``weight=8`` with the automatic sigma is the tuned setting; it adds 0.02-0.05
same-scan Dice to the connected threshold but nothing beyond the session's outline snap
(``snap_mm``), so the session does not use it by default.

One class at a time: for several structures, cut each class's own log-odds (its best-class
score where it is the best class, else a negative value) on its own box, and resolve overlaps
by the larger log-odds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["edge_sigma", "graph_cut"]

#: log-odds are bounded to +-this before they become capacities (-inf: slices never scored)
_HARD = 1e6


def _import_maxflow():
    try:
        import maxflow
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "graph_cut needs PyMaxflow: pip install PyMaxflow (or napari-tpm[graphcut])"
        ) from err
    return maxflow


def edge_sigma(image: np.ndarray) -> float:
    """Robust spread of the intensity step between 6-neighbours (the noise level of ``image``).

    1.4826 x the median absolute step over the non-zero steps of all three axes (a region of
    constant intensity, e.g. air clipped to one value, does not pull it to 0); 1.0 for a
    constant image.
    """
    img = np.asarray(image, dtype=np.float32)
    steps = [np.abs(np.diff(img, axis=a)).ravel() for a in range(img.ndim) if img.shape[a] > 1]
    if not steps:
        return 1.0
    d = np.concatenate(steps)
    d = d[d > 0]
    if d.size == 0:
        return 1.0
    return float(1.4826 * np.median(d))


def _box(
    region: np.ndarray, margin: Sequence[int], shape: tuple[int, ...]
) -> tuple[slice, ...] | None:
    """Bounding box of ``region`` grown by ``margin`` voxels per axis, clipped to ``shape``."""
    axes = [np.flatnonzero(region.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    if any(ax.size == 0 for ax in axes):
        return None
    return tuple(
        slice(max(int(ax[0]) - m, 0), min(int(ax[-1]) + m + 1, n))
        for ax, m, n in zip(axes, margin, shape)
    )


def _check(name: str, array: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if array is None:
        return None
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, log_odds {shape}")
    return array.astype(bool, copy=False)


def graph_cut(
    log_odds: np.ndarray,
    image: np.ndarray,
    spacing: Sequence[float],
    *,
    weight: float,
    sigma: float | None = None,
    sigma_scale: float = 1.0,
    bbox_margin_mm: float = 10.0,
    region: np.ndarray | None = None,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """Binary 3D graph cut of one class's log-odds; returns the foreground (bool, same shape).

    Args:
        log_odds: (z, y, x) float log-odds of the class at the chosen prior: a session's
            ``scores() + logit(prior)`` (its ``labels()`` keeps ``scores() > -logit(prior)``).
            ``-inf`` is allowed (never foreground); NaN is not.
        image: (z, y, x) intensities on the same grid (raw or normalised, any scale).
        spacing: voxel size in mm per axis; pairwise weights are divided by the step in mm.
        weight: strength of the pairwise term (0: exactly ``log_odds > 0``).
        sigma: intensity step at which an edge costs exp(-1/2) of a flat one, in the image's
            units; None: ``sigma_scale`` x :func:`edge_sigma` of the image inside the box.
        sigma_scale: multiplies the automatic sigma (ignored when ``sigma`` is given).
        bbox_margin_mm: the graph is the bounding box of ``region`` grown by this many mm per
            side; outside it the result is background.
        region: bool volume whose bounding box is cut (default ``log_odds > 0``; pass the
            connected result, e.g. ``session.labels() > 0``, so scattered false positives far
            away do not blow the box up to the whole volume).
        seeds: bool volume of voxels forced to foreground (e.g. the user's paint); they also
            widen the box.

    Raises:
        ValueError: shapes that are not 3D or do not match, NaN log-odds, non-finite image,
            bad spacing, weight, sigma or margin.
        ImportError: PyMaxflow is not installed.
    """
    s = np.asarray(log_odds)
    if s.ndim != 3:
        raise ValueError(f"log_odds must be 3D (z, y, x), got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating) and not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"log_odds must be numeric, got {s.dtype}")
    img = np.asarray(image)
    if img.shape != s.shape:
        raise ValueError(f"image has shape {img.shape}, log_odds {s.shape}")
    spacing = tuple(float(v) for v in spacing)
    if len(spacing) != 3 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing}")
    if not (np.isfinite(weight) and weight >= 0):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number or None, got {sigma!r}")
    if not (np.isfinite(sigma_scale) and sigma_scale > 0):
        raise ValueError(f"sigma_scale must be a positive number, got {sigma_scale!r}")
    if not (np.isfinite(bbox_margin_mm) and bbox_margin_mm >= 0):
        raise ValueError(f"bbox_margin_mm must be a finite number >= 0, got {bbox_margin_mm!r}")
    region = _check("region", region, s.shape)
    seeds = _check("seeds", seeds, s.shape)
    if np.isnan(s).any():
        raise ValueError("log_odds holds NaN")
    maxflow = _import_maxflow()

    out = np.zeros(s.shape, dtype=bool)
    grow = s > 0 if region is None else region
    if seeds is not None:
        grow = grow | seeds
    margin = [int(np.ceil(bbox_margin_mm / sp)) for sp in spacing]
    box = _box(grow, margin, s.shape)
    if box is None:
        return out
    unary = np.clip(s[box].astype(np.float64), -_HARD, _HARD)
    crop = img[box].astype(np.float32)
    if not np.isfinite(crop).all():
        raise ValueError("image holds NaN or inf inside the cut's box")

    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes(unary.shape)
    # sink side = foreground: a node that ends on the sink side cuts its source edge, max(-s, 0);
    # one on the source side cuts its sink edge, max(s, 0). The solver leaves nodes that no
    # flow reaches (s = 0, no neighbours) on the source side: ties are background, as s > 0.
    fg_cost = np.maximum(-unary, 0.0)
    bg_cost = np.maximum(unary, 0.0)
    if weight > 0:
        sig = sigma if sigma is not None else sigma_scale * edge_sigma(crop)
        for axis in range(3):
            if crop.shape[axis] < 2:
                continue
            step = np.diff(crop, axis=axis)
            w = (weight / spacing[axis]) * np.exp(-(step.astype(np.float64) ** 2) / (2 * sig**2))
            pad = [(0, 0)] * 3
            pad[axis] = (0, 1)  # the last voxel along the axis has no forward neighbour
            structure = np.zeros((3, 3, 3))
            structure[tuple(2 if a == axis else 1 for a in range(3))] = 1
            g.add_grid_edges(nodes, weights=np.pad(w, pad), structure=structure, symmetric=True)
            # faces of the box inside the volume: foreground there cuts the edge to outside
            lo, hi = box[axis].start, box[axis].stop
            flat = weight / spacing[axis]  # the outside voxel's intensity is not needed: bound
            index = [slice(None)] * 3
            if lo > 0:
                index[axis] = 0
                fg_cost[tuple(index)] += _outer(img, box, axis, lo - 1, 0, sig, flat)
            if hi < s.shape[axis]:
                index[axis] = -1
                fg_cost[tuple(index)] += _outer(img, box, axis, hi, -1, sig, flat)
    if seeds is not None:
        fg_cost[seeds[box]] = 0.0
        bg_cost[seeds[box]] = _HARD * 10
    g.add_grid_tedges(nodes, fg_cost, bg_cost)
    g.maxflow()
    out[box] = g.get_grid_segments(nodes)  # True: sink side
    return out


def _outer(
    img: np.ndarray,
    box: tuple[slice, ...],
    axis: int,
    outside: int,
    face: int,
    sig: float,
    flat: float,
) -> np.ndarray:
    """Weights of the edges from a face of the box to the voxels just outside it."""
    index = list(box)
    index[axis] = outside
    beyond = img[tuple(index)].astype(np.float64)
    index[axis] = box[axis].start if face == 0 else box[axis].stop - 1
    inner = img[tuple(index)].astype(np.float64)
    return flat * np.exp(-((inner - beyond) ** 2) / (2 * sig**2))
