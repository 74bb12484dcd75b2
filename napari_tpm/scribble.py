"""Partial paint: a stroke or a dab inside an organ, completed to the organ's section on its slice.

The one-shot protocol paints the whole organ on its slice, and two things rely on that: the
prototype is the mean of the organ's features, and a model without a learned threshold places
its boundary where the painted slice's predicted count equals the painted count. A user who
draws one stroke through the organ, or dabs the brush once inside it (what micro-sam and
nnInteractive accept), breaks both: the prototype sees a few pixels and the count says the
organ is that small, so the result shrinks to a sliver.

:func:`complete_section` completes such paint on its own slice before anything else sees it.
The slice is scored against the paint's prototype and split in two with Otsu's threshold; the
part well below it, away from the paint, marks background, the paint marks the organ, and a
marker watershed on the image's gradient (scikit-image) floods the rest, so the region stops
at the organ's edge in the image rather than at the coarse score map's. The paint covered
part of the organ when that region is much larger than the paint, encloses its outline, and
the tissue just around the paint looks like the paint (:data:`PARTIAL_RATIO`,
:data:`OUTLINE_INSIDE_SHARE`, :data:`RING_SIMILAR_SHARE`); the region then takes its place.
An outline drawn along the organ's edge fails the last two, and is used as painted.

Chosen on the tuning volumes (the constants' comments; benchmarks/RESULTS-accuracy.md,
"Partial paint"): no outline of any benchmark mode was completed; the completed regions of
partial paint matched the true section with Dice 0.90. Same scan, whole volume, middle slice,
the session's defaults, BTCV / CHAOS: a stroke along the organ 0.74 / 0.62 -> 0.88 / 0.76,
one straight stroke 0.73 / 0.71 -> 0.88 / 0.82, a dab 0.12 / 0.14 -> 0.70 / 0.46 (outlined
0.90 / 0.89). Held out, over the 210 partial paints 0.49 -> 0.74; 21 of 1944 held-out
outlines were completed, each one for the worse (vessels, the pancreas, a gallbladder, two
kidneys outlined 2.5 mm inside their edge on a fine-grid slab).

:func:`grow_scribbles`, the older rule, still grows a thin, elongated stroke that the
completion left as drawn: the region on its slice connected to it above Otsu's threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import sobel, threshold_otsu
from skimage.segmentation import watershed

__all__ = [
    "BACKGROUND_MARGIN_MM",
    "FAR_OUTLINE_INSIDE_SHARE",
    "FAR_RATIO",
    "FAR_RING_SIMILAR_SHARE",
    "FAR_STROKE_MM",
    "INSIDE_MM",
    "OUTLINE_INSIDE_SHARE",
    "PAINT_CLEARANCE_MM",
    "PARTIAL_RATIO",
    "RING_SIMILAR_SHARE",
    "SCORE_CLIP",
    "complete_section",
    "completed_message",
    "drawn_as_strokes",
    "grow_scribbles",
    "is_scribble",
    "stroke_shaped",
]

#: Paint covered only part of its organ when three things hold. Its completed region is at
#: least this many times its area ...
PARTIAL_RATIO = 2.5
#: ... at least this share of its outline lies over :data:`INSIDE_MM` inside that region ...
OUTLINE_INSIDE_SHARE = 0.95
INSIDE_MM = 2.0
#: ... and at least this share of the two pixels around it has the paint's intensities (its
#: 5th-95th percentiles): the paint ends inside the organ's tissue, where an outline ends at the
#: organ's edge. Chosen on the tuning volumes (BTCV, CHAOS), every mode the accuracy benchmark
#: paints on the scan itself (1503 painted structures: the four organs and five other
#: structures, one to three slices, near the middle and the ends, the outline 2.5 mm over or
#: inside the edge or wavering, four organs on one slice, coronal and sagittal slices) against
#: 432 partial paints (a stroke, a line and a dab at 15, 50 and 85 % of each organ): none of
#: the outlines was completed (the ratio alone completed 15 % of them: small vessels, the
#: pancreas, kidneys' poles), 81 % of the partial paints were, matching the true section with
#: Dice 0.90 (benchmarks/RESULTS-accuracy.md, "Partial paint")
RING_SIMILAR_SHARE = 0.75
#: A stroke (thin: an inscribed radius of at most :data:`FAR_STROKE_MM`, and at least
#: :data:`MIN_ELONGATION` times longer than a disc of that radius) whose region is at least
#: :data:`FAR_RATIO` times its area asks less of the other two: at least
#: :data:`FAR_OUTLINE_INSIDE_SHARE` of the outline inside the region and
#: :data:`FAR_RING_SIMILAR_SHARE` of the ring like the paint. A stroke through a kidney crosses
#: its medulla and sinus, whose other intensities in the ring failed the strict shares. Not for
#: a dab: a small round paint is also how a vessel or a gallbladder is outlined, and those
#: outlines, flooding into the liver beside them, passed the relaxed shares as often as dabs
#: did (benchmarks/RESULTS-accuracy.md, "Partial paint far smaller than its region").
FAR_RATIO = 5.0
FAR_OUTLINE_INSIDE_SHARE = 0.9
FAR_RING_SIMILAR_SHARE = 0.6
FAR_STROKE_MM = 6.0
#: pixels scored below Otsu's threshold mark background only this far (mm) inside that part:
#: the coarse score map's edge is not the organ's
BACKGROUND_MARGIN_MM = 3.0
#: ... and only this far (mm) from the paint
PAINT_CLEARANCE_MM = 4.0
#: the scores' range (log-odds) Otsu's threshold is taken on
SCORE_CLIP = 20.0

#: A stroke is at most this thick (inscribed radius, working pixels: ~4 mm on a 256 grid)...
MAX_RADIUS = 3.0
#: ...and at least this many times longer than a disc of that radius.
MIN_ELONGATION = 4.0


def is_scribble(mask: np.ndarray) -> bool:
    """Whether a painted 2D ``mask`` is a thin, elongated stroke rather than a filled region.

    A filled organ has a large inscribed radius; a small round structure painted whole has a
    small radius but is not elongated. Only thin and long strokes count as scribbles.
    """
    area = int(mask.sum())
    if area == 0:
        return False
    return stroke_shaped(float(ndimage.distance_transform_edt(mask).max()), area)


def stroke_shaped(radius: float, area: float, max_radius: float = MAX_RADIUS) -> bool:
    """Whether a painted region of this inscribed ``radius`` and ``area`` (working pixels, and
    their square, unless ``max_radius`` is in other units) is a stroke: thin (``max_radius``)
    and long (:data:`MIN_ELONGATION`)."""
    return radius <= max_radius and area >= MIN_ELONGATION * np.pi * radius**2


def drawn_as_strokes(masks: torch.Tensor) -> set[int]:
    """The class codes of working-grid ``masks`` ``(S, H, W)`` painted only as strokes: thin
    and elongated (:func:`is_scribble`) on every painted slice that shows them.

    A structure painted as a filled region on one slice is outlined by the user, so where it
    is thin on another painted slice that is the organ's thin part (a pancreas's tail), not a
    stroke to grow: grown, the TotalSegmentator MR's pancreas outlined on three slices, the
    third a 45-pixel tail, took 17048 voxels for 1176 (Dice 0.06; as painted 0.86).
    """
    strokes: set[int] = set()
    filled: set[int] = set()
    for s in range(masks.shape[0]):
        for code in (int(c) for c in torch.unique(masks[s]) if int(c) > 0):
            (strokes if is_scribble((masks[s] == code).numpy()) else filled).add(code)
    return strokes - filled


def grow_scribbles(
    masks: torch.Tensor,
    features: torch.Tensor,
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    strokes: Collection[int] | None = None,
) -> torch.Tensor:
    """Grow every scribbled class on every painted slice; returns new working-grid masks.

    Args:
        masks: ``(S, H, W)`` int64 codes on the working grid: class index + 1, -1 background
            strokes, 0 unpainted.
        features: ``(S, C, h, w)`` features of those slices.
        score_fn: ``(features (1, C, h, w), pixel features (N, C)) -> (h, w)`` log-odds of one
            class whose prototype is fitted to those pixel features.
        strokes: the codes drawn only as strokes (:func:`drawn_as_strokes`, found here when
            None); a class outlined as a filled region on another slice is not grown.

    Grown pixels never overwrite paint (another class or a background stroke).
    """
    from napari_tpm.tpm import support_pixel_features

    out = masks.clone()
    size = masks.shape[-2:]
    growable = drawn_as_strokes(masks) if strokes is None else set(strokes)
    for s in range(masks.shape[0]):
        codes = [int(c) for c in torch.unique(masks[s]) if int(c) in growable]
        for code in codes:
            stroke = (masks[s] == code).numpy()  # a stroke: drawn_as_strokes checked it
            pix = support_pixel_features(features[s], torch.from_numpy(stroke.astype(np.float32)))
            low = score_fn(features[s : s + 1], pix)[None, None]
            up = torch.nn.functional.interpolate(low, size=size, mode="bilinear")[0, 0]
            scores = up.clamp(-SCORE_CLIP, SCORE_CLIP).numpy()
            if np.ptp(scores) <= 1e-6:
                continue
            region = scores > threshold_otsu(scores)
            lab, _ = ndimage.label(region | stroke)
            keep = np.isin(lab, np.unique(lab[stroke]))
            free = out[s] == 0
            out[s][torch.from_numpy(keep) & free] = code
    return out


def _stroke_mm(paint: np.ndarray, spacing: tuple[float, float]) -> bool:
    """Whether ``paint`` is a stroke in millimetres (:data:`FAR_STROKE_MM`,
    :data:`MIN_ELONGATION`): :func:`stroke_shaped` measures on the working grid, this on the
    slice's own pixels, where the completion runs."""
    radius = float(ndimage.distance_transform_edt(np.pad(paint, 1), sampling=spacing).max())
    area = float(paint.sum()) * float(spacing[0]) * float(spacing[1])
    return stroke_shaped(radius, area, FAR_STROKE_MM)


