"""What a user's paint means: which slices, which structures, which strokes say "not this".

The support is a label volume on the image's (or an atlas image's) grid. Values 1..N are the
structures to segment; the reserved value :data:`BACKGROUND_LABEL` marks background strokes
("this is not part of any structure"). Paint may lie on one slice (the paper's one-shot setting)
or on several slices along one axis, as a user adds corrections where the first result was wrong.

Kept apart from the session so that the CLI, the widget and the evaluation can check and describe
a support without building a session (and so the session module stays about segmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BACKGROUND_LABEL",
    "MAX_SUPPORT_SLICES",
    "SupportError",
    "SupportSlices",
    "find_support_slice",
    "find_support_slices",
    "parse_support",
    "plane_spacing",
]

#: Label value of background strokes. 255 is the top of an 8-bit label map, a value clinical
#: label maps (1..~120 organs) do not use, and what napari's label picker reaches with one
#: keystroke from 0 going down.
BACKGROUND_LABEL = 255

#: Paint spread over more slices than this is not a few-shot support but a segmentation; such a
#: volume is almost always a mistake (a ground-truth map passed as support, or paint on two axes).
MAX_SUPPORT_SLICES = 64

#: prototypes per class unless the user picks another number (CLI ``--prototypes``, the dock's
#: selector, ``SegmentationSession.segment``). Several prototypes follow an organ's texture
#: (vessels in the liver, cortex and medulla in a kidney). Chosen on the tuning volumes: 3
#: instead of 1 raised same-scan Dice 0.783 -> 0.810 on MR and left CT level (0.864 -> 0.865);
#: 5 measured within 0.01 of 3 and fits less reliably on a small paint. On the holdout volumes,
#: run once afterwards, 3 raised every set (benchmarks/RESULTS-accuracy.md).
DEFAULT_PROTOTYPES = 3


class SupportError(ValueError):
    """The painted support cannot be used (no paint, paint along several axes, wrong grid...)."""


@dataclass(frozen=True)
class SupportSlices:
    """The painted slices of a support volume.

    Attributes:
        axis: the slice axis (0, 1 or 2) along which all paint lies.
        indices: the painted slice indices along ``axis``, ascending.
        values: the structure label values (1..N, without the background label), ascending.
        has_background: whether any background stroke was painted.
    """

    axis: int
    indices: tuple[int, ...]
    values: tuple[int, ...]
    has_background: bool

    @property
    def middle(self) -> int:
        """The painted slice nearest the middle of the painted ones (where encoding starts)."""
        return self.indices[len(self.indices) // 2]


def find_support_slices(labels: np.ndarray) -> tuple[int, tuple[int, ...]]:
    """``(axis, indices)``: the axis along which the paint touches the fewest slices, and those.

    Axial painting is the norm, so on a tie (a single painted line) axis 0 wins.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise SupportError(f"support labels must be a 3D volume, got {labels.ndim}D")
    coords = np.nonzero(labels)
    if coords[0].size == 0:
        raise SupportError("the support labels are empty: paint the structure on one slice")
    per_axis = [np.unique(c) for c in coords]
    axis = int(np.argmin([u.size for u in per_axis]))
    indices = tuple(int(i) for i in per_axis[axis])
    if len(indices) > MAX_SUPPORT_SLICES:
        spans = ", ".join(f"axis {a}: {u.size} slices" for a, u in enumerate(per_axis))
        raise SupportError(
            f"the paint must lie on a few slices along one axis (at most {MAX_SUPPORT_SLICES}), "
            f"but it touches {spans}"
        )
    return axis, indices


def plane_spacing(spacing: tuple[float, ...], axis: int) -> tuple[float, float]:
    """The pixel size (mm) of the slices taken along ``axis`` of a volume of ``spacing``."""
    rows, cols = (float(sp) for a, sp in enumerate(spacing) if a != axis)
    return rows, cols


def find_support_slice(labels: np.ndarray) -> tuple[int, int]:
    """``(axis, index)`` of the one slice holding every painted voxel (the one-shot setting)."""
    axis, indices = find_support_slices(labels)
    if len(indices) != 1:
        raise SupportError(
            f"the paint must lie on a single slice, but it spans slices "
            f"{indices[0]}..{indices[-1]} along axis {axis}"
        )
    return axis, indices[0]


def parse_support(
    labels: np.ndarray, background_label: int | None = BACKGROUND_LABEL
) -> SupportSlices:
    """Check a support label volume and describe it.

    Raises:
        SupportError: non-integer or negative values, no structure painted (background strokes
            alone say nothing about what to find), more than 255 structures, or paint that is
            not on a few slices of one axis.
    """
    paint = np.asarray(labels)
    is_int = np.issubdtype(paint.dtype, np.integer) or np.issubdtype(paint.dtype, np.bool_)
    if not is_int and (
        not np.issubdtype(paint.dtype, np.floating) or not np.all(np.mod(paint, 1) == 0)
    ):
        raise SupportError("the support labels must be whole numbers (a label map)")
    if paint.size and (paint < 0).any():
        raise SupportError("the support labels must not be negative")
    axis, indices = find_support_slices(paint)
    planes = np.take(paint, indices, axis=axis)
    present = np.unique(planes)
    values = tuple(int(v) for v in present if v != 0 and v != background_label)
    has_background = background_label is not None and bool(np.any(present == background_label))
    if not values:
        raise SupportError(
            "only background strokes were painted: paint at least one structure "
            f"(any label other than 0 and {background_label})"
        )
    if len(values) > 255:
        raise SupportError(f"at most 255 labels can be segmented at once, got {len(values)}")
    return SupportSlices(axis, indices, values, has_background)
