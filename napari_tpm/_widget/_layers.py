"""Layer helpers for the widget: grids, result layers and the undoable Apply.

They take napari layers but hold no state, so they are tested without a viewer.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari


def grid_kwargs(layer: napari.layers.Layer) -> dict[str, Any]:
    """The keyword arguments that put a new layer on ``layer``'s grid.

    The scan's full geometry (direction included) lives in ``metadata['tpm_geometry']``; copying
    it makes a result layer saved with our writer overlay the original scan in other tools.
    """
    return {
        "scale": tuple(float(s) for s in layer.scale),
        "translate": tuple(float(t) for t in layer.translate),
        "affine": np.array(layer.affine.affine_matrix, copy=True),
        "metadata": copy.deepcopy(dict(layer.metadata)),
    }


def place_on_grid(layer: napari.layers.Layer, like: napari.layers.Layer) -> None:
    """Put an existing ``layer`` on ``like``'s grid: placement, flips and stored geometry."""
    for key, value in grid_kwargs(like).items():
        setattr(layer, key, value)


def adopt_geometry(labels: napari.layers.Labels, image: napari.layers.Layer) -> bool:
    """Give an empty Labels layer made in napari the geometry of the image it will be painted on.

    napari's "new labels layer" button makes an identity-direction layer: painted over a flipped
    scan it holds the paint mirrored, and it would be saved mirrored. A layer that is empty, on
    the image's voxel grid and without stored geometry of its own takes the image's placement
    and geometry (nothing painted yet, so nothing moves). Returns True when it did.
    """
    key = "tpm_geometry"
    if key in labels.metadata or key not in image.metadata or not same_grid(labels, image):
        return False
    if np.any(labels.data):
        return False
    place_on_grid(labels, image)
    return True


def data_index(layer: napari.layers.Layer, world_point: tuple[float, ...], axis: int = 0) -> int:
    """The slice index along ``axis`` of ``layer``'s data shown at ``world_point``.

    napari's dims count world steps; with a spacing or a flipped axis they differ from slices.
    """
    index = layer.world_to_data(tuple(world_point))[axis]
    return int(np.clip(round(float(index)), 0, np.shape(layer.data)[axis] - 1))


def same_grid(a: napari.layers.Layer, b: napari.layers.Layer) -> bool:
    """True when both layers have the same voxel shape (world scale may differ)."""
    return tuple(np.shape(a.data)) == tuple(np.shape(b.data))


def label_dtype(values: np.ndarray | tuple[int, ...]) -> np.dtype:
    """Smallest unsigned dtype holding every label value (uint8 for ordinary label maps)."""
    top = int(np.max(values)) if np.size(values) else 0
    if top < 256:
        return np.dtype(np.uint8)
    if top < 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def new_labels_data(shape: tuple[int, ...], dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """An empty label volume; a function so that every caller agrees on the default."""
    return np.zeros(shape, dtype=dtype)


def apply_preview(target: napari.layers.Labels, preview: np.ndarray) -> int:
    """Copy the labelled voxels of ``preview`` into ``target`` as ONE undoable edit.

    Only voxels whose value changes are written, through ``Labels.data_setitem`` inside
    ``block_history``: napari then records the old values, so Ctrl+Z (``target.undo()``)
    restores the layer exactly. Voxels that are background in the preview are left alone, so
    applying several structures one after the other accumulates them. Returns the number of
    voxels changed.
    """
    data = target.data
    if tuple(data.shape) != tuple(preview.shape):
        raise ValueError(
            f"the target layer {target.name!r} {tuple(data.shape)} is not on the preview's grid "
            f"{tuple(preview.shape)}"
        )
    changed = (preview != 0) & (data != preview)
    indices = np.nonzero(changed)
    if indices[0].size == 0:
        return 0
    values = np.asarray(preview[indices], dtype=data.dtype)
    with target.block_history():
        target.data_setitem(indices, values)
    return int(indices[0].size)
