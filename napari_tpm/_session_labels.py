"""The label volume from cached scores: threshold, the user's paint, and the 3D clean-up.

``SegmentationSession.labels`` checks its arguments and picks the prior; what it writes into
the output lives here, as plain functions of the cached scores, the support and the options,
so the 3D post-processing (connected components, neck cut, outline snap) can be read and
tested apart from the session's caches.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from napari_tpm._session_data import _apply_paint, _Support
from napari_tpm.boundary import grow_to_edge, snap_to_intensity
from napari_tpm.concavity import fill_like_paint, fill_target
from napari_tpm.continuity import COVER_END, DRIFT_MM, keep_continuous
from napari_tpm.exclusion import drop_stroked
from napari_tpm.necks import cut_necks, neck_radius_mm
from napari_tpm.options import SegmentOptions
from napari_tpm.parts3d import drop_outrunning_parts
from napari_tpm.postprocess import bounding_box, keep_connected, limit_range, second_choice
from napari_tpm.support import plane_spacing


def write_labels(
    full: np.ndarray,
    part: slice,
    score: np.ndarray,
    best: np.ndarray,
    support: _Support,
    background: int | None,
    threshold: float | np.ndarray,
    *,
    keep_paint: bool,
    z_range: tuple[int, int] | None,
    clean_3d: Callable[[np.ndarray], None] | None,
    runner_up: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Fill ``full[part]`` (slice axis first) with the labels of the cached scores.

    Voxels with best-class log-odds above ``threshold`` (one number, or one per class index of
    ``best``) take their class's label value; with ``runner_up`` (each voxel's second-best
    score and class index, several classes on this volume, the whole volume with its 3D
    steps) a voxel cut off from its class's paint takes its second-best class
    (:func:`napari_tpm.postprocess.second_choice`); the paint is written over them
    (``keep_paint``, same volume only), ``z_range`` (inclusive, along the slice axis) clears
    what lies outside it, and ``clean_3d`` (None: skip) runs the 3D steps on ``full[part]``.
    The clean-up may trim an edge of the paint, so the paint is written again after it, and
    the user's range wins over both.
    """
    s = support
    lo_s = part.start
    view = full[part]
    if np.ndim(threshold):  # one boundary per class (index of ``best``)
        fg = score[part] > np.asarray(threshold)[best[part]]
    else:
        fg = score[part] > threshold
    if len(s.label_values) == 1:
        np.multiply(fg, s.label_values[0], out=view, casting="unsafe")
    else:
        lut = np.asarray(s.label_values, dtype=full.dtype)
        np.multiply(lut[best[part]], fg, out=view, casting="unsafe")
    whole = part.start == 0 and part.stop == full.shape[0]
    if runner_up is not None and clean_3d is not None and s.same_volume and whole:
        _second_choice(view, s, background, threshold, runner_up)
    paint = s.same_volume and keep_paint
    if paint:
        _apply_paint(full, s, background, part)
    if z_range is not None:
        lo, hi = sorted(int(z) for z in z_range)
        limit_range(view, lo - lo_s, hi - lo_s, axis=0, inplace=True)
    if clean_3d is not None:
        clean_3d(view)
        if paint:  # the clean-up may trim an edge of the paint
            _apply_paint(full, s, background, part)
            if z_range is not None:  # ... but the range the user set still wins
                limit_range(view, lo - lo_s, hi - lo_s, axis=0, inplace=True)


def _second_choice(
    view: np.ndarray,
    support: _Support,
    background: int | None,
    threshold: float | np.ndarray,
    runner_up: tuple[np.ndarray, np.ndarray],
) -> None:
    """:func:`napari_tpm.postprocess.second_choice` in place on the whole volume ``view``
    (``runner_up``: each voxel's second-best score and class index; ``threshold`` one number or
    one per class index, as for ``best``)."""
    box = bounding_box(view)  # nothing outside the result's box changes
    if box is None:
        return
    score2, second = runner_up
    seeds = np.zeros(view.shape, dtype=view.dtype)
    _apply_paint(seeds, support, background)
    view[box] = second_choice(
        view[box], seeds[box], second[box], score2[box], threshold, support.label_values
    )


