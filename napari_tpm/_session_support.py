"""Building the support the prototypes are fitted from, out of the user's paint.

``SegmentationSession.segment`` encodes the painted slices; turning them and the paint into
a :class:`_Support` (class masks on the working grid, scribbles grown into regions, the
painted pixels' features, the paint's inscribed radii and intensity models) is here, as one
function of what it needs, so the session reads as the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np
import torch

from napari_tpm._session_data import _class_mask, _pixels, _Support
from napari_tpm._threads import one_cpu_thread
from napari_tpm.boundary import intensity_model
from napari_tpm.necks import inscribed_radius_mm
from napari_tpm.paint_size import pole_side
from napari_tpm.preprocess import WorkingGrid
from napari_tpm.scribble import complete_section, drawn_as_strokes, grow_scribbles
from napari_tpm.support import SupportError, SupportSlices, plane_spacing

#: (one slice's features (1, C, h, w), a stroke's pixel features (N, C)) -> (h, w) log-odds
StrokeScores = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_paint_grid(
    paint: np.ndarray, image: np.ndarray, support_image: np.ndarray | None
) -> bool:
    """Whether the paint is on the query itself; SupportError when it is off its volume's grid."""
    same_volume = support_image is None or support_image is image
    ref_shape = image.shape if same_volume else np.asarray(support_image).shape
    if paint.shape != tuple(ref_shape):
        what = "image" if same_volume else "support image"
        raise SupportError(
            f"the support labels {paint.shape} are not on the {what}'s grid {tuple(ref_shape)}"
        )
    return same_volume


def complete_paint(
    paint: np.ndarray,
    parsed: SupportSlices,
    slices: np.ndarray,
    features: torch.Tensor,
    grid: WorkingGrid,
    spacing_hw: tuple[float, float],
    stroke_scores: StrokeScores,
) -> tuple[np.ndarray, dict[int, tuple[int, ...]]]:
    """``paint`` with each structure that covers only part of its organ on a painted slice (a
    stroke, a dab) completed to the organ's section there
    (:func:`napari_tpm.scribble.complete_section`); returns it (``paint`` itself when nothing
    changed) and, per completed value, its completed slices.

    Args:
        paint: the label volume; ``parsed`` its painted slices and values.
        slices: ``(S, H, W)`` the painted slices' normalised intensities (native grid).
        features: ``(S, C, h, w)`` their features, unweighted.
        grid: the working grid of those slices; ``spacing_hw`` their pixel size (mm).
        stroke_scores: (one slice's features, pixel features) -> (h, w) log-odds.

    The completed pixels never take another structure's paint or a background stroke.
    """
    out = paint
    done: dict[int, list[int]] = {}
    for s, index in enumerate(parsed.indices):
        plane = np.take(paint, index, axis=parsed.axis)
        for value in parsed.values:
            mine = plane == value
            if not mine.any():
                continue
            working = _class_mask(grid, np.where(mine, 1, 0), (1,), None) == 1
            pixels = _pixels(features[s : s + 1], working[None])
            low = stroke_scores(features[s : s + 1], pixels)
            scores = grid.from_working(low[None, None].float())[0, 0].numpy()
            blocked = (plane != 0) & ~mine
            region = complete_section(slices[s], scores, mine, blocked, spacing_hw)
            if region is None:
                continue
            if out is paint:
                out = paint.copy()
            np.moveaxis(out, parsed.axis, 0)[index][region & (plane == 0)] = value
            done.setdefault(int(value), []).append(int(index))
    return out, {v: tuple(i) for v, i in done.items()}


