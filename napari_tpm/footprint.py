"""Footprints: where and how large an organ is on a slice, and which region fits the paint.

Paint from another patient leaves no painted voxel in this scan to say which region is the
organ. Organs of adult abdomens differ far less between patients than a wrong organ or an empty
result does, so a region is judged by its footprint against the paint's: its area on its widest
(or best-fitting) slice in mm², its centroid in the body's box on that slice, and its height in
the scan (:func:`footprint_penalty`). The session keeps the region that fits best
(:func:`keep_fitting_component`); the contrast search scores whole results with it
(:func:`napari_tpm.contrast.fit_score`); the second pass starts from it
(:mod:`napari_tpm.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import cc3d
import numpy as np
from scipy import ndimage

from napari_tpm.postprocess import bounding_box

__all__ = [
    "BODY_MARGIN",
    "FIT_WEIGHTS",
    "MISSING_PENALTY",
    "PICK_WEIGHTS",
    "Footprint",
    "FootprintWeights",
    "Found",
    "central_slices",
    "footprint_penalty",
    "footprints",
    "keep_fitting_component",
    "pixel_area",
    "slice_footprint",
]


@dataclass(frozen=True)
class FootprintWeights:
    """Weights of the terms of :func:`footprint_penalty`.

    Attributes:
        area: per unit of |log(area ratio)|.
        position: per unit of body-relative distance (the body's box spans [-1, 1]).
        height: per unit of relative slice position (capped at 1).
        matched_height: the same for a paint whose slice was matched into the query
            (``Footprint.matched``): that height is measured, not assumed from the two fields
            of view, so it may count for more.
        score: weight of a region's mean log-odds against its penalty when
            :func:`keep_fitting_component` picks one region (the look-alike neighbour matches
            the prototypes less well than the organ does);
            :func:`napari_tpm.contrast.fit_score` compares whole results and leaves it out.
    """

    area: float
    position: float
    height: float
    matched_height: float
    score: float = 0.0


#: the weights with which :func:`napari_tpm.contrast.fit_score` compares the contrast search's
#: whole results, and :func:`keep_fitting_component` the regions of a paint compared slice by
#: slice (chosen on the tuning volumes)
FIT_WEIGHTS = FootprintWeights(area=0.2, position=1.0, height=0.5, matched_height=2.0, score=0.15)
#: a pixel is body when it stands this far (normalised units) above its slice's floor
BODY_MARGIN = 0.15
#: the penalty of a class the result does not contain at all
MISSING_PENALTY = 11.3
#: the weights with which :func:`keep_fitting_component` picks one region of a result for one
#: organ painted (compared on its widest slice). Unlike :data:`FIT_WEIGHTS`, the size counts
#: for little: a first pass finds an organ's core, often a third of the painted area, while a
#: look-alike neighbour (the spleen above the left kidney) may match the painted size; the
#: height counts for more. Chosen on every ordered tuning pair (BTCV 15-21, CHAOS 21-33, four
#: organs): of the 684 region choices where one region was mostly the organ, these picked it
#: 598 times, the fit weights 574 times (benchmarks/RESULTS-accuracy.md, "Weights of the
#: region pick"). A paint compared slice by slice (several classes on one slice) keeps
#: :data:`FIT_WEIGHTS`: there each region's best-fitting slice competes, and a small region
#: with one slice at the painted height would win on these weights.
PICK_WEIGHTS = FootprintWeights(area=0.1, position=1.0, height=1.0, matched_height=2.0, score=0.1)


@dataclass(frozen=True)
class Footprint:
    """Where and how large a class is on one slice: its widest, or the painted one.

    Attributes:
        area_mm2: its area on that slice.
        position: (row, column) of its centroid relative to the body's box, each in [-1, 1].
        height: that slice's index over the last index (0 first slice, 1 last).
        widest: for a paint's footprint, whether the painted slice is taken as the organ's
            widest, so that a result is compared on its own widest slice. False when one slice
            shows several painted classes: it is the widest of at most one of them (often the
            tip of the liver or the spleen), and a result is then compared on whichever of
            its slices fits the paint best (:func:`footprint_penalty`).
        matched: for a paint's footprint, whether ``height`` is the painted slice matched
            into the query (:func:`napari_tpm.slice_match.map_slice`, CT) rather than its
            fraction of the paint's own scan; the height then weighs
            ``matched_height`` of :class:`FootprintWeights`.
        span: for a result's footprint, the relative heights of its region's first and last
            slice. A matched paint's slice is then compared with that span, not with the
            result's widest slice: the painted slice lies somewhere in the organ, and an
            organ's widest slice may lie a few centimetres from its middle.
    """

    area_mm2: float
    position: tuple[float, float]
    height: float
    widest: bool = True
    matched: bool = False
    span: tuple[float, float] | None = None


#: a result's footprint: on its widest slice, or one per slice it covers (see Footprint.widest)
Found = Footprint | tuple[Footprint, ...]


def pixel_area(spacing: Sequence[float], axis: int) -> float:
    """The area in mm² of one pixel of a slice across ``axis`` of a (z, y, x) ``spacing``."""
    return float(np.prod([s for i, s in enumerate(spacing) if i != axis]))


def _body_box(image2d: np.ndarray) -> tuple[float, float, float, float]:
    """``(y0, y1, x0, x1)`` of the body on a normalised slice: its 1st-99th percentile box.

    The body is what stands above the slice's floor (air, or a windowed CT's lower bound) by
    :data:`BODY_MARGIN` after a little smoothing, opened to detach the table, the largest piece
    with its holes filled: the filter bank's own body rule (its position channels), at native
    resolution. On the tuning volumes the same organ in two patients lies closer in this frame
    (mean distance 0.15) than in one from Otsu's threshold (0.17), which on a windowed CT cuts
    at the subcutaneous fat.
    """
    h, w = image2d.shape
    whole = (0.0, h - 1.0, 0.0, w - 1.0)
    smooth = ndimage.gaussian_filter(image2d, 1.0)
    body = ndimage.binary_opening(smooth > image2d.min() + BODY_MARGIN, iterations=3)
    pieces, n = ndimage.label(ndimage.binary_fill_holes(body))
    if n == 0:
        return whole
    big = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
    ys, xs = np.nonzero(big)
    y0, y1 = np.quantile(ys, (0.01, 0.99))
    x0, x1 = np.quantile(xs, (0.01, 0.99))
    return float(y0), float(y1), float(x0), float(x1)


def central_slices(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``labels`` (n, H, W, slice axis first) with each of ``values`` kept on one slice only:
    the painted slice nearest the middle of its painted ones (of two as near, the wider).

    A paint on several slices of another volume is described by one slice
    (:func:`footprints`), and a result must cover that slice's height matched into the query
    (:class:`Footprint` ``span``). The match errs by a few slices; the slice nearest the
    organ's middle leaves the most room on both sides, where the widest painted slice may lie
    at a quarter of the organ. On BTCV's tuning pairs, three painted slices of the next
    patient: 0.738 from the widest, 0.771 from the central (one slice 0.792); CHAOS 0.744 and
    0.743 (benchmarks/RESULTS-accuracy.md, "Several slices painted on another patient").
    """
    out = np.zeros_like(labels)
    for v in values:
        mask = labels == v
        areas = mask.sum(axis=(1, 2))
        zs = np.flatnonzero(areas)
        if zs.size == 0:
            continue
        off = np.abs(2 * zs - (zs[0] + zs[-1]))  # twice the distance from the middle
        z = int(zs[np.lexsort((-areas[zs], off))[0]])  # nearest, then widest
        out[z][mask[z]] = v
    return out


