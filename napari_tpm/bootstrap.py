"""Pseudo-paint: the slice of a first result that a second, same-scan pass starts from.

With paint from another patient (or an atlas) the prototypes carry that patient's appearance,
and the query's organ scores lower than it would against its own: cross-patient Dice sat far
below same-scan Dice (0.54 against 0.88 on the BTCV tuning volumes). Once the first pass has
found the organ, its most reliable slice can stand in for the user's paint on this volume, and
the same-scan pipeline (prototypes from this scan, its own calibration, slice continuity) runs
from there.

Which part of the first result to trust was measured on the tuning volumes (another patient's
support, one painted slice; benchmarks/RESULTS-accuracy.md "Second pass from the first
result"): the slice where the result is widest, and on it the 2D piece with the highest mean
score, used whole. The widest piece instead (a leak is often the widest part) and an eroded
core (it shrinks the count the calibration reproduces) both did worse, and so did the result's
middle slice, three slices, and a second round.

For one organ painted on another volume there is more to go on: the paint's footprint (its area,
its place in the body, its height in the scan; :mod:`napari_tpm.contrast`). The widest slice of
a first result that ran from a kidney into the spleen is the spleen's, and the second pass then
segments the spleen. :func:`fitting_pseudo_paint` takes instead the 2D piece, on any slice, whose
footprint fits the paint best, when it fits clearly better than the widest slice's piece
(MR: a CT's paint, matched into the query by slice profiles, keeps the widest slice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy import ndimage

from napari_tpm.footprint import (
    FIT_WEIGHTS,
    Footprint,
    FootprintWeights,
    footprint_penalty,
    slice_footprint,
)
from napari_tpm.postprocess import IN_PLANE
from napari_tpm.tpm.posterior import logit, sigmoid

__all__ = [
    "CORE_LOGIT_SHIFT",
    "FIT_MARGIN",
    "FLOOR_HEIGHT",
    "FLOOR_TRIGGER",
    "MIN_PIECE",
    "OWN_SLICE_FRACTION",
    "count_floor_prior",
    "fitting_pseudo_paint",
    "pseudo_paint",
]

#: how much lower (in log-odds) the second pass's default boundary sits than the calibrated
#: one. The calibration reproduces the pseudo-paint's area, but that piece is a core: on the
#: tuning pairs it held 0.6-0.96 of the organ's section on its slice, and the results came out
#: too small (precision 0.97-1.00, recall 0.45-0.82). Chosen on the tuning volumes
#: (benchmarks/RESULTS-accuracy.md, "Another patient's paint: the prototype match picks the
#: region, and the second pass's boundary moves out").
CORE_LOGIT_SHIFT = 1.0

#: how much lower (:func:`napari_tpm.footprint.footprint_penalty` with the log-odds term) the
#: best-fitting piece's cost must be than the widest slice's piece for the second pass to start
#: from it. Any lower cost was not enough: a piece of the organ's lower slices won over its
#: widest one and the second pass, started near the organ's end, leaked beyond it (CHAOS 21's
#: right kidney from CHAOS 22's paint 0.91 -> 0.67, and three livers). The margins that helped
#: were 0.27-0.55 (kidney against spleen), the ones that hurt 0.01-0.19. Chosen on the tuning
#: volumes (benchmarks/RESULTS-accuracy.md, "The second pass starts from the piece that fits").
FIT_MARGIN = 0.25
#: the first pass's count floor: the painted section over this many of its radii of height
FLOOR_HEIGHT = 1.0
#: ... applied only when fewer voxels than this fraction of that count pass the calibrated
#: boundary: the first pass found next to nothing
FLOOR_TRIGGER = 0.05
#: with several classes, one whose section on their shared slice is under this fraction of its
#: widest is painted on its widest slice instead. All four organs painted on another patient's
#: slice catch the kidneys near a pole, where the classes' shared slice shows a cap of them;
#: started from that cap, the joint second pass lost a kidney found alone (BTCV 16's left
#: kidney 0.81 alone, 0.005 joint, on the spleen). Every ordered tuning pair, all four organs
#: on one slice: BTCV 0.523 -> 0.590 (11 up, 1 down), CHAOS 0.695 -> 0.722 (8 up, 2 down);
#: 0.25 and 0.75 within 0.006 of it. Held out: BTCV 0.460 -> 0.477 (7 up, 1 down), AMOS
#: 0.446 -> 0.449, TotalSegmentator CT equal, but CHAOS 0.571 -> 0.536 (2 up, 6 down: where
#: the capped class's first result was itself half wrong, its widest slice is too)
#: (benchmarks/RESULTS-accuracy.md, "Several organs' second pass: a class caught at its pole
#: gets its widest slice")
OWN_SLICE_FRACTION = 0.5
#: pieces of fewer pixels are not candidates (a speck's place and mean score say little)
MIN_PIECE = 10


def pseudo_paint(labels: np.ndarray, score: np.ndarray, values: Sequence[int]) -> np.ndarray | None:
    """Paint for a second pass, taken from a first result; None when it found nothing.

    Args:
        labels: (n, H, W) label volume of the first pass, slice axis first.
        score: (n, H, W) float log-odds of each voxel's best class (higher: more confident).
        values: the label values to paint (the classes of the first pass).

    Several classes share the slice that shows the most of them (then the largest total
    area), so that what the second pass takes as background there is background. A class
    that slice shows at under :data:`OWN_SLICE_FRACTION` of its widest section (or not at
    all) is left off it and gets its widest slice instead, painted with every class found
    there for the same reason. On each painted slice a class is the 2D piece of its result
    with the highest mean score. One class: its widest slice.
    """
    if labels.shape != score.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and score {score.shape} must be one 3D shape")
    found = [v for v in values if (labels == v).any()]
    if not found:
        return None
    areas = np.stack([(labels == v).sum(axis=(1, 2)) for v in found])  # (classes, n)
    shown = (areas > 0).sum(0)
    shared = int(np.lexsort((areas.sum(0), shown))[-1])
    capped = areas[:, shared] < OWN_SLICE_FRACTION * areas.max(1)
    paint = np.zeros(labels.shape, dtype=labels.dtype)
    slices = [(shared, [v for v, c in zip(found, capped, strict=True) if not c])]
    slices += [(int(area.argmax()), found) for area in areas[capped]]
    for z, painted in slices:
        for v in painted:
            if (labels[z] == v).any():
                paint[z][_best_piece(labels[z] == v, score[z])] = v
    return paint


def _best_piece(mask: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The 2D connected piece of ``mask`` whose mean ``score`` is highest."""
    pieces, n = ndimage.label(mask)
    if n <= 1:
        return mask
    means = ndimage.mean(score, pieces, np.arange(1, n + 1))
    return pieces == 1 + int(np.argmax(means))


