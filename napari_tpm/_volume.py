"""The in-memory volume (`Volume`: a (z, y, x) array and its world geometry) and the file
endings `napari_tpm.io` reads and writes.

Kept apart from `napari_tpm.io` so that reading (there) and writing (`napari_tpm._io_write`) share
one geometry model without importing each other. `napari_tpm.io` re-exports `Volume` and
`SUPPORTED_EXTENSIONS`; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_tpm._io_checks import VolumeError

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


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return "".join(path.suffixes[-2:]).lower() if path.suffixes else ""
