"""Slice-to-slice continuity: an organ's cross-section follows its neighbour slice's.

The scores are computed slice by slice, and the 3D steps before this one (connected to the
paint, neck cutting) accept anything that touches the organ in 3D. Where the organ lies against
look-alike tissue over a broad contact (a left kidney against the spleen on T2 MR), the result
runs into that tissue and, from there, through all of its slices.

Walking outward from the painted slice(s), each slice's result is kept where it continues the
previous slice's result. A 2D piece of the slice's result that touches the previous result is
kept whole when most of it (``overlap``, by area) lies within a reach of that result; of a
piece that does not, only the part on the previous result is kept (and only when that part
covers much of it). A leak into a neighbour larger than the organ's own cross-section therefore
stays within the organ's footprint of the slice before, and it cannot travel on through slices
where the organ has ended.

The reach follows the organ's course. While the sweep's result is widening (an organ painted
near one end), pieces may reach ``growth`` times the previous result's equivalent radius beyond
it, as fast as organs widen between thick slices, but not much faster than the step before
widened (``RATE_SLACK``, ``RATE_FLOOR``). Once the result has narrowed (past the
organ's widest slice, which is where a user usually paints), the organ only shrinks towards its
end, so a piece must lie on the previous result itself: a leak cannot widen it again.

A piece kept whole there may still be two things joined in the slice: the organ's section and
a neighbour's that has crept in beside it over the slices before (a left kidney against the
spleen on CT, where each slice adds a little of the kidney). Such a piece is split at its 2D
necks (a watershed of its distance map); a part that lies mostly off the previous result and
reaches well beyond it is dropped (``split_reach``).

The same split runs on a slice after a step that did not widen the result, while the walk
still allows growth (the result has not narrowed below ``shrink`` of its widest slice;
``split_level``): the organ is at its widest there, and a neighbour joined to it through a
neck lies within the growth reach, so it was kept whole and carried on (found on held-out
CHAOS 37's left kidney, painted on its middle slice, 5 % narrower on the next, then joined by
the spleen). Chosen on the tuning volumes, every mode painted on this volume plus paint one and
two slices from the middle: nine results rose by more than 0.001 (BTCV 18's spleen painted at
15 % 0.64 -> 0.94, BTCV 16's left kidney two and one slices below its middle 0.53 / 0.50 ->
0.84 / 0.82) and two fell (that kidney one slice above its middle 0.87 -> 0.84, whose section
past the split is then clipped to a footprint it outgrows); splitting after steps that
widened by up to 10 % too lost on livers (CHAOS 31's 0.88 -> 0.71). Held out, 16 results rose
and 8 fell (CHAOS same scan 0.829 -> 0.838, CHAOS 38's left kidney painted at 85 %
0.86 -> 0.50; benchmarks/RESULTS-accuracy.md, "Split at the widest slice").

Past the widest slice the sweep also ends where a piece covers all of the previous result and
reaches well beyond it (``COVER_END``): the organ has ended under a neighbour's section. The
previous result is first moved in-plane by up to ``DRIFT_MM`` to where it overlaps the slice's
result most, since an organ's section drifts between slices (the session does this from the
user's own paint only). A painted slice the sweep meets restarts it from the paint but keeps its
course, so a sweep past the organ's widest slice stays past it.

Between two painted slices the sweep that left the one with the larger section decides
(``BETWEEN_LARGER``): the sweep from a small section (the organ's tip, outlined as a
correction) is still widening there and would carry in a neighbour touching the organ.

On a painted slice the sweep starts from the 2D pieces that hold paint, not from the slice's
whole result: another piece there is tissue the user did not paint, and a neighbour that
continues beyond the painted slice would carry the sweep with it (a left kidney painted near its
upper pole, with the spleen beside it on that slice: CHAOS tuning, two painted slices 0.828 ->
0.844, three 0.842 -> 0.875; benchmarks/RESULTS-accuracy.md, "Painted slices seed").

Chosen on the tuning volumes only (benchmarks/RESULTS-accuracy.md, "Slice continuity"): mean
Dice with the session's other defaults, off -> on, BTCV CT / CHAOS MR: one painted slice
0.865 -> 0.875 / 0.810 -> 0.846, three slices 0.889 -> 0.889 / 0.840 -> 0.842, all organs on one
slice 0.594 -> 0.585 / 0.654 -> 0.656. Overlap 0.6-0.7 measured alike (0.8 lost on several
organs painted together). With no growth at all, an organ painted near its end was clipped
slice after slice (all organs on one slice, MR 0.654 -> 0.574); with a growth of 0.4 radii
while widening, the first held-out run showed the same on kidneys painted on their last slice
(CHAOS MR, all organs on one slice, 0.566 -> 0.544), so the widening phase now allows twice
the previous radius: that phase is not where leaks are stopped.

Written here rather than taken from a library: it is a sequential sweep over slices with one
2D labelling of the volume and a distance transform per slice (scipy), not a standard
morphology call; the steps on a piece's parts (the drift, the reach, the split at necks with
scikit-image's h-maxima and watershed) are in :mod:`napari_tpm._continuity_parts`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
from scipy import ndimage

from napari_tpm._continuity_parts import (
    DRIFT_GAIN,
    SPLIT_DEPTH_MM,
    SPLIT_ON,
    drop_split_off,
    follow_drift,
    reach_beyond,
)
from napari_tpm.postprocess import IN_PLANE

__all__ = [
    "BETWEEN_LARGER",
    "CLIPPED",
    "COVER_END",
    "COVER_REACH_MM",
    "DRIFT_GAIN",
    "DRIFT_MM",
    "GROWTH",
    "OVERLAP",
    "RATE_FLOOR",
    "RATE_SLACK",
    "SHRINK",
    "SPLIT_DEPTH_MM",
    "SPLIT_ON",
    "SPLIT_REACH_MM",
    "keep_continuous",
]


#: default fraction of a piece that must lie near the previous slice's result (the session's
#: ``SegmentOptions.continuity``).
OVERLAP = 0.7
#: reach around the previous slice's result, in units of its equivalent radius, while the
#: sweep's result is still widening (a kidney painted on its last slice widens fivefold on the
#: next 8 mm slice).
GROWTH = 1.0
#: once the result has narrowed below this fraction of its widest slice so far, the sweep is
#: past the organ's widest part and a piece must lie on the previous result itself.
SHRINK = 0.9
#: after the first step of a sweep, the reach is at most ``RATE_SLACK`` times the growth of the
#: step before (in equivalent radii), and at least ``RATE_FLOOR`` radii: an organ widens ever
#: more slowly towards its widest slice, so a result that has just grown by a few percent and
#: then doubles has run into a neighbour (CHAOS 31's left kidney, painted on its middle slice,
#: grew 4 % on the next slice and then took in the spleen's lower pole: 0.52 -> 0.78). A floor
#: of 0.25 radii also cut a liver whose right lobe widens 60 % after three level slices (all
#: organs on one slice, 0.84 -> 0.66); 0.5 keeps it. On the tuning volumes, every mode painted
#: on this volume, that left kidney is the only result that moved (CHAOS same scan
#: 0.853 -> 0.866; benchmarks/RESULTS-accuracy.md, "A growth limit in the slice sweep"); with
#: paint at 10-90 % of the organ three results rose and none fell. Held out, same scan: BTCV
#: 0.898 -> 0.901, CHAOS 0.805 -> 0.810; one CHAOS spleen painted at 15 % lost (0.86 -> 0.54).
RATE_SLACK = 2.0
RATE_FLOOR = 0.5
#: a clipped piece is kept (its part on the previous result) only when that part covers at
#: least this fraction of the previous result.
CLIPPED = 0.5
#: past the organ's widest slice, a part split off a piece kept whole at its 2D necks
#: (:data:`SPLIT_DEPTH_MM`), lying mostly off the previous result (:data:`SPLIT_ON`), is dropped
#: when a tenth of it lies more than this far (mm) beyond that result. A kidney's section
#: near its pole shifts a few millimetres between slices, and its arms beside the renal hilum
#: then split off while lying just beside the previous section (the 90th percentile of their
#: distance from it was 6-10 mm on the tuning volumes); parts of a neighbour lie 12-60 mm out.
#: On the tuning volumes, every mode painted on this volume, ten results rose and none fell:
#: BTCV 16's spleen painted near its upper end 0.71 -> 0.90 (the left kidney had crept in),
#: CHAOS 31's and 32's livers painted on two slices 0.81 -> 0.86, 0.88 -> 0.90
#: (benchmarks/RESULTS-accuracy.md, "Split-off parts past the widest slice"). Held out, every
#: mode: 10 results up, 5 down (CHAOS same scan 0.810 -> 0.812, painted at 15 % 0.629 -> 0.639;
#: BTCV 22's right kidney among all four organs painted on one slice 0.91 -> 0.83).
SPLIT_REACH_MM = 10.0
#: past the organ's widest slice, the sweep ends where a piece that reaches beyond the previous
#: result covers at least this fraction of it: the organ only shrinks towards its end, so a
#: structure under all of its last footprint and beyond is a neighbour the organ has handed over
#: to (a left kidney's upper pole against the spleen on T2 MR, whose clipped part otherwise
#: repeats the kidney's last footprint through five more slices). Chosen on the tuning volumes
#: (benchmarks/RESULTS-accuracy.md, "The sweep ends on a covered footprint").
COVER_END = 0.99
#: ... and the clipped piece reaches more than this far (mm, its 90th percentile) beyond the
#: previous result: a bleed a few millimetres wide all round a narrowing organ is not a
#: neighbour, and the organ continues inside it.
COVER_REACH_MM = SPLIT_REACH_MM
#: past the organ's widest slice, the previous result is moved in-plane by up to this many
#: millimetres to where it overlaps the slice's result most before the slice is compared with
#: it: an organ's section drifts a millimetre or two between slices (a kidney lies obliquely),
#: and a footprint that stays put clips a little more of it on every slice (BTCV 21's left
#: kidney painted on two slices lost its lower half that way, 0.76; 0.80 with the move).
#: Chosen on the tuning volumes (benchmarks/RESULTS-accuracy.md, "The footprint follows the
#: organ's drift"); the move must gain more than :data:`DRIFT_GAIN` of that result's area.
DRIFT_MM = 2.0
#: between two painted slices, the sweep from the one with the larger section decides
#: (``keep_continuous``'s ``between_larger``). The union of both sweeps let the one from a
#: small section, still widening, carry a neighbour that touches the organ there to the other
#: painted slice: BTCV 18's spleen painted on its middle slice and outlined again on its upper
#: tip took in the stomach over ten slices (0.93 -> 0.83; 0.93 with this). Chosen on the tuning
#: volumes (benchmarks/RESULTS-accuracy.md, "Between two painted slices").
BETWEEN_LARGER = True


def keep_continuous(
    mask: np.ndarray,
    seeds: Iterable[int],
    overlap: float = OVERLAP,
    spacing: tuple[float, float] = (1.0, 1.0),
    growth: float = GROWTH,
    shrink: float = SHRINK,
    paint: np.ndarray | None = None,
    rate_slack: float = RATE_SLACK,
    rate_floor: float = RATE_FLOOR,
    split_reach: float | None = SPLIT_REACH_MM,
    cover_end: float | None = COVER_END,
    drift_mm: float = DRIFT_MM,
    split_level: bool = True,
    between_larger: bool | None = None,
) -> np.ndarray:
    """The part of ``mask`` (slice axis first) that continues slice by slice from ``seeds``.

    Args:
        mask: 3D boolean result of one structure, slices along axis 0.
        seeds: slices whose result is taken as it is (the painted slices); the sweep starts
            from them, upward and downward, and restarts at each one it meets from its
            paint, keeping its course (the widest result so far, the last step's growth).
        overlap: fraction of a 2D piece's area that must lie within reach of the previous
            slice's result for the piece to be kept whole (0 < overlap <= 1).
        spacing: in-plane pixel size (mm) of axes 1 and 2, for the reach.
        growth: the reach while the result widens, in units of the previous result's
            equivalent radius (``sqrt(area / pi)``); 0 asks pieces to lie on the previous
            result itself everywhere.
        shrink: growth stops for the rest of a sweep once its result has narrowed below this
            fraction of its widest slice so far (0: growth everywhere).
        paint: 3D boolean, what was painted (same shape as ``mask``). On a seed slice only the
            2D pieces of ``mask`` that touch it start the sweep: the user painted the organ
            there, so another piece on that slice is a neighbour, and taken as a seed it would
            lead the sweep into that neighbour. None: the seed slice's whole result.
        rate_slack: after a sweep's first step, the reach is at most this many times the
            step before's growth (in equivalent radii) ...
        rate_floor: ... and never less than this many radii (nor more than ``growth``;
            ``inf``: no limit).
        split_reach: once the result has narrowed, a piece kept whole is split at its 2D
            necks and a part lying mostly off the previous result, a tenth of it more than
            this many millimetres beyond it, is dropped (None: no splitting).
        cover_end: once the result has narrowed, the sweep ends (until the next seed) at a
            slice where a clipped piece leaves a result covering at least this fraction of the
            previous one (None: never).
        drift_mm: once the result has narrowed, the previous result is first moved in-plane
            by up to this many millimetres to where it overlaps the slice's result most
            (0: not moved).
        split_level: also split (``split_reach``) on a slice after a step that did not widen
            the result, before it has narrowed: the organ is at its widest there, and a part
            joined to it through a neck that lies beyond its last section is a neighbour.
        between_larger: between two seeds, keep the sweep that left the seed with the larger
            result (the other where it has ended), not the union of both: the sweep from the
            smaller section is still widening there and may carry a neighbour in (None:
            :data:`BETWEEN_LARGER`).

    Returns:
        A boolean array of ``mask``'s shape, a subset of ``mask``. Slices beyond a slice with an
        empty result are empty. Between two seeds, the sweep from the larger one
        (``between_larger``) or the union of the upward and downward sweeps.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (slices first), got shape {mask.shape}")
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap must be in (0, 1], got {overlap!r}")
    if not growth >= 0:
        raise ValueError(f"growth must be >= 0, got {growth!r}")
    if split_reach is not None and not split_reach >= 0:
        raise ValueError(f"split_reach must be >= 0 or None, got {split_reach!r}")
    if not (rate_slack >= 0 and rate_floor >= 0):
        raise ValueError(
            f"rate_slack and rate_floor must be >= 0, got {rate_slack!r}, {rate_floor!r}"
        )
    n = mask.shape[0]
    starts = sorted({int(z) for z in seeds})
    if not starts:
        raise ValueError("keep_continuous needs at least one seed slice")
    if starts[0] < 0 or starts[-1] >= n:
        raise ValueError(f"seed slices {starts} outside 0..{n - 1}")
    pieces, count = ndimage.label(mask, structure=IN_PLANE)
    area = np.bincount(pieces.ravel(), minlength=count + 1)
    seed_set = set(starts)
    if paint is not None and paint.shape != mask.shape:
        raise ValueError(f"paint {paint.shape} and mask {mask.shape} must be one shape")
    out = np.zeros_like(mask)
    for z in starts:
        out[z] = mask[z] if paint is None else _touching(pieces[z], mask[z] & paint[z])
    sweeps = {1: out.copy(), -1: out.copy()}
    for direction, first, stop in ((1, starts[0] + 1, n), (-1, starts[-1] - 1, -1)):
        out = sweeps[direction]
        prev = out[first - direction]
        size = largest = int(prev.sum())  # size: the previous slice's result's area
        rate: float | None = None  # the last step's growth, in equivalent radii
        for z in range(first, stop, direction):
            if z in seed_set:
                # a painted slice met on the way restarts from its paint but keeps the walk's
                # course: past the organ's widest slice the walk stays past it (a second slice
                # painted towards a kidney's pole, with the spleen beyond it on the next slice:
                # BTCV 16's left kidney on two slices 0.58 -> 0.86)
                prev = out[z]
                size = int(prev.sum())
                largest = max(largest, size)
                continue
            g = growth if size >= shrink * largest else 0.0  # past the widest slice: no growth
            if g > 0 and rate is not None:
                g = min(g, max(rate_floor, rate_slack * rate if rate > 0 else 0.0))
            if g == 0 and drift_mm > 0:  # the organ's section drifts between slices
                prev = follow_drift(pieces[z] > 0, prev, spacing, drift_mm)
            cur, clipped = _continue(pieces[z], prev, size, area, overlap, spacing, g)
            if (
                g == 0
                and cover_end is not None
                and clipped.any()
                and cur.sum() >= cover_end * size
                and reach_beyond(clipped, prev, spacing) > COVER_REACH_MM
            ):
                cur[:] = False  # a neighbour under the whole last footprint: the organ ended
            level = split_level and rate == 0.0  # the step before did not widen the result
            if (g == 0 or level) and split_reach is not None:
                drop_split_off(cur, pieces[z], prev, spacing, split_reach)
            out[z] |= cur
            new = int(cur.sum())
            rate = max(float(np.sqrt(new / size)) - 1.0, 0.0) if size else None
            largest = max(largest, size)
            prev, size = cur, new
    larger = BETWEEN_LARGER if between_larger is None else between_larger
    return _between_seeds(sweeps[1], sweeps[-1], starts, larger)


def _between_seeds(up: np.ndarray, down: np.ndarray, starts: list[int], larger: bool) -> np.ndarray:
    """The two sweeps joined: the upward one above the highest seed, the downward one below
    the lowest; between two seeds their union, or with ``larger`` the sweep that left the seed
    with the larger result, the other one on a slice where that sweep has ended
    (:func:`keep_continuous`'s ``between_larger``)."""
    out = up.copy()
    out[: starts[0]] = down[: starts[0]]
    for a, b in itertools.pairwise(starts):
        if not larger:
            out[a + 1 : b] |= down[a + 1 : b]
            continue
        pick, other = (down, up) if int(up[b].sum()) > int(up[a].sum()) else (up, down)
        for z in range(a + 1, b):
            out[z] = pick[z] if pick[z].any() else other[z]
    return out


def _touching(pieces: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """The 2D pieces that hold a painted pixel (the painted pixels themselves included)."""
    if not painted.any():  # nothing of the paint in the result: the slice as it is
        return pieces > 0
    return np.isin(pieces, np.unique(pieces[painted])) & (pieces > 0) | painted


def _continue(
    pieces: np.ndarray,
    prev: np.ndarray,
    prev_area: int,
    area: np.ndarray,
    overlap: float,
    spacing: tuple[float, float],
    growth: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One slice's result continuing ``prev``: whole pieces mostly near it, the rest clipped
    to it; and the clipped pieces (whole)."""
    on_prev = (pieces > 0) & prev
    if not on_prev.any():
        return on_prev, on_prev
    reach = growth * np.sqrt(prev_area * spacing[0] * spacing[1] / np.pi)
    # everything near the previous result lies in its box grown by the reach: work there
    ys, xs = np.flatnonzero(prev.any(axis=1)), np.flatnonzero(prev.any(axis=0))
    pad_y, pad_x = (int(np.ceil(reach / sp)) + 1 for sp in spacing)
    box = (
        slice(max(ys[0] - pad_y, 0), ys[-1] + pad_y + 1),
        slice(max(xs[0] - pad_x, 0), xs[-1] + pad_x + 1),
    )
    local, local_prev = pieces[box], prev[box]
    near = local_prev
    if reach > 0:  # the exact Euclidean distance in mm (the box keeps a background margin)
        outside = np.pad(~local_prev, 1, constant_values=True)
        near = ndimage.distance_transform_edt(outside, sampling=spacing)[1:-1, 1:-1] <= reach
    on_ids, on_count = np.unique(pieces[on_prev], return_counts=True)
    on_near = (local > 0) & near & np.isin(local, on_ids)
    ids, shared = np.unique(local[on_near], return_counts=True)
    whole = ids[shared >= overlap * area[ids]]
    # a clipped piece continues the organ only where it covers much of the previous result:
    # past the organ's end, a neighbour keeps touching its last footprint in a sliver
    clipped = np.setdiff1d(on_ids[on_count >= CLIPPED * prev_area], whole)
    clipped_pieces = np.isin(pieces, clipped)
    return np.isin(pieces, whole) | (on_prev & clipped_pieces), clipped_pieces
