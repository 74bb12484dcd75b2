"""napari reader: medical volumes (NIfTI, NRRD, MetaImage, DICOM series) as layers with geometry.

A volume opens with its physical voxel size as the layer ``scale`` and its origin as
``translate`` (both (z, y, x)), so scans with different spacings overlay correctly, and with the
full geometry (spacing, SimpleITK origin and direction, source path) in
``layer.metadata["tpm_geometry"]`` so that our writer puts results back on the scan's exact world
grid. Label maps (integer files named like ``*label*``/``*seg*``/``*mask*``, or integer volumes
with few distinct values) open as Labels layers.

The direction matrix is applied to the display when it only flips axes (the usual case: NIfTI
files whose y or x runs the other way than DICOM's): the layer then gets an ``affine`` with
those flips and the origin, so the scan shows anterior-up like its DICOM series and overlays
it. An oblique or axis-swapping direction stays in the metadata only (napari slices such data
poorly); the writer restores it either way. CT images open with a soft-tissue window
(W 400 / L 40 HU) instead of the full -1024..3000 range.
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
#: soft-tissue window (level 40, width 400 HU) shown for CT images
CT_WINDOW = (-160.0, 240.0)
PLUGIN_NAME = "napari-tpm"
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


def placement(volume: Volume) -> dict[str, Any]:
    """``scale``, ``translate`` and (for flipped axes) ``affine`` that place ``volume`` in world.

    World is SimpleITK's physical space in (z, y, x) order: ``origin + D @ (spacing * index)``
    with the direction ``D`` reordered to (z, y, x). When ``D`` is diagonal with entries +-1 it
    goes into a layer ``affine`` (with the origin), so flipped files display like their DICOM
    series; other directions keep the axis-aligned ``scale``/``translate`` placement.
    """
    spacing = tuple(float(s) for s in volume.spacing)
    origin = tuple(float(o) for o in reversed(volume.origin))
    rotation = np.asarray(volume.direction, dtype=float).reshape(3, 3)[::-1, ::-1]
    flips = np.allclose(np.abs(rotation), np.eye(3), atol=1e-6)
    if not flips or np.allclose(rotation, np.eye(3), atol=1e-6):
        return {"scale": spacing, "translate": origin}
    affine = np.eye(4)
    affine[:3, :3] = np.round(rotation)
    affine[:3, 3] = origin
    return {"scale": spacing, "translate": (0.0, 0.0, 0.0), "affine": affine}


def volume_to_layer_data(volume: Volume, source: str | Path | None = None) -> LayerData:
    """Layer data for ``volume``: Labels for label maps, otherwise an Image (CT windowed)."""
    name = layer_name(source) if source is not None else "volume"
    kwargs: dict[str, Any] = {
        "name": name,
        **placement(volume),
        "metadata": {GEOMETRY_KEY: geometry_metadata(volume, source)},
    }
    array = volume.array
    if looks_like_labels(array, name):
        if array.dtype == bool:
            array = array.astype(np.uint8)
        return array, kwargs, "labels"
    kwargs["colormap"] = "gray"
    from napari_tpm.preprocess import guess_modality

    if guess_modality(array) == "ct":
        kwargs["contrast_limits"] = CT_WINDOW
    return array, kwargs, "image"


def prefer_this_reader(settings: Any) -> list[str]:
    """Make this plugin napari's reader for its file patterns the user has not decided on.

    napari's manifest has no reader priority: when two plugins claim ``*.nii.gz`` (napari's
    builtins do, through imageio, without any geometry) File > Open asks "Choose reader" every
    time, unless ``settings.plugins.extension2reader`` names one. This fills in only the patterns
    without a preference, so a user's own choice always wins. Returns the patterns it set.
    """
    current = dict(settings.plugins.extension2reader)
    added = [f"*{ext}" for ext in EXTENSIONS if f"*{ext}" not in current]
    if added:
        settings.plugins.extension2reader = {**current, **dict.fromkeys(added, PLUGIN_NAME)}
    return added