def complete_section(
    image: np.ndarray,
    scores: np.ndarray,
    paint: np.ndarray,
    blocked: np.ndarray | None = None,
    spacing: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray | None:
    """The organ's section on one slice from ``paint`` covering part of it; None when the
    paint already outlines its organ (or nothing can be said).

    Args:
        image: ``(H, W)`` the slice's intensities, whose gradient the watershed floods.
        scores: ``(H, W)`` log-odds of the paint's prototype on that slice.
        paint: ``(H, W)`` bool, the structure's paint.
        blocked: ``(H, W)`` bool, pixels the region must not take (other paint, background
            strokes); they mark background too.
        spacing: the slice's pixel size (mm), for the markers' margins.

    Returns:
        The region (bool, containing the paint) when the paint covered part of its organ
        (:data:`PARTIAL_RATIO`, :data:`OUTLINE_INSIDE_SHARE`, :data:`RING_SIMILAR_SHARE`),
        else None.
    """
    paint = np.asarray(paint, dtype=bool)
    # clipped as grow_scribbles clips them: Otsu's split is then the organ against its
    # surroundings, not the slice against the far tail of scores of air and padding (unclipped,
    # BTCV 19's outlined right kidney grew 6.9 times into the liver)
    scores = np.clip(np.asarray(scores, dtype=np.float32), -SCORE_CLIP, SCORE_CLIP)
    if not paint.any() or np.ptp(scores) <= 1e-6:
        return None
    low = scores < threshold_otsu(scores)
    inside_low = ndimage.distance_transform_edt(low, sampling=spacing) > BACKGROUND_MARGIN_MM
    near_paint = ndimage.distance_transform_edt(~paint, sampling=spacing) <= PAINT_CLEARANCE_MM
    background = inside_low & ~near_paint
    if blocked is not None:
        background |= np.asarray(blocked, dtype=bool) & ~paint
    if not background.any():
        return None  # nothing marks where the organ stops: flooding would take the slice
    markers = np.zeros(paint.shape, np.int32)
    markers[background] = 2
    markers[paint] = 1
    image = np.asarray(image, dtype=np.float32)
    region = watershed(sobel(image), markers) == 1
    ratio = region.sum() / paint.sum()
    if ratio < PARTIAL_RATIO:
        return None
    far = ratio >= FAR_RATIO and _stroke_mm(paint, spacing)
    outline = paint & ~ndimage.binary_erosion(paint)
    depth = ndimage.distance_transform_edt(region, sampling=spacing)
    inside_share = FAR_OUTLINE_INSIDE_SHARE if far else OUTLINE_INSIDE_SHARE
    if (depth[outline] > INSIDE_MM).mean() < inside_share:
        return None
    ring = ndimage.binary_dilation(paint, iterations=2) & ~paint
    lo, hi = np.percentile(image[paint], [5, 95])
    ring_share = FAR_RING_SIMILAR_SHARE if far else RING_SIMILAR_SHARE
    if ((image[ring] >= lo) & (image[ring] <= hi)).mean() < ring_share:
        return None
    return region


def completed_message(value: int, slices: tuple[int, ...]) -> str:
    """What front ends say when label ``value``'s paint was completed on ``slices``."""
    where = ", ".join(str(i) for i in slices)
    return (
        f"label {value} covered part of its organ on slice {where}: completed to the organ's "
        "section there first (option complete_paint=false uses the paint as drawn)"
    )
