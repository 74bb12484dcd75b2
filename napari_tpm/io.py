"""Reading and writing 3D volumes with their geometry, with one-line errors a user can act on.

Everything goes through SimpleITK so that NIfTI, NRRD, MetaImage and DICOM series share one
geometry model. Arrays are (z, y, x) as `SimpleITK.GetArrayFromImage` returns them, spacing is
(z, y, x) in millimetres (the project convention), while origin (x, y, z) and the 9-element
direction matrix are kept exactly as SimpleITK reports them, so writing a result "like" an input
reproduces the input's world placement bit for bit.

Every failure a user can cause (wrong path, corrupt or unsupported file, 2D or 4D data, NaNs,
mismatched grids) raises `VolumeError`, a `ValueError` whose message is a single line naming the
file and the problem, because these messages end up in a napari notification or a CLI error.

This module reads, and is the one import path for the whole API: it re-exports the volume record
(`napari_tpm._volume`), writing (`napari_tpm._io_write`) and the shared checks
(`napari_tpm._io_checks`). DICOM folders are read by `napari_tpm._dicom`, and NIfTI files are
checked against their header by `napari_tpm._nifti_check`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from napari_tpm._dicom import _read_dicom_folder, describe_series, dicom_series
from napari_tpm._io_checks import (
    VolumeError,
    _as_3d_scalar,
    _itk_detail,
    check_finite,
    check_size,
    require_same_grid,
    same_grid,
)
from napari_tpm._io_write import write_volume
from napari_tpm._nifti_check import _check_nifti
from napari_tpm._volume import SUPPORTED_EXTENSIONS, Volume, _extension

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Volume",
    "VolumeError",
    "VolumeHeader",
    "check_finite",
    "check_size",
    "dicom_series",
    "read_header",
    "read_volume",
    "require_same_grid",
    "same_grid",
    "write_volume",
]


# --------------------------------------------------------------------------------------------
# reading


def read_volume(path: str | Path, series: str | None = None) -> Volume:
    """Read a 3D scalar volume from NIfTI, NRRD, MetaImage or a folder holding a DICOM series.

    A 4D file with a single frame is read as 3D. NIfTI files are checked against their header
    before ITK reads them (ITK accepts truncated NIfTI and turns NaN into 0); for float NIfTI
    volumes this costs one extra pass of decompression. ``series`` picks one SeriesInstanceUID
    of a DICOM folder holding several (without it the largest is read, with a warning).

    Raises:
        VolumeError: missing path, unsupported extension, unreadable or truncated file, a folder
            without DICOM, 2D, 4D or multi-component images, or NaN/infinite voxels.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    if path.is_dir():
        image = _read_dicom_folder(path, series)
    else:
        ext = _extension(path)
        if ext not in SUPPORTED_EXTENSIONS:
            hint = " (for DICOM, pass the folder holding the series)" if ext == ".dcm" else ""
            raise VolumeError(
                f"{path.name}: unsupported file type {ext or '(no extension)'!r}; "
                f"use one of {', '.join(SUPPORTED_EXTENSIONS)} or a DICOM folder{hint}"
            )
        if ext in (".nii", ".nii.gz"):
            _check_nifti(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as err:
            raise VolumeError(
                f"{path.name}: cannot read the file, it is unreadable or corrupt "
                f"({_itk_detail(err)})"
            ) from None
    image = _as_3d_scalar(image, path.name)
    volume = Volume.from_sitk(image)
    check_finite(volume.array, what=path.name)
    return volume


@dataclass(frozen=True)
class VolumeHeader:
    """What a volume file promises before its voxels are read: (z, y, x) shape and voxel size."""

    shape: tuple[int, int, int]
    bytes_per_voxel: int

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)


def read_header(path: str | Path, series: str | None = None) -> VolumeHeader:
    """The shape and voxel size of a volume file or DICOM series, from its header only.

    Lets a front end refuse a volume that would not fit in memory before loading it.

    Raises:
        VolumeError: a missing or unreadable file, or an ambiguous DICOM folder (several
            series and no ``series``). An unsupported file type gives an empty header, so
            that `read_volume` words that error.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    if path.is_dir():
        found = dicom_series(path)
        if series is None and len(found) > 1:
            raise VolumeError(
                f"{path}: {len(found)} DICOM series in this folder ({describe_series(found)}); "
                "choose one with --series UID"
            )
        if series is not None and series not in found:
            raise VolumeError(
                f"{path}: no DICOM series {series!r} here; the folder holds "
                f"{describe_series(found)}"
            )
        files = found[series if series is not None else next(iter(found))]
        first, n_slices = files[0], len(files)
    else:
        if _extension(path) not in SUPPORTED_EXTENSIONS:
            return VolumeHeader((0, 0, 0), 0)
        first, n_slices = str(path), 1
    reader = sitk.ImageFileReader()
    reader.SetFileName(first)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise VolumeError(
            f"{path.name}: cannot read the file, it is unreadable or corrupt ({_itk_detail(err)})"
        ) from None
    size = [int(v) for v in reader.GetSize()] + [1, 1]
    x, y, z = size[0], size[1], size[2] * n_slices
    item = sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID())).itemsize
    per_voxel = item * max(1, int(reader.GetNumberOfComponents()))
    return VolumeHeader((z, y, x), per_voxel)