def clean_3d(
    view: np.ndarray,
    support: _Support,
    background: int | None,
    spacing: tuple[float, float, float],
    image: np.ndarray,
    options: SegmentOptions,
    pick: Callable[[np.ndarray], np.ndarray] | None = None,
    own_paint: bool = True,
    score: np.ndarray | None = None,
    fill_added: dict[int, np.ndarray] | None = None,
    fill_record: dict[int, np.ndarray] | None = None,
) -> None:
    """The 3D steps of ``labels()``, in place on the whole volume ``view`` (slice axis first).

    Keep the components connected to the paint (for another volume's support the one ``pick``
    chooses, else the largest one), cut thin necks into touching look-alike tissue
    (``options.neck``), snap the outline to the organ's intensity (``options.snap_mm``), keep
    what stays connected, grow the outline through the edge's partial-volume pixels
    (``options.halfway_edge``), remove the regions background strokes mark
    (``options.stroke_regions``), keep only the paint of a structure on a slice it was outlined
    on (``options.exact_paint``), keep what continues slice by slice from the paint
    (``options.continuity``), and drop the 3D parts that run on past the painted one
    (``options.outrunning_parts``, :mod:`napari_tpm.parts3d`).
    ``spacing`` and ``image`` are the query's, in the user's axis order. ``own_paint``: the
    paint is the user's, not a second pass's pseudo-paint nor a candidate's while another
    volume's paint is placed; only then does the walk's footprint follow the organ's in-plane
    drift (:data:`napari_tpm.continuity.DRIFT_MM`) and do the outrunning parts go (from
    another patient's paint, every ordered CHAOS tuning pair moved both ways, mean
    0.755 -> 0.755, and the search ran three times as long).
    ``fill_added``: per structure, the pixels the concavity fill added on an earlier labelling
    ((3, n) coordinates in ``view``'s whole-volume frame), added again instead of filling
    anew; ``fill_record``: where to write what this labelling's fill adds (:func:`_fill_concave`).
    """
    s = support
    opts = options
    seeds = np.zeros(view.shape, dtype=view.dtype)
    if s.same_volume:
        _apply_paint(seeds, s, background)
    others = plane_spacing(spacing, s.axis)
    if pick is not None and not s.same_volume:
        view[...] = pick(view)
    view[...] = keep_connected(view, seeds)
    box = bounding_box(view, margin=(1, *(int(opts.snap_mm / sp) + 2 for sp in others)))
    if box is None:
        return
    view, seeds = view[box], seeds[box]  # what follows works near the result only
    score = None if score is None else score[box]
    spacing_first = (spacing[s.axis], *others)
    own_seeds = seeds if s.same_volume else None
    strokes = _strokes(box, view.shape, s, background)
    if opts.neck > 0:
        radii = {
            v: neck_radius_mm(r, opts.neck)
            for v, r in zip(s.label_values, s.radius_mm, strict=True)
        }
        view[...] = cut_necks(view, own_seeds, spacing_first, radii)
    if opts.snap_mm > 0:
        moved = np.moveaxis(image, s.axis, 0)[box]
        models = dict(zip(s.label_values, s.intensity, strict=True)) if s.intensity else None
        view[...] = snap_to_intensity(view, moved, spacing_first, models, band_mm=opts.snap_mm)
        view[...] = keep_connected(view, seeds)
        if opts.halfway_edge:  # grows only, so what it adds stays connected
            view[...] = grow_to_edge(
                view,
                moved,
                spacing_first,
                models,
                band_mm=opts.snap_mm,
                blocked=strokes,
            )
    if opts.stroke_regions and strokes is not None:
        for value in s.label_values:
            mask = view == value
            kept = drop_stroked(mask, seeds == value, strokes, spacing_first, score)
            view[mask & ~kept] = 0
    if opts.exact_paint and s.same_volume:
        _keep_to_paint(view, seeds, s.outlined, box[0].start)
    if opts.continuity > 0 and s.same_volume:
        _keep_continuous(
            view,
            seeds,
            s.label_values,
            opts.continuity,
            others,
            opts.continuity_end,
            own_paint,
        )
    if opts.outrunning_parts and s.same_volume and own_paint:
        _drop_outrunning(view, seeds, s.label_values, spacing_first)
    if opts.fill_concave and s.same_volume and own_paint:
        offset = np.array([b.start for b in box])
        _fill_concave(view, seeds, s, strokes, offset, fill_added, fill_record)


def keep_outline(
    full: np.ndarray,
    part: tuple[int, int],
    z_range: tuple[int, int] | None,
    outline: tuple[int, int, np.ndarray],
) -> None:
    """Write the user's ``outline`` (slice index, label value, its (H, W) paint) over its slice
    of ``full`` (slice axis first), in place, when that slice lies in ``part`` (inclusive) and
    the user's ``z_range``: the structure there is exactly the paint.

    After a second pass from an organ's end (``options.end_second_pass``) the support is
    pseudo-paint on another slice, so the labels no longer repeat the user's outline on the
    slice they drew it on; up to a fifth of it could differ (the pass is kept from a Dice of
    :data:`napari_tpm.paint_position.END_PASS_AGREEMENT` with it). What the user painted is
    never contradicted.
    """
    index, value, plane = outline
    if not part[0] <= index <= part[1]:
        return
    if z_range is not None and not min(z_range) <= index <= max(z_range):
        return
    view = full[index]
    view[view == value] = 0
    view[plane == value] = value


def _strokes(
    box: tuple[slice, ...], shape: tuple[int, ...], support: _Support, background: int | None
) -> np.ndarray | None:
    """Where background strokes lie within ``box`` (slice axis first, of ``shape``), or None.

    Growth by intensity must not take what the user marked as not the organ, even where the
    paint is not written back (``labels(keep_paint=False)``).
    """
    if background is None or not support.same_volume:
        return None
    out = np.zeros(shape, dtype=bool)
    for i, plane in support.masks_native.items():
        if box[0].start <= i < box[0].stop:
            out[i - box[0].start] = plane[box[1:]] == background
    return out if out.any() else None


