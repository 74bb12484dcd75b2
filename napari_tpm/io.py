"""Reading and writing 3D volumes with their geometry, with one-line errors a user can act on.

Everything goes through SimpleITK so that NIfTI, NRRD, MetaImage and DICOM series share one
geometry model. Arrays are (z, y, x) as `SimpleITK.GetArrayFromImage` returns them, spacing is
(z, y, x) in millimetres (the project convention), while origin (x, y, z) and the 9-element
direction matrix are kept exactly as SimpleITK reports them, so writing a result "like" an input
reproduces the input's world placement bit for bit.

Every failure a user can cause (wrong path, corrupt or unsupported file, 2D or 4D data, NaNs,
mismatched grids) raises `VolumeError`, a `ValueError` whose message is a single line naming the
file and the problem, because these messages end up in a napari notification or a CLI error.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_tpm._dicom import _read_dicom_folder, describe_series, dicom_series
from napari_tpm._io_checks import (
    VolumeError,
    _as_3d_scalar,
    _itk_detail,
    _nonfinite_message,
    check_finite,
    check_size,
    require_same_grid,
    same_grid,
)
from napari_tpm._nifti import nifti_layout, scan_payload
from napari_tpm.atomic import (
    OutputError,
    atomic_output,
    c_stderr_silenced,
    describe_os_error,
)

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

#: File name endings `read_volume` and `write_volume` accept (a folder means a DICOM series).
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

_IDENTITY_DIRECTION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class Volume:
    """A 3D array with the geometry needed to place it in the world and to write results back.

    Attributes:
        array: voxel values, shape (z, y, x).
        spacing: voxel size (z, y, x) in mm (reversed with respect to SimpleITK's GetSpacing).
        origin: world position (x, y, z) of voxel (0, 0, 0), as SimpleITK's GetOrigin.
        direction: row-major 3x3 direction cosines, as SimpleITK's GetDirection.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = field(default=_IDENTITY_DIRECTION)

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = tuple(float(d) for d in self.direction)
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise VolumeError(
                "a Volume needs 3 spacing values, 3 origin values and 9 direction values, got "
                f"{len(self.spacing)}, {len(self.origin)} and {len(self.direction)}"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        """Wrap a 3D scalar SimpleITK image (the pixel buffer is copied into numpy)."""
        if image.GetDimension() != 3:
            raise VolumeError(f"expected a 3D image, got a {image.GetDimension()}D image")
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=tuple(reversed(image.GetSpacing())),
            origin=image.GetOrigin(),
            direction=image.GetDirection(),
        )

    def to_sitk(self, array: np.ndarray | None = None) -> sitk.Image:
        """A SimpleITK image with this geometry holding `array` (default: this volume's array)."""
        data = self.array if array is None else array
        if data.ndim != 3:
            raise VolumeError(f"expected a 3D (z, y, x) array, got shape {data.shape}")
        if array is not None and tuple(array.shape) != self.shape:
            raise VolumeError(
                f"array shape {tuple(array.shape)} does not match the volume shape {self.shape}"
            )
        if data.dtype == bool:
            data = data.view(np.uint8)  # SimpleITK has no boolean pixel type
        elif data.dtype == np.float16:
            data = data.astype(np.float32)
        image = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=False)
        image.SetSpacing(tuple(reversed(self.spacing)))
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


# --------------------------------------------------------------------------------------------
# reading


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return "".join(path.suffixes[-2:]).lower() if path.suffixes else ""


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


def _check_nifti(path: Path, check_values: bool = True) -> None:
    """Raise VolumeError for a truncated NIfTI file, or one whose float voxels hold NaN/inf.

    ITK reads a truncated NIfTI (plain or gzipped) without complaint and pads with zeros, which
    would silently turn a damaged download into a half-empty scan; and the NIfTI library it uses
    replaces NaN and infinite floats with 0, hiding them from `check_finite`. The header gives
    the exact byte count and voxel type. Float volumes are streamed once to count non-finite
    values (and bytes); for other types a gzip file's trailer size field is checked first, and
    only on a mismatch (truncation, or a rare multi-member file) is the stream decompressed.
    """
    gz = path.name.lower().endswith(".gz")
    try:
        with gzip.open(path, "rb") if gz else path.open("rb") as fh:
            header = fh.read(540)
    except (OSError, EOFError, zlib.error) as err:
        raise VolumeError(
            f"{path.name}: cannot read the file, it is unreadable or corrupt ({err})"
        ) from None
    layout = nifti_layout(header)
    if layout is None:
        return  # not a NIfTI header we understand: let ITK give its own verdict
    n_nan = n_inf = 0
    if layout.float_dtype is not None:
        actual, n_nan, n_inf = scan_payload(path, gz, layout)
    elif gz:
        with path.open("rb") as fh:
            fh.seek(-4, 2)
            isize = struct.unpack("<I", fh.read(4))[0]
        if isize == layout.total_bytes % 2**32:
            return
        actual = scan_payload(path, gz, layout)[0]
    else:
        actual = path.stat().st_size
    if actual is None or actual < layout.total_bytes:
        got = "a broken compressed stream" if actual is None else f"{actual:,} bytes"
        raise VolumeError(
            f"{path.name}: the file is truncated or corrupt (header promises "
            f"{layout.total_bytes:,} bytes, found {got})"
        )
    if check_values and (n_nan or n_inf):
        raise VolumeError(_nonfinite_message(path.name, n_nan, n_inf))


