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
        "metadata": copy.deepcopy(dict(layer.metadata)),
    }


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
