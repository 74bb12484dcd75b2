"""`VolumeError` and the value, size, shape and grid checks that reading, writing and the front
ends share.

Kept out of `napari_tpm.io` to keep that module short, and so that `napari_tpm._dicom` can raise
`VolumeError` without importing `napari_tpm.io` (which imports both). Every name here is
re-exported by `napari_tpm.io`; import them from there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:
    from napari_tpm.io import Volume


class VolumeError(ValueError):
    """A volume cannot be used; the message is one line naming the file and the problem."""


def _itk_detail(error: Exception) -> str:
    """The most telling line of a multi-line ITK exception, for a one-line message."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for line in reversed(lines):
        cleaned = line.removeprefix("[nrrd]").strip()
        if cleaned and not cleaned.endswith(":"):
            return cleaned[:200]
    return type(error).__name__


def check_finite(array: np.ndarray, what: str = "image") -> None:
    """Raise VolumeError when `array` holds NaN or infinite values (integers always pass).

    NaNs poison every mean, z-score and distance downstream without an error of their own, so
    they are refused at the door rather than discovered as an all-empty segmentation.
    """
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(
        array.dtype, np.complexfloating
    ):
        return
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        n_nan = int(np.count_nonzero(np.isnan(array)))
        raise VolumeError(_nonfinite_message(what, n_nan, bad - n_nan))


def _nonfinite_message(what: str, n_nan: int, n_inf: int) -> str:
    return (
        f"{what} contains {n_nan + n_inf} non-finite voxel(s) ({n_nan} NaN, {n_inf} infinite); "
        "replace them before segmenting"
    )


def check_size(shape: Sequence[int], max_voxels: int) -> int:
    """Return the voxel count of `shape`; raise VolumeError when it exceeds `max_voxels`.

    Lets a front end refuse a volume that would not fit in memory before any buffer is made.
    """
    n = math.prod(int(s) for s in shape)
    if n > max_voxels:
        raise VolumeError(
            f"volume of shape {tuple(int(s) for s in shape)} has {n:,} voxels, more than the "
            f"limit of {int(max_voxels):,}; crop or downsample it first"
        )
    return n


def same_grid(a: Volume, b: Volume, tol: float = 1e-3) -> bool:
    """True when `a` and `b` sample the same world grid.

    `tol` is relative so one number fits every scale: spacings may differ by `tol` times their
    size, origins by `tol` voxels (file formats store positions as float32, and NIfTI's
    qform/sform conversions leave rounding far above machine precision), direction cosines by
    `tol` absolutely.
    """
    return not _grid_differences(a, b, tol)


def require_same_grid(image: Volume, labels: Volume, what: str = "labels") -> None:
    """Raise VolumeError naming what differs when `labels` is not on `image`'s grid."""
    diffs = _grid_differences(image, labels, 1e-3)
    if diffs:
        raise VolumeError(
            f"{what} grid (shape/spacing/origin/direction) does not match the image: "
            + "; ".join(diffs)
        )


def _grid_differences(a: Volume, b: Volume, tol: float) -> list[str]:
    diffs = []
    if a.shape != b.shape:
        diffs.append(f"shape {a.shape} vs {b.shape}")
        return diffs
    sa, sb = np.asarray(a.spacing), np.asarray(b.spacing)
    if np.any(np.abs(sa - sb) > tol * np.maximum(np.abs(sa), np.abs(sb))):
        diffs.append(f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)}")
    voxel = float(np.min(np.minimum(np.abs(sa), np.abs(sb))))
    if np.any(np.abs(np.subtract(a.origin, b.origin)) > tol * max(voxel, 1e-12)):
        diffs.append(f"origin {_fmt(a.origin)} vs {_fmt(b.origin)}")
    if np.any(np.abs(np.subtract(a.direction, b.direction)) > tol):
        diffs.append(f"direction {_fmt(a.direction)} vs {_fmt(b.direction)}")
    return diffs


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _as_3d_scalar(image: sitk.Image, name: str) -> sitk.Image:
    """Refuse what the segmenter cannot use; squeeze a trailing singleton 4th axis."""
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise VolumeError(
            f"{name}: multi-component pixels ({image.GetNumberOfComponentsPerPixel()} values per "
            "voxel: RGB, vector or 4D data stored as components); a single-channel 3D image is "
            "needed"
        )
    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4 and size[3] == 1:
        image = sitk.Extract(image, (*size[:3], 0), (0, 0, 0, 0))
        dim, size = 3, image.GetSize()
    if dim == 2 or (dim == 3 and min(size) == 1):
        raise VolumeError(
            f"{name}: this is a 2D image (size {size} in x, y, z); a 3D volume with several "
            "slices is needed"
        )
    if dim != 3:
        raise VolumeError(
            f"{name}: this is a {dim}D image (size {size}); only 3D volumes are supported, "
            "extract one 3D volume (e.g. one time point) first"
        )
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise VolumeError(f"{name}: complex-valued pixels are not supported")
    return image