def footprints(
    labels: np.ndarray,
    image: np.ndarray,
    values: Sequence[int],
    pixel_area_mm2: float,
    *,
    widest: bool = True,
    every_slice: bool = False,
    boxes: dict[int, tuple[float, float, float, float]] | None = None,
) -> dict[int, Found]:
    """The :class:`Footprint` of each of ``values`` found in ``labels``.

    Args:
        labels: (n, H, W) labels or paint, slice axis first.
        image: (n, H, W) the matching (normalised) image, for the body's box.
        values: the classes to describe; one that ``labels`` does not hold is left out.
        pixel_area_mm2: the area of one pixel of a slice.
        widest: the footprints' :attr:`Footprint.widest` (for a paint's footprint).
        every_slice: give a result's footprint on each slice it covers (a tuple, slice
            order), not only on its widest: what a paint with ``widest=False`` is compared to.
        boxes: a memo of the body's box per slice index of ``image`` (filled as needed), so
            that repeated calls on one volume find each slice's body once.
    """
    if labels.shape != image.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and image {image.shape} must be one 3D shape")
    boxes = {} if boxes is None else boxes

    def describe(z: int, mask: np.ndarray) -> Footprint:
        ys, xs = np.nonzero(mask[z])
        return slice_footprint(ys, xs, z, image, pixel_area_mm2, boxes, widest)

    out: dict[int, Found] = {}
    for v in values:
        mask = labels == v
        areas = mask.sum(axis=(1, 2))
        if not areas.any():
            continue
        last = max(image.shape[0] - 1, 1)
        out[int(v)] = _described(areas, every_slice, partial(describe, mask=mask), 0, last)
    return out