def fitting_pseudo_paint(
    labels: np.ndarray,
    score: np.ndarray,
    value: int,
    target: Footprint,
    image: np.ndarray,
    pixel_area_mm2: float,
    *,
    boxes: dict[int, tuple[float, float, float, float]] | None = None,
    weights: FootprintWeights = FIT_WEIGHTS,
    margin: float = FIT_MARGIN,
) -> np.ndarray | None:
    """Pseudo-paint of one class painted on another volume: the first result's 2D piece whose
    footprint fits the paint's, when it fits clearly better than :func:`pseudo_paint`'s.

    Args:
        labels: (n, H, W) label volume of the first pass, slice axis first.
        score: (n, H, W) log-odds of each voxel's best class.
        value: the painted class.
        target: the paint's footprint (:func:`napari_tpm.footprint.footprints`). A paint that
            was not the organ's widest slice (several classes on it) keeps :func:`pseudo_paint`
            (fitted for each class, CHAOS tuning 0.607 -> 0.619 but held out 0.531 -> 0.531
            and the paper's Table 2 44.9 -> 44.1, a third of the results moving either way),
            and so does one whose slice was matched into this scan (CT,
            ``options.match_slices``): a single slice's height is then compared with the
            matched slice at twice the weight, which drew the choice to the organ's pieces near
            that slice instead of its widest (BTCV tuning kidneys 0.753 -> 0.739 with it).
        image: (n, H, W) the query's normalised image, for the body's box.
        pixel_area_mm2: the area of one pixel of a slice.
        boxes: a memo of the body's box per slice of ``image``.
        weights: the footprint terms' weights; ``weights.score`` counts a piece's mean log-odds.
        margin: how much lower the best piece's cost must be than the widest slice's piece's.

    Returns:
        Pseudo-paint like :func:`pseudo_paint`'s (None when the first pass found nothing).
    """
    paint = pseudo_paint(labels, score, (value,))
    if paint is None or not target.widest or target.matched:
        return paint
    boxes = {} if boxes is None else boxes
    pieces, n = ndimage.label(labels == value, structure=IN_PLANE)
    if n <= 1:
        return paint
    ids = np.arange(1, n + 1)
    sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
    means = ndimage.mean(score, pieces, ids)
    where = ndimage.find_objects(pieces)

    def cost(i: int) -> float:
        z, rows, cols = where[i - 1]
        ys, xs = np.nonzero(pieces[z.start, rows, cols] == i)
        found = slice_footprint(
            ys + rows.start, xs + cols.start, z.start, image, pixel_area_mm2, boxes
        )
        found = replace(found, span=(found.height, found.height))
        return footprint_penalty(target, found, weights) - weights.score * float(means[i - 1])

    candidates = [int(i) for i in ids if sizes[i - 1] >= MIN_PIECE]
    widest = np.unique(pieces[paint > 0])
    widest = widest[widest > 0]
    if not candidates or widest.size == 0:
        return paint
    costs = {i: cost(i) for i in candidates}
    best = min(costs, key=costs.__getitem__)
    first = int(widest[0])
    if (costs[first] if first in costs else cost(first)) - costs[best] < margin:
        return paint
    out = np.zeros_like(paint)
    out[pieces == best] = value
    return out


