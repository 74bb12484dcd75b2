"""Bring another scan's voxel axes to point the way this scan's do (paint from another file).

Two files of the same anatomy can store their voxels in different orders: a NIfTI written as
RAS and one written as LAS hold left-right mirrored arrays, and DICOM series come in LPS. The
readers keep each file's own voxel order (so results are written back exactly on its grid), and
the session compares arrays. With paint from another volume the mirrored support then puts the
left kidney's prototypes and footprint on the right: the TotalSegmentator CT pair of the
benchmark (RAS vs LAS) scored 0 Dice across patients for that reason alone.

:func:`reorient_like` permutes and flips the support's array (and its paint) so that its axes
point the same anatomical directions as the query's. It never resamples: SimpleITK's
``DICOMOrient`` only reorders voxels, and the voxel size is carried along.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from napari_tpm.io import Volume

__all__ = ["orientation_code", "reorient_like", "reorient_pair", "support_like"]


def orientation_code(direction: Sequence[float]) -> str:
    """The three-letter DICOM orientation (e.g. "LPS", "RAS") of row-major direction cosines."""
    return str(sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(tuple(direction)))


def reorient_like(
    array: np.ndarray,
    spacing: Sequence[float],
    direction: Sequence[float],
    like_direction: Sequence[float],
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``array`` (z, y, x) of voxel size ``spacing`` reordered to the orientation of
    ``like_direction``; returned unchanged when the two orientations already agree.

    Directions are SimpleITK's row-major 3x3 cosines (:attr:`napari_tpm.io.Volume.direction`).
    Apply it to the support image and to its paint alike: they share one grid.
    """
    target = orientation_code(like_direction)
    if orientation_code(direction) == target:
        return array, tuple(float(s) for s in spacing)  # type: ignore[return-value]
    source = Volume(np.asarray(array), tuple(spacing), direction=tuple(direction))
    out = Volume.from_sitk(sitk.DICOMOrient(source.to_sitk(), target))
    return out.array.astype(array.dtype, copy=False), out.spacing  # type: ignore[return-value]


def reorient_pair(
    image: np.ndarray,
    paint: np.ndarray,
    spacing: Sequence[float],
    direction: Sequence[float],
    like_direction: Sequence[float],
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], str]:
    """An image and its paint (one grid) reordered together by :func:`reorient_like`.

    Returns (image, paint, spacing, change): the inputs themselves and "" when the
    orientations agree, else the reordered arrays and the change as "LAS -> RAS".
    """
    moved, moved_spacing = reorient_like(image, spacing, direction, like_direction)
    if moved is image:
        return image, paint, moved_spacing, ""
    painted, _ = reorient_like(paint, spacing, direction, like_direction)
    change = f"{orientation_code(direction)} -> {orientation_code(like_direction)}"
    return moved, painted, moved_spacing, change


def support_like(support_image: Volume, paint: Volume, like: Volume) -> tuple[Volume, Volume, str]:
    """Another volume's image and its paint (one grid) with their axes pointing as ``like``'s.

    Returns the two volumes (the inputs themselves when the orientations agree) and the
    change made, as "LAS -> RAS", or "" for none. Only the arrays and the voxel size are
    reordered: the session reads nothing else.
    """
    array, painted, spacing, change = reorient_pair(
        support_image.array,
        paint.array,
        support_image.spacing,
        support_image.direction,
        like.direction,
    )
    if not change:
        return support_image, paint, ""
    return (
        Volume(array, spacing, direction=like.direction),
        Volume(painted, spacing, direction=like.direction),
        change,
    )
