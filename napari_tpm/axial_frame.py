"""Body-relative position in the scan's axial frame, for slices cut along any axis.

The filter bank's position channels place a pixel across the body's bounding box on its own
slice. On the slices of a scan's first axis (axial for CT and MR as read) that box barely moves
from one slice to the next, so an organ keeps its coordinates through its slices. A user who
paints on a coronal or sagittal slice gets slices along another axis, and there the box is the
body's extent on each of those slices: it changes fast from slice to slice (a coronal slice
through the back is narrow, one through the belly wide), so the same organ reads as a
different place a few slices on. On the tuning volumes, a right kidney painted on its middle
coronal slice scored as background three slices away (BTCV 15: Dice 0.15, against 0.92 painted
on its axial slice).

So for slices along another axis the position channels are set in a frame that does not move
between them: along the scan's first axis, the place among its axial slices; across it, the
place across the body box of the axial slice the pixel lies on, found by the bank's own rule
(:meth:`FilterBankEncoder.slice_boxes`), the box that stays put. Boxes between two axial
slices are interpolated, and the coordinates continue linearly into the working grid's
padding, as the bank's own do.

Slices along axis 0 take the bank's own formula, on the same boxes: each axial slice's box,
with an edge that jumped away from its neighbours' along the scan's first axis put back
(:func:`mend_boxes`), so a slice where the bank's rule loses part of the body does not move
every position on it (with each slice's own box the channels are the bank's,
:func:`slice_positions`).

Measured first with both channels in the axial frame (the axial slice's rows and columns):
that frame has no coordinate along the scan's first axis, which is the one a coronal slice
spreads its organs along, and CHAOS lost (coronal and sagittal paint 0.835 -> 0.811 on the
tuning volumes); this frame keeps that coordinate (0.835 -> 0.834) and BTCV gains
(0.821 -> 0.836; benchmarks/RESULTS-accuracy.md, "Paint on a coronal or sagittal slice").

With the pixel size below (:func:`working_mm`), the organ's middle coronal / sagittal slice
painted, held out (``bench_accuracy.py --modes axes``): BTCV 0.843 / 0.807 -> 0.850 / 0.848,
AMOS 0.648 / 0.554 -> 0.778 / 0.632, TotalSegmentator MR 0.640 / 0.791 -> 0.783 / 0.773, CT
0.873 / 0.867 -> 0.884 / 0.861, CHAOS 0.801 / 0.773 -> 0.802 / 0.768; paint on axial slices
gives the same labels as before.

Written here, not taken from a library: it is the bank's own position rule moved between two
slicings of one volume (a few affine maps in numpy).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from napari_tpm.encoders.body_frame import box_coordinates
from napari_tpm.encoders.filterbank import FilterBankEncoder
from napari_tpm.preprocess import WorkingGrid

__all__ = [
    "BOX_JUMP",
    "BOX_MEND_MM",
    "axial_boxes",
    "mend_boxes",
    "position_map",
    "replace_position",
    "slice_positions",
    "supports",
    "working_mm",
]

#: half the run (mm along the scan's first axis) over which each axial slice's body box is
#: replaced by the median of its neighbours' (:func:`mend_boxes`)
BOX_MEND_MM = 15.0
#: ... where it lies more than this fraction of the box's extent from that median
BOX_JUMP = 0.1


def supports(encoder: torch.nn.Module) -> bool:
    """Whether ``encoder`` has position channels this module can move: the filter bank's own,
    with its constant anchor as the last channel (the hybrid's learned channels follow its
    anchor and are left as they are)."""
    return isinstance(encoder, FilterBankEncoder) and encoder.group_channels("position") is not None


def working_mm(shape: tuple[int, ...], spacing: tuple[float, ...], size: int) -> float:
    """The working pixel size (mm) of a scan's axis-0 slices on the paper's ``size`` square.

    Views along the other axes take it: without it, a coronal slice of a scan taller than it
    is wide (BTCV's 131 slices of 5 mm: 655 mm) filled the square at twice the axial pixel
    size, and every filter scale doubled in the body. Measured with the frame above on the
    tuning volumes, coronal and sagittal paint: BTCV 0.836 -> 0.845; CHAOS, whose coronal
    slices are no taller than wide, unchanged (benchmarks/RESULTS-accuracy.md). The price is
    paid by scans taller than wide only: BTCV's coronal view is encoded and scored on a 512
    square, its first coronal liver 6.4 -> 27.5 s on the 2-core sandbox, each later paint on
    that view 1.0 -> 4.8 s.
    """
    fov = max(shape[1] * float(spacing[1]), shape[2] * float(spacing[2]))
    return fov / size


def axial_boxes(
    slices: np.ndarray,
    grid: WorkingGrid,
    pad_value: float,
    bank: FilterBankEncoder,
    batch: int = 32,
) -> np.ndarray:
    """``(n, 4)`` body boxes ``(y0, y1, x0, x1)`` of a scan's axis-0 ``slices (n, H, W)`` in
    native pixel coordinates (pixel centres at whole numbers), found on ``grid`` as the bank
    finds them when it encodes those slices."""
    s = bank.stride
    ch, cw = grid.content_hw
    top, left = grid.offset
    h, w = grid.shape_hw
    out = []
    for lo in range(0, slices.shape[0], batch):
        x = torch.from_numpy(np.ascontiguousarray(slices[lo : lo + batch], dtype=np.float32))
        boxes = bank.slice_boxes(grid.to_working(x[:, None], pad_value=pad_value))
        # stride-map pixel r covers working [r s, (r + 1) s): centre (r + 0.5) s
        centre = (boxes.astype(np.float64) + 0.5) * s
        rows = (centre[:, :2] - top) * (h / ch) - 0.5
        cols = (centre[:, 2:] - left) * (w / cw) - 0.5
        out.append(np.concatenate([rows, cols], axis=1))
    return np.concatenate(out).astype(np.float32)


def mend_boxes(boxes: np.ndarray, slice_mm: float, half_mm: float = BOX_MEND_MM) -> np.ndarray:
    """Each axial slice's body box, with an edge that jumped away from its neighbours' put back.

    A body's box changes slowly from one axial slice to the next, but the bank's rule can lose
    part of the body on a slice (BTCV 15's slices 83-85: the box's lower edge at 113-141 of 256,
    between 209 and 213 either side), and every position channel there then moves; a small
    organ reads as another place on those slices (its aorta scored -7 log-odds there, +1.3 a
    slice further). An edge lying more than :data:`BOX_JUMP` of the box's extent from the
    median of the slices within ``half_mm`` takes that median; every other edge stays as the
    bank found it. ``half_mm`` under half a slice, or one slice: unchanged.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    half = round(half_mm / slice_mm) if slice_mm > 0 else 0
    if half < 1 or len(boxes) < 2:
        return boxes.copy()
    median = ndimage.median_filter(boxes, size=(2 * half + 1, 1), mode="nearest")
    extent = np.abs(median[:, [1, 1, 3, 3]] - median[:, [0, 0, 2, 2]])
    off = np.abs(boxes - median) > BOX_JUMP * np.maximum(extent, 1.0)
    return np.where(off, median, boxes)


def slice_positions(
    boxes: np.ndarray, grid: WorkingGrid, size_hw: tuple[int, int], stride: int
) -> torch.Tensor:
    """Raw position coordinates ``[B, 2, h, w]`` of axial slices whose body boxes (native
    coordinates, :func:`axial_boxes`) are ``boxes (B, 4)``, by the bank's own formula: the
    stride-resolution pixel's index across the box, in [-1, 1]. With the boxes the bank finds
    itself this gives back its own channels."""
    ch, cw = grid.content_hw
    top, left = grid.offset
    nh, nw = grid.shape_hw
    b = np.asarray(boxes, dtype=np.float64)
    # native -> stride-map coordinates (the inverse of axial_boxes' map)
    rows = ((b[:, :2] + 0.5) * (ch / nh) + top) / stride - 0.5
    cols = ((b[:, 2:] + 0.5) * (cw / nw) + left) / stride - 0.5
    mapped = torch.from_numpy(np.concatenate([rows, cols], axis=1).astype(np.float32))
    return box_coordinates(mapped, size_hw)


def position_map(
    boxes: np.ndarray,
    axis: int,
    grid: WorkingGrid,
    size_hw: tuple[int, int],
    stride: int,
) -> torch.Tensor:
    """Raw position coordinates ``[1, 2, h, w]`` at the stride-resolution pixels of a view
    along ``axis`` (1 or 2) on ``grid``; ``boxes`` from :func:`axial_boxes`. One map serves
    every slice of the view: neither coordinate depends on which slice it is.

    The view's rows run along the scan's first axis: channel 0 places them across the scan's
    axial slices (-1 the first, 1 the last). Its columns run across the axial slices' rows
    (``axis`` 2) or columns (``axis`` 1): channel 1 places them across the body box of the
    axial slice they lie on, as the bank does on that slice.
    """
    if axis not in (1, 2):
        raise ValueError(f"the axial frame is for views along axis 1 or 2, got {axis}")
    h, w = size_hw
    ch, cw = grid.content_hw
    top, left = grid.offset
    nh, nw = grid.shape_hw
    n = len(boxes)
    # native in-slice coordinates of each stride pixel's centre (may lie in the padding)
    a = ((np.arange(h) + 0.5) * stride - top) * (nh / ch) - 0.5  # along the scan's axis 0
    b = ((np.arange(w) + 0.5) * stride - left) * (nw / cw) - 0.5  # along axis 2 or 1
    # the axial box at each (fractional) axis-0 position, interpolated, held at the ends
    z = np.clip(a, 0, n - 1)
    lo, hi = (2, 3) if axis == 1 else (0, 1)  # the box's columns (x) or rows (y)
    b0 = np.interp(z, np.arange(n), boxes[:, lo])[:, None]
    b1 = np.interp(z, np.arange(n), boxes[:, hi])[:, None]
    maps = np.empty((1, 2, h, w), dtype=np.float32)
    maps[0, 0] = ((2 * a - (n - 1)) / max(n - 1, 1))[:, None]
    maps[0, 1] = (2 * b[None, :] - b0 - b1) / np.maximum(b1 - b0, 1.0)
    return torch.from_numpy(maps)


def replace_position(
    features: torch.Tensor, raw: torch.Tensor, bank: FilterBankEncoder
) -> torch.Tensor:
    """Unit features ``[B, C, h, w]`` of ``bank`` with their position channels set to ``raw``
    (``[B, 2, h, w]`` or one map ``[1, 2, h, w]`` for all), unit again, in the features' dtype.

    The bank's output is its weighted groups and a constant anchor, normalised to unit length;
    the anchor's share gives back the length each pixel was divided by.
    """
    channels = bank.group_channels("position")
    assert channels is not None  # supports(bank)
    f = features.float()
    g = f * (bank.anchor / f[:, -1:].clamp_min(1e-6))
    g[:, channels] = bank.standardised_position(raw.to(g.dtype))
    return F.normalize(g, dim=1).to(features.dtype)