def _described(
    areas: np.ndarray,
    every_slice: bool,
    describe: Callable[[int], Footprint],
    offset: int,
    last: int,
) -> Found:
    """A region's :data:`Found` from its per-slice ``areas``: ``describe`` on its widest slice,
    or, ``every_slice``, on each slice it covers (a tuple, slice order). Each carries the
    region's :attr:`Footprint.span`: its slices ``+ offset`` over ``last``, the volume's last
    slice index."""
    covered = np.flatnonzero(areas)
    span = ((int(covered[0]) + offset) / last, (int(covered[-1]) + offset) / last)
    if not every_slice:
        return replace(describe(int(areas.argmax())), span=span)
    return tuple(replace(describe(int(z)), span=span) for z in covered)


def slice_footprint(
    ys: np.ndarray,
    xs: np.ndarray,
    z: int,
    image: np.ndarray,
    pixel_area_mm2: float,
    boxes: dict[int, tuple[float, float, float, float]],
    widest: bool = True,
) -> Footprint:
    """The :class:`Footprint` of the pixels ``(ys, xs)`` of slice ``z`` of ``image`` (n, H, W):
    their area, their centroid in the body's box (memo ``boxes``), the slice's relative
    height."""
    if z not in boxes:
        boxes[z] = _body_box(np.asarray(image[z], dtype=np.float32))
    y0, y1, x0, x1 = boxes[z]
    row = (2 * ys.mean() - y0 - y1) / max(y1 - y0, 1.0)
    col = (2 * xs.mean() - x0 - x1) / max(x1 - x0, 1.0)
    height = z / max(image.shape[0] - 1, 1)
    return Footprint(float(ys.size * pixel_area_mm2), (float(row), float(col)), height, widest)


def footprint_penalty(
    support: Footprint, result: Found | None, weights: FootprintWeights = FIT_WEIGHTS
) -> float:
    """How far ``result`` is from the painted ``support`` (0: same size, place and height),
    its terms weighted by ``weights``.

    ``result`` given slice by slice (a tuple) is as far as its best-fitting slice: that is the
    comparison for a painted slice that need not be the organ's widest
    (``support.widest`` False). On the tuning volumes' every ordered CHAOS pair, with all four
    organs painted on one slice, it lifted the mean Dice from 0.448 to 0.550; for one organ
    painted on its middle slice it lowered it (0.681 to 0.646), so one organ is compared on
    the result's widest slice.
    """
    if result is None:
        return MISSING_PENALTY
    if not isinstance(result, Footprint):
        each = (footprint_penalty(support, f, weights) for f in result)
        return min(each, default=MISSING_PENALTY)
    size = abs(np.log(max(result.area_mm2, 1e-6) / max(support.area_mm2, 1e-6)))
    place = float(np.hypot(*np.subtract(result.position, support.position)))
    if support.matched and result.span is not None:  # how far the region misses the slice
        lo, hi = result.span
        height = min(max(lo - support.height, support.height - hi, 0.0), 1.0)
        height_weight = weights.matched_height
    else:
        height = min(abs(result.height - support.height), 1.0)
        height_weight = weights.height
    return weights.area * size + weights.position * place + height_weight * height