def count_floor_prior(
    score: np.ndarray,
    prior: float,
    area_mm2: float,
    pixel_area_mm2: float,
    slice_mm: float,
) -> float:
    """The first pass's prior from another volume's paint, raised until a region of organ size
    can show.

    The support's calibration sets the boundary on another patient's slice; on this scan the
    organ may score lower everywhere. Then nothing passes it, and there is no region to pick
    and no piece to start a second pass from, though the organ is still the best-scoring
    tissue (BTCV 20's left kidney from BTCV 19's paint: its 99th percentile 1.3 log-odds below
    the boundary, and above all but 0.1 % of the background). So when next to nothing passes
    (fewer voxels than :data:`FLOOR_TRIGGER` of the count below), the boundary is lowered until
    as many voxels pass as the painted section holds over :data:`FLOOR_HEIGHT` radii of height:
    ``area_mm2 / pixel_area_mm2`` pixels on ``sqrt(area_mm2 / pi) / slice_mm`` slices, less
    than the organ holds. A first pass that found a core is left as it is: lowering its
    boundary too let a liver's first pass run into its neighbours (CHAOS 21's liver from CHAOS
    31's paint 0.88 -> 0.01 with the floor applied whenever fewer than the count passed).

    Args:
        score: the first pass's log-odds (any shape).
        prior: the calibrated class prior.
        area_mm2: the painted section's area (its :class:`napari_tpm.footprint.Footprint`).
        pixel_area_mm2: the area of one pixel of this scan's slices.
        slice_mm: this scan's slice spacing.

    Returns:
        ``prior``, or the higher prior at which that many voxels pass.
    """
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior must lie in (0, 1), got {prior!r}")
    if min(area_mm2, pixel_area_mm2, slice_mm) <= 0:
        raise ValueError("area_mm2, pixel_area_mm2 and slice_mm must be positive")
    radius_mm = float(np.sqrt(area_mm2 / np.pi))
    count = int(area_mm2 / pixel_area_mm2 * FLOOR_HEIGHT * radius_mm / slice_mm)
    flat = np.asarray(score).ravel()
    if count < 1 or count >= flat.size:
        return prior
    threshold = -float(logit(prior))
    if int(np.count_nonzero(flat > threshold)) >= FLOOR_TRIGGER * count:
        return prior
    kth = float(np.partition(flat, flat.size - count)[flat.size - count])
    return float(sigmoid(-kth))
