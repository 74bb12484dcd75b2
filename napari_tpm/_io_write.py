"""Writing a (z, y, x) array to NIfTI, NRRD or MetaImage on the grid of the volume it came from.

Writes are atomic and verified: SimpleITK can report success on a full disk, so what reached the
disk is checked before it replaces anything. Kept apart from `napari_tpm.io` (reading), which
re-exports `write_volume`; import it from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_tpm._io_checks import VolumeError, _itk_detail, check_finite
from napari_tpm._nifti_check import _check_nifti
from napari_tpm._volume import _IDENTITY_DIRECTION, SUPPORTED_EXTENSIONS, Volume, _extension
from napari_tpm.atomic import (
    OutputError,
    atomic_output,
    c_stderr_silenced,
    describe_os_error,
)


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