def keep_fitting_component(
    labels: np.ndarray,
    image: np.ndarray,
    target: dict[int, Footprint],
    pixel_area_mm2: float,
    *,
    score: np.ndarray | None = None,
    candidates: int = 8,
    boxes: dict[int, tuple[float, float, float, float]] | None = None,
) -> np.ndarray:
    """Keep, per class of ``target``, the 3D component whose footprint fits the paint best.

    For paint from another volume there is no painted voxel in this one to say which region is
    the organ, and the largest region is often a look-alike neighbour: the other kidney, the
    liver for the spleen. The organ is the region of about the painted size, at about the same
    place in the body and height in the scan (:func:`footprint_penalty` with
    :data:`PICK_WEIGHTS`, or :data:`FIT_WEIGHTS` for a paint compared slice by slice). Only the
    ``candidates`` largest components of a class compete (a speck can sit anywhere).

    Args:
        labels: (n, H, W) labels, slice axis first; classes not in ``target`` stay as they are.
        image: (n, H, W) the normalised image, for the body's box.
        target: the paint's footprint per class (:func:`footprints`).
        pixel_area_mm2: the area of one pixel of a slice.
        score: (n, H, W) log-odds of each voxel's best class; a region's mean counts for it
            (``score`` of the weights), as the look-alike neighbour matches the prototypes less
            well than the organ does.
        boxes: a memo of the body's box per slice of ``image`` (see :func:`footprints`).

    Returns:
        A new array like ``labels``.
    """
    out = np.array(labels, copy=True)
    boxes = {} if boxes is None else boxes
    for v, want in target.items():
        mask = labels == v
        box = bounding_box(mask)
        if box is None:
            continue
        # the class's box only: the regions, their sizes and scores are the same as over the
        # whole volume (cc3d numbers them in raster order, which a crop keeps), at a fraction
        # of the cost (the volume holds tens of millions of voxels, an organ a few)
        sub = mask[box]
        pieces = cc3d.connected_components(sub, connectivity=26)
        sizes = np.bincount(pieces.ravel())[1:]
        if sizes.size <= 1:
            continue
        order = [int(i) for i in np.argsort(sizes)[::-1][:candidates] + 1]
        found = _piece_footprints(
            pieces, box, image, order, pixel_area_mm2, boxes, every_slice=not want.widest
        )
        weights = PICK_WEIGHTS if want.widest else FIT_WEIGHTS
        cost = {i: footprint_penalty(want, found.get(i), weights) for i in order}
        if score is not None and weights.score:
            sums = np.bincount(pieces.ravel(), weights=score[box].ravel().astype(np.float64))
            for i in order:
                cost[i] -= weights.score * float(sums[i] / sizes[i - 1])
        keep = min(order, key=cost.__getitem__)
        out[box][sub & (pieces != keep)] = 0
    return out


def _piece_footprints(
    pieces: np.ndarray,
    box: tuple[slice, ...],
    image: np.ndarray,
    order: Sequence[int],
    pixel_area_mm2: float,
    boxes: dict[int, tuple[float, float, float, float]] | None = None,
    *,
    every_slice: bool = False,
) -> dict[int, Found]:
    """:func:`footprints` of the regions ``order`` of ``pieces``, a crop at ``box`` of the
    volume ``image`` shows: one pass counts every region's area on every slice."""
    boxes = {} if boxes is None else boxes
    z0, y0, x0 = (b.start for b in box)
    n = int(pieces.max()) + 1
    slice_of = np.arange(pieces.shape[0], dtype=np.int64)[:, None, None]
    areas = np.bincount((slice_of * n + pieces).ravel(), minlength=pieces.shape[0] * n)
    areas = areas.reshape(pieces.shape[0], n)
    out: dict[int, Found] = {}

    def describe(z: int, i: int) -> Footprint:
        ys, xs = np.nonzero(pieces[z] == i)
        # the whole volume's pixel and slice indices, as footprints() has them
        return slice_footprint(ys + y0, xs + x0, z0 + z, image, pixel_area_mm2, boxes)

    last = max(image.shape[0] - 1, 1)
    for i in order:
        out[i] = _described(areas[:, i], every_slice, partial(describe, i=i), z0, last)
    return out