# --------------------------------------------------------------------------------------------
# writing


def _label_dtype(array: np.ndarray) -> np.dtype:
    """Smallest integer type holding the (rounded) label values; viewers treat these as labels."""
    if array.size == 0:
        return np.dtype(np.uint8)
    lo, hi = float(np.min(array)), float(np.max(array))
    for dtype in (np.uint8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def write_volume(
    path: str | Path,
    array: np.ndarray,
    like: Volume | None = None,
    *,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    is_label: bool | None = None,
    compress: bool = True,
) -> Path:
    """Write a (z, y, x) array to NIfTI, NRRD or MetaImage, on the grid of `like`.

    Geometry comes from `like` (typically the volume the array was computed from); `spacing`
    (z, y, x), `origin` (x, y, z) and `direction` override it, and without either the grid is
    the unit identity grid. Label arrays (`is_label=True`, or any bool/integer array when left
    None) are stored as the smallest integer type that holds them, because viewers and other
    tools decide "label or image" from the stored type, and float labels waste space.

    Returns:
        The path written.
    """
    path = Path(path).expanduser()
    ext = _extension(path)
    if ext not in SUPPORTED_EXTENSIONS:
        raise VolumeError(
            f"{path.name}: unsupported file type {ext or '(no extension)'!r} for writing; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if not path.parent.is_dir():
        raise VolumeError(f"{path}: the folder {path.parent} does not exist")
    array = np.asarray(array)
    if array.ndim != 3:
        raise VolumeError(f"{path.name}: expected a 3D (z, y, x) array, got shape {array.shape}")
    if like is not None and tuple(array.shape) != like.shape:
        raise VolumeError(
            f"{path.name}: array shape {tuple(array.shape)} does not match the reference volume "
            f"shape {like.shape}"
        )
    if is_label is None:
        is_label = array.dtype == bool or np.issubdtype(array.dtype, np.integer)
    if is_label:
        check_finite(array, what=path.name)
        if np.issubdtype(array.dtype, np.floating):
            array = np.rint(array)
        array = array.astype(_label_dtype(array), copy=False)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    geometry = Volume(
        array=array,
        spacing=spacing if spacing is not None else (like.spacing if like else (1.0, 1.0, 1.0)),
        origin=origin if origin is not None else (like.origin if like else (0.0, 0.0, 0.0)),
        direction=direction
        if direction is not None
        else (like.direction if like else _IDENTITY_DIRECTION),
    )
    if min(geometry.spacing) <= 0:
        raise VolumeError(f"{path.name}: spacing must be positive, got {geometry.spacing}")
    # ITK picks the format from a lower-case extension (and writes "X.MHA" as X.mhd + X.zraw),
    # so the temporary file gets the canonical extension and is renamed to `path` at the end.
    main_name = path.name[: len(path.name) - len(ext)] + ext
    try:
        with atomic_output(path, main_name, verify=lambda f: _verify_written(f, ext, array)) as tmp:
            _write_itk(geometry.to_sitk(), tmp / main_name, compress)
    except OSError as err:
        raise VolumeError(
            f"{path.name}: cannot write the file ({describe_os_error(err)})"
        ) from None
    except OutputError as err:
        raise VolumeError(str(err)) from None
    return path


def _write_itk(image: sitk.Image, path: Path, compress: bool) -> None:
    """sitk.WriteImage with ITK's console warnings off (failures are detected by verifying)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with c_stderr_silenced():
            sitk.WriteImage(image, str(path), useCompression=compress)
    except RuntimeError as err:
        raise VolumeError(f"{path.name}: cannot write the file ({_itk_detail(err)})") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _verify_written(path: Path, ext: str, array: np.ndarray) -> None:
    """Raise VolumeError unless `path` holds all of `array`.

    SimpleITK's writers can report success on a full disk (NIfTI writes a 0-byte or truncated
    file and only prints a warning), so what reached the disk is checked before it replaces
    anything: NIfTI against the byte count its header promises (streamed, no second copy in
    memory), other formats by reading the image back and comparing the voxels.
    """
    name = path.name
    if path.stat().st_size == 0:
        raise VolumeError(f"{name}: nothing was written (0 bytes); is the disk full?")
    try:
        if ext in (".nii", ".nii.gz"):
            _check_nifti(path, check_values=False)
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            same = tuple(reversed(reader.GetSize())) == tuple(array.shape)
        else:
            back = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            same = back.shape == array.shape and np.array_equal(back, array, equal_nan=True)
    except (VolumeError, RuntimeError) as err:
        detail = str(err) if isinstance(err, VolumeError) else _itk_detail(err)
        detail = detail.removeprefix(f"{name}: ")
        raise VolumeError(
            f"{name}: the written file is incomplete, is the disk full? ({detail})"
        ) from None
    if not same:
        raise VolumeError(f"{name}: the written file does not hold the data; is the disk full?")