def build_support(
    paint: np.ndarray,
    parsed: SupportSlices,
    feats: torch.Tensor,
    grid: WorkingGrid,
    spacing: Sequence[float],
    background: int | None,
    *,
    raw_image: np.ndarray | None,
    stroke_scores: StrokeScores | None,
    device: torch.device,
    outlines: bool = True,
    small: Collection[int] = (),
    slice_features: Callable[[int], torch.Tensor] | None = None,
) -> _Support:
    """The :class:`_Support` of painted slices whose features ``feats`` (S, C, h, w) are encoded.

    ``grid`` and ``spacing`` are the support volume's; ``raw_image`` is the query image when
    the paint is on it (same volume: the organ's intensity under the paint is kept for
    snapping the outline), else None. ``stroke_scores`` grows scribbles into the regions they
    mark (None: the paint is taken as drawn); that runs on one CPU thread off the GPU.
    ``outlines``: whether a filled region of paint is the organ's whole section on its slice
    (the user's paint); False for pseudo-paint, a core of a first result, which outlines
    nothing (:attr:`_Support.outlined` stays empty). ``small``: structures painted only on
    sections too small to stand for their organ (:func:`napari_tpm.paint_size.small_sections`);
    with ``slice_features`` (slice index -> its (1, C, h, w) features, encoding it if need be)
    and paint on this volume, their pixel features come from the next slice towards the
    organ's body instead (:func:`pole_features`).
    """
    axis, indices, values = parsed.axis, parsed.indices, parsed.values
    planes = {i: np.take(paint, i, axis=axis) for i in indices}
    masks = torch.stack([_class_mask(grid, planes[i], values, background) for i in indices])
    # structures drawn only as strokes are grown (scribble.grow_scribbles) and outline nothing
    strokes = drawn_as_strokes(masks) if stroke_scores is not None else set()
    outlined = _outlined(masks, indices, values, strokes) if outlines else {}
    if stroke_scores is not None:
        with one_cpu_thread(device):
            masks = grow_scribbles(masks, feats, stroke_scores, strokes)
    pix = [_pixels(feats, masks == c + 1) for c in range(len(values))]
    plane_mm = plane_spacing(spacing, axis)
    radius = [
        max(inscribed_radius_mm(plane == v, plane_mm) for plane in planes.values()) for v in values
    ]
    intensity = []
    if raw_image is not None:  # the organ's intensity under the paint, for snapping the outline
        raw = {i: np.take(raw_image, i, axis=axis) for i in indices}
        intensity = [
            intensity_model(np.concatenate([raw[i][p == v] for i, p in planes.items()]))
            for v in values
        ]
    poles = {}
    if raw_image is not None and slice_features is not None and small:
        poles = pole_features(pix, planes, values, small, raw_image, axis, grid, slice_features)
    counts = [int((masks == c + 1).sum()) for c in range(len(values))]
    negative = _pixels(feats, masks == -1) if parsed.has_background else None
    middle = indices.index(parsed.middle)
    return _Support(
        axis=axis,
        indices=indices,
        index=parsed.middle,
        n_slices=int(paint.shape[axis]),
        label_values=values,
        pixel_features=pix,
        negative_features=negative,
        fraction=float((masks[middle] > 0).float().mean()),
        same_volume=raw_image is not None,
        masks_native=planes,
        counts_working=counts,
        features=feats,
        masks_working=masks,
        radius_mm=radius,
        intensity=intensity,
        outlined=outlined,
        pole_slices=poles,
    )


def pole_features(
    pixel_features: list[torch.Tensor],
    planes: dict[int, np.ndarray],
    values: Sequence[int],
    small: Collection[int],
    image: np.ndarray,
    axis: int,
    grid: WorkingGrid,
    slice_features: Callable[[int], torch.Tensor],
) -> dict[int, int]:
    """Replace, in place, the pixel features of each structure in ``small`` by those under
    the same footprint on the next slice towards the organ's body
    (:func:`napari_tpm.paint_size.pole_side`); returns value -> the slice used.

    A section under 200 mm² is an organ's pole, a partial-volume cap whose features lie
    between the organ's and its surroundings': prototypes from them scored the organ's own
    sections below the boundary (Dice <= 0.16 on every development volume). The calibration
    still counts the painted section itself. On the BTCV tuning volumes, all four organs on
    one slice: the right kidney of BTCV 19 (a 128 mm² cap) 0.01 -> 0.81, of BTCV 21 (195 mm²)
    0.02 -> 0.83 (benchmarks/RESULTS-accuracy.md, "Prototypes from beyond a pole").
    """
    out: dict[int, int] = {}
    for c, value in enumerate(values):
        if value not in small:
            continue
        index = max(planes, key=lambda i: int((planes[i] == value).sum()))  # its largest
        section = planes[index] == value
        side = pole_side(image, index, section, axis, planes[index] != 0)
        if side is None:
            continue
        footprint = _class_mask(grid, np.where(section, value, 0), (value,), None)
        moved = _pixels(slice_features(side), (footprint == 1)[None])
        if moved.shape[0]:
            pixel_features[c] = moved
            out[int(value)] = side
    return out


def _outlined(
    masks: torch.Tensor, indices: Sequence[int], values: Sequence[int], strokes: Collection[int]
) -> dict[int, int]:
    """The painted slices that show one structure painted as a filled region, and its value.

    ``masks`` are the working-grid class codes (S, H, W) before any scribble is grown;
    ``strokes`` the codes of structures drawn only as strokes, which
    :func:`napari_tpm.scribble.grow_scribbles` grows: they do not outline their organ, so
    their slices are left out.
    """
    out = {}
    for s, i in enumerate(indices):
        codes = [int(c) for c in torch.unique(masks[s]) if int(c) > 0]
        if len(codes) != 1 or codes[0] in strokes:
            continue
        out[int(i)] = int(values[codes[0] - 1])
    return out
