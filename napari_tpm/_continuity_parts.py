"""The slice walk's steps on a piece's parts: the footprint's drift, a part's reach, the split
at 2D necks.

Helpers of :func:`napari_tpm.continuity.keep_continuous`, which says when each applies (past
the organ's widest slice) and how their constants were chosen; kept apart so that the walk
reads as one loop.

Written here rather than taken from a library: the best whole-pixel translation of one mask onto
another and the percentile of a part's distance beyond a mask are a few lines of numpy and
scipy; the split at necks is :func:`napari_tpm.postprocess.split_at_saddles` (scikit-image's
h-maxima and watershed of the distance map), shared with the 3D split of :mod:`napari_tpm.parts3d`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_tpm.postprocess import bounding_box, split_at_saddles

__all__ = [
    "DRIFT_GAIN",
    "SPLIT_DEPTH_MM",
    "SPLIT_ON",
    "drop_split_off",
    "follow_drift",
    "reach_beyond",
]

#: a piece kept whole past the organ's widest slice is split where its in-plane distance map has
#: maxima at least this deep (mm) apart from each other (two blobs joined by a neck) ...
SPLIT_DEPTH_MM = 2.5
#: ... and a part can be dropped only when less than this fraction of it lies on the previous
#: result (:data:`napari_tpm.continuity.SPLIT_REACH_MM` says how far beyond it must reach).
SPLIT_ON = 0.5
#: the footprint is moved (:func:`follow_drift`) only when the move gains more than this fraction
#: of the previous result's area in overlap.
DRIFT_GAIN = 0.02


def follow_drift(
    mask: np.ndarray, prev: np.ndarray, spacing: tuple[float, float], drift_mm: float
) -> np.ndarray:
    """``prev`` moved in-plane by up to ``drift_mm`` to where it overlaps ``mask`` most.

    Unmoved unless that gains more than ``DRIFT_GAIN`` of its area; among equal overlaps the
    shortest move wins. A brute-force search over the few whole-pixel moves within reach (at
    most a few dozen on the previous result's box): no library call finds the best integer
    translation of one mask onto another this directly.
    """
    if not prev.any():
        return prev
    sy, sx = (int(drift_mm // sp) for sp in spacing)
    ys, xs = np.flatnonzero(prev.any(axis=1)), np.flatnonzero(prev.any(axis=0))
    box = (
        slice(max(ys[0] - sy, 0), min(ys[-1] + sy + 1, prev.shape[0])),
        slice(max(xs[0] - sx, 0), min(xs[-1] + sx + 1, prev.shape[1])),
    )
    local = mask[box]
    h, w = local.shape
    padded = np.pad(prev[box], ((sy, sy), (sx, sx)))

    def shifted(dy: int, dx: int) -> np.ndarray:
        return padded[sy - dy : sy - dy + h, sx - dx : sx - dx + w]

    def length(m: tuple[int, int]) -> float:
        return float(np.hypot(m[0] * spacing[0], m[1] * spacing[1]))

    moves = [(dy, dx) for dy in range(-sy, sy + 1) for dx in range(-sx, sx + 1)]
    base = int((local & shifted(0, 0)).sum())
    best, move = base, (0, 0)
    for m in sorted((m for m in moves if length(m) <= drift_mm), key=length):
        shared = int((local & shifted(*m)).sum())
        if shared > best:  # the shortest move wins a tie: moves come shortest first
            best, move = shared, m
    if move == (0, 0) or best - base <= DRIFT_GAIN * prev.sum():
        return prev
    moved = np.zeros_like(prev)
    moved[box] = shifted(*move)
    return moved


def reach_beyond(part: np.ndarray, prev: np.ndarray, spacing: tuple[float, float]) -> float:
    """How far (mm, 90th percentile) ``part``'s pixels off ``prev`` lie beyond it (0: none)."""
    off = part & ~prev
    if not off.any():
        return 0.0
    box = bounding_box(part | prev)
    assert box is not None  # ``off`` is not empty
    beyond = ndimage.distance_transform_edt(
        np.pad(~prev[box], 1, constant_values=True), sampling=spacing
    )
    return float(np.percentile(beyond[1:-1, 1:-1][off[box]], 90))


def drop_split_off(
    cur: np.ndarray,
    pieces: np.ndarray,
    prev: np.ndarray,
    spacing: tuple[float, float],
    reach_mm: float,
) -> None:
    """Drop from ``cur`` (in place) the parts of its whole pieces that a neck separates from
    the rest and that lie mostly off ``prev``, reaching more than ``reach_mm`` beyond it."""
    ids = np.unique(pieces[cur])
    beyond = None  # distance from the previous result (mm), computed once when needed
    for i in ids[ids > 0]:
        piece = pieces == i
        off = piece & ~prev
        # a piece clipped to ``prev`` has no part off it; one nearly on it has nothing to drop
        if not (piece <= cur).all() or off.sum() < 0.1 * piece.sum():
            continue
        box = bounding_box(piece)
        assert box is not None  # a piece of the result is not empty
        _, parts, n = split_at_saddles(piece[box], spacing, SPLIT_DEPTH_MM)
        if n < 2:
            continue
        for j in range(1, n + 1):
            part = parts == j
            if (part & prev[box]).sum() >= SPLIT_ON * part.sum():
                continue
            if beyond is None:
                beyond = ndimage.distance_transform_edt(~prev, sampling=spacing)
            if np.percentile(beyond[box][part], 90) > reach_mm:
                cur[box][part] = False
