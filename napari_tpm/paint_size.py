"""How large the painted sections are, and when one is too small to stand for its organ.

A prototype is the mean of the painted pixels' features, and the features are pooled over
cells a few millimetres wide. An organ painted where only its pole shows (a kidney's cap of
5-200 mm² beside a liver painted on its widest slice) gives a prototype of partial-volume
cells, half organ and half fat, which the organ's own sections score far from. On every
development volume with all four organs painted on one slice (``bench_accuracy.py --modes
multi``), and at 15 / 50 / 85 % of each organ alone, no section under 200 mm² gave a usable
result: Dice 0.00-0.08 for the 8 tuning sections under 300 mm², 0.00-0.16 for the 10 held-out
ones under 200 mm² (benchmarks/RESULTS-accuracy.md, "Sections too small to paint from").

Such a section's prototypes now come from the next slice towards the organ's body
(:func:`pole_side`, ``SegmentOptions.pole_features``), which saves some (benchmarks/
RESULTS-accuracy.md, "Prototypes from beyond a pole"). The session does not refuse such paint
(a small structure is a small structure); every front end says what it did and what to do
instead (:func:`small_section_message`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from napari_tpm._session_data import WORKING_SIZE
from napari_tpm.necks import inscribed_radius_mm
from napari_tpm.scribble import stroke_shaped
from napari_tpm.support import SupportSlices

__all__ = [
    "SMALL_SECTION_MM2",
    "pole_side",
    "section_areas",
    "small_among",
    "small_section_message",
    "small_sections",
]

#: a structure whose every painted section is smaller than this (mm²) is reported: below it,
#: no development result was usable (see the module docstring)
SMALL_SECTION_MM2 = 200.0


def section_areas(
    paint: np.ndarray, parsed: SupportSlices, spacing: Sequence[float]
) -> dict[int, float | None]:
    """Per structure, its largest painted section in mm², or None where it was painted as a
    stroke on some slice (a stroke is grown to the organ's region, so its own area says
    nothing; :func:`napari_tpm.scribble.is_scribble`'s rule, at the 256-pixel working grid's
    scale of that slice).

    ``paint`` is the support label volume, ``parsed`` its :func:`napari_tpm.support.parse_support`
    and ``spacing`` the (z, y, x) spacing of the volume it was painted on.
    """
    plane_mm = [float(s) for a, s in enumerate(spacing) if a != parsed.axis]
    pixel_mm2 = plane_mm[0] * plane_mm[1]
    out: dict[int, float | None] = {}
    for value in parsed.values:
        largest: float | None = 0.0
        for index in parsed.indices:
            section = np.take(paint, index, axis=parsed.axis) == value
            if not section.any():
                continue
            # the working grid's pixel: the slice's longer side over 256 pixels
            working_mm = max(n * s for n, s in zip(section.shape, plane_mm)) / WORKING_SIZE
            rows, cols = np.flatnonzero(section.any(1)), np.flatnonzero(section.any(0))
            box = section[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # the EDT near it only
            radius = inscribed_radius_mm(box, plane_mm) / working_mm
            area = float(section.sum()) * pixel_mm2
            if stroke_shaped(radius, area / working_mm**2):
                largest = None  # a stroke: grown before it is used
                break
            largest = max(largest, area)
        out[int(value)] = largest
    return out


def small_sections(
    paint: np.ndarray, parsed: SupportSlices, spacing: Sequence[float]
) -> dict[int, float]:
    """The structures whose largest painted section is under :data:`SMALL_SECTION_MM2`, with
    that area (mm²); strokes are left out (:func:`section_areas`)."""
    return small_among(section_areas(paint, parsed, spacing))


def small_among(areas: Mapping[int, float | None]) -> dict[int, float]:
    """:func:`small_sections` from areas already measured (:func:`section_areas`), for a caller
    that needs the areas too."""
    return {v: a for v, a in areas.items() if a is not None and a < SMALL_SECTION_MM2}


def small_section_message(label: int, area_mm2: float, beyond: int | None = None) -> str:
    """What every front end says about a structure painted only on a small section
    (``beyond``: the slice its prototypes were taken from instead, :func:`pole_side`)."""
    moved = (
        f"; its prototypes came from slice {beyond}, next to it towards the organ"
        if beyond is not None
        else ""
    )
    return (
        f"label {label} is painted on {area_mm2:.0f} mm² only (< {SMALL_SECTION_MM2:.0f}): a "
        f"section this small, such as an organ's pole, is mostly partial volume{moved}. Such "
        "paint often segments poorly; paint it on a slice where it is wider. If it marks only "
        "part of a larger organ, outline the organ there or paint a longer stroke along it."
    )


def pole_side(
    image: np.ndarray, index: int, section: np.ndarray, axis: int, painted: np.ndarray
) -> int | None:
    """The slice next to ``index`` along ``axis`` where the organ painted as ``section`` (a
    small 2D mask on that slice of ``image``) is fuller, or None.

    A small section is an organ's pole: the organ fills only part of that slice's thickness,
    so the section's intensity lies between the organ's and its surroundings' (a ring of 3
    pixels around it, off any other ``painted`` pixel of the slice). On the slice towards the
    organ's body the same footprint is more nearly all organ: it stands further from the
    surroundings than the section does, on the same side. The slice that does so most is
    returned; none when neither does (a section that is not a pole).
    """
    plane = np.take(image, index, axis=axis).astype(np.float64)
    ring = ndimage.binary_dilation(section, iterations=3) & ~section & ~painted
    if not section.any() or not ring.any():
        return None
    around = float(plane[ring].mean())
    sign = 1.0 if plane[section].mean() >= around else -1.0
    contrast = (float(plane[section].mean()) - around) * sign
    best: tuple[int, float] | None = None
    for j in (index - 1, index + 1):
        if 0 <= j < image.shape[axis]:
            there = (float(np.take(image, j, axis=axis)[section].mean()) - around) * sign
            if there > contrast and (best is None or there > best[1]):
                best = (j, there)
    return None if best is None else best[0]
