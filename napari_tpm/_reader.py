"""napari reader: medical volumes (NIfTI, NRRD, MetaImage, DICOM series) as layers with geometry.

A volume opens with its physical voxel size as the layer ``scale`` and its origin as
``translate`` (both (z, y, x)), so scans with different spacings overlay correctly, and with the
full geometry (spacing, SimpleITK origin and direction, source path) in
``layer.metadata["tpm_geometry"]`` so that our writer puts results back on the scan's exact world
grid. Label maps (integer files named like ``*label*``/``*seg*``/``*mask*``, or integer volumes
with few distinct values) open as Labels layers.

The display ignores the direction matrix (napari slices axis-aligned data best); only the
metadata carries it, which is what a round trip to other tools needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari_tpm.io import Volume

GEOMETRY_KEY = "tpm_geometry"
#: endings this reader claims (the same as napari_tpm.io.SUPPORTED_EXTENSIONS).
EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: a label map rarely has more distinct values than this (TotalSegmentator has 117).
MAX_LABEL_VALUES = 256
_LABEL_NAME = re.compile(r"(label|seg|mask|annot)", re.IGNORECASE)

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return a reader for ``path`` when it is a volume this plugin opens, else None.

    Never raises: napari asks every reader about every path, and an unsupported one must simply
    be declined.
    """
    paths = path if isinstance(path, list) else [path]
    try:
        if paths and all(_claims(Path(p)) for p in paths):
            return read_layers
    except Exception:  # odd paths (permissions, broken links): decline instead of failing
        return None
    return None


def _claims(path: Path) -> bool:
    if path.is_dir():
        return _is_dicom_folder(path)
    return path.name.lower().endswith(EXTENSIONS)


def _is_dicom_folder(path: Path) -> bool:
    """True when the folder holds a DICOM series (checked cheaply, without reading pixels)."""
    import SimpleITK as sitk

    return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read one or several volumes into napari layer data (raises VolumeError on bad files)."""
    from napari_tpm.io import read_volume

    paths = path if isinstance(path, list) else [path]
    return [volume_to_layer_data(read_volume(p), source=str(p)) for p in paths]


def layer_name(source: str | Path) -> str:
    """File name without its (double) extension; the folder name for a DICOM series."""
    name = Path(source).name
    for ext in EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def geometry_metadata(volume: Volume, source: str | Path | None = None) -> dict[str, Any]:
    """The ``tpm_geometry`` dict: enough to write a result back on ``volume``'s world grid.

    Keys: ``shape`` and ``spacing`` in (z, y, x); ``origin`` (x, y, z) and the row-major 3x3
    ``direction``, both exactly as SimpleITK reports them; ``source`` the file or folder read.
    """
    return {
        "shape": tuple(int(s) for s in volume.array.shape),
        "spacing": tuple(float(s) for s in volume.spacing),
        "origin": tuple(float(o) for o in volume.origin),
        "direction": tuple(float(d) for d in volume.direction),
        "source": None if source is None else str(source),
    }


def looks_like_labels(array: np.ndarray, name: str = "") -> bool:
    """Integer data that is named like a label map, or holds few distinct non-negative values."""
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        return False
    if array.size == 0 or array.min() < 0:
        return False
    if _LABEL_NAME.search(name):
        return True
    # a strided sample first: a CT has thousands of values and is rejected without a full sort
    sample = array[::4, ::4, ::4] if array.ndim == 3 else array
    if np.unique(sample).size > MAX_LABEL_VALUES:
        return False
    return np.unique(array).size <= MAX_LABEL_VALUES


def volume_to_layer_data(volume: Volume, source: str | Path | None = None) -> LayerData:
    """Layer data for ``volume``: Labels for label maps, otherwise an Image."""
    name = layer_name(source) if source is not None else "volume"
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": tuple(float(s) for s in volume.spacing),
        "translate": tuple(float(o) for o in reversed(volume.origin)),
        "metadata": {GEOMETRY_KEY: geometry_metadata(volume, source)},
    }
    array = volume.array
    if looks_like_labels(array, name):
        if array.dtype == bool:
            array = array.astype(np.uint8)
        return array, kwargs, "labels"
    kwargs["colormap"] = "gray"
    return array, kwargs, "image"