def _keep_to_paint(
    view: np.ndarray, seeds: np.ndarray, outlined: dict[int, int], offset: int
) -> None:
    """On each slice where one structure was outlined (``outlined``: slice -> value), keep of
    that structure only its paint, in place. ``view`` and ``seeds`` (the paint) are a crop
    starting at slice ``offset``.

    Whatever else scores as the organ on a slice the user outlined it on is a look-alike that
    touches it (the spleen beside a kidney's pole, bowel against the liver's tip); left there,
    it seeds the slice continuity, which carries it on through every slice it continues into.
    Chosen on the tuning volumes (benchmarks/RESULTS-accuracy.md, "The painted slice keeps
    the paint").
    """
    for index, value in outlined.items():
        z = index - offset
        if 0 <= z < view.shape[0]:
            plane = view[z]
            plane[(plane == value) & (seeds[z] != value)] = 0


def _keep_continuous(
    view: np.ndarray,
    seeds: np.ndarray,
    values: tuple[int, ...],
    overlap: float,
    spacing: tuple[float, float],
    end: bool = True,
    drift: bool = True,
) -> None:
    """Each structure's result, in place, kept where it continues from its painted slices
    (``end``: the walk ends on a covered footprint, :data:`napari_tpm.continuity.COVER_END`;
    ``drift``: the footprint follows the organ's drift, :data:`napari_tpm.continuity.DRIFT_MM`).

    Only for paint on this volume: with another volume's support there is no painted slice
    to start from, and starting from the result's largest slice gained nothing on the tuning
    volumes (cross-patient BTCV 0.535 -> 0.536, CHAOS 0.454 -> 0.454).
    """
    for value in values:
        mask = view == value
        painted = np.flatnonzero((seeds == value).any(axis=(1, 2)))
        if mask.any() and painted.size:
            kept = keep_continuous(
                mask,
                painted,
                overlap,
                spacing,
                paint=seeds == value,
                cover_end=COVER_END if end else None,
                drift_mm=DRIFT_MM if drift else 0.0,
            )
            view[mask & ~kept] = 0


def _fill_concave(
    view: np.ndarray,
    seeds: np.ndarray,
    support: _Support,
    strokes: np.ndarray | None,
    offset: np.ndarray | None = None,
    added: dict[int, np.ndarray] | None = None,
    record: dict[int, np.ndarray] | None = None,
) -> None:
    """Each structure whose paint outlines its concavities, in place: its result's
    concavities filled like the paint's (:mod:`napari_tpm.concavity`), never over another
    structure or a background stroke.

    ``offset``: where ``view`` starts in the whole volume (None: at its origin). ``added``
    (per structure, (3, n) whole-volume coordinates): put those pixels back, on the slices
    that still hold the structure, instead of filling anew; the fill fills each section up to
    the paint's solidity of that section's own hull, so taken anew at each prior it is not
    monotone in the result, and a higher prior could end with fewer voxels. ``record``: write
    what this fill adds there (an empty array where the structure is not filled).
    """
    free = view == 0 if strokes is None else (view == 0) & ~strokes
    offset = np.zeros(3, dtype=np.int64) if offset is None else offset
    for value in support.label_values:
        if added is not None:
            _put_back(view, free, value, added.get(value), offset)
            continue
        mask = view == value
        target = fill_target(support.masks_native.values(), value, mask)
        if target is None:
            if record is not None:
                record[value] = np.zeros((3, 0), dtype=np.int64)
            continue
        painted = np.flatnonzero((seeds == value).any(axis=(1, 2)))
        new = fill_like_paint(mask, target, skip=painted, free=free) & ~mask
        view[new] = value
        free &= ~new  # taken: the next structure's fill stays off it
        if record is not None:
            record[value] = np.array(np.nonzero(new)) + offset[:, None]


def _put_back(
    view: np.ndarray,
    free: np.ndarray,
    value: int,
    coords: np.ndarray | None,
    offset: np.ndarray,
) -> None:
    """Write ``value`` at the recorded fill pixels ``coords`` (whole-volume) that lie in
    ``view`` (starting at ``offset``), are ``free`` and sit on a slice that holds ``value``;
    in place, ``free`` too."""
    if coords is None or coords.size == 0:
        return
    local = coords - offset[:, None]
    inside = np.all((local >= 0) & (local < np.array(view.shape)[:, None]), axis=0)
    z, y, x = local[:, inside]
    holds = (view == value).any(axis=(1, 2))
    ok = free[z, y, x] & holds[z]
    view[z[ok], y[ok], x[ok]] = value
    free[z[ok], y[ok], x[ok]] = False


def _drop_outrunning(
    view: np.ndarray, seeds: np.ndarray, values: tuple[int, ...], spacing: tuple[float, ...]
) -> None:
    """Each structure's result, in place, without the 3D parts that run on past its painted
    part (:func:`napari_tpm.parts3d.drop_outrunning_parts`)."""
    for value in values:
        mask = view == value
        paint = seeds == value
        if mask.any() and paint.any():
            view[mask & ~drop_outrunning_parts(mask, paint, spacing)] = 0
