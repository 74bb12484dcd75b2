"""napari writers: save Labels/Image layers on the original scan's world grid.

A segmentation is only useful outside napari if it lands exactly on the scan in other tools
(3D Slicer, ITK-SNAP, nibabel). The geometry therefore comes from
``layer.metadata["tpm_geometry"]`` (written by our reader and copied by the widget onto its
result layers); a layer without it falls back to its ``scale`` (spacing) and ``translate``
(origin) with an identity direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_tpm._reader import GEOMETRY_KEY

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def geometry_from_meta(shape: Sequence[int], meta: dict[str, Any]) -> dict[str, tuple]:
    """Spacing (z, y, x), origin (x, y, z) and direction for an array of ``shape``.

    The stored geometry is used only when it was made for this shape; otherwise the layer's
    scale and translate describe the grid (a resampled or hand-made layer).
    """
    geometry = (meta.get("metadata") or {}).get(GEOMETRY_KEY)
    if geometry and tuple(geometry.get("shape", ())) == tuple(shape):
        return {
            "spacing": tuple(float(s) for s in geometry["spacing"]),
            "origin": tuple(float(o) for o in geometry["origin"]),
            "direction": tuple(float(d) for d in geometry["direction"]),
        }
    ndim = len(shape)
    scale = tuple(float(s) for s in (meta.get("scale") or (1.0,) * ndim))[-3:]
    translate = tuple(float(t) for t in (meta.get("translate") or (0.0,) * ndim))[-3:]
    return {"spacing": scale, "origin": tuple(reversed(translate)), "direction": _IDENTITY}


def _write(path: str, data: Any, meta: dict[str, Any], *, is_label: bool) -> list[str]:
    from napari_tpm.io import write_volume

    array = np.asarray(data)
    if array.ndim != 3:
        raise ValueError(
            f"{path}: only 3D volumes can be saved in this format, the layer has shape "
            f"{array.shape}"
        )
    written = write_volume(path, array, is_label=is_label, **geometry_from_meta(array.shape, meta))
    return [str(written)]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer (smallest integer type) with the scan's geometry."""
    return _write(path, data, meta, is_label=True)


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer (its own dtype) with the scan's geometry."""
    return _write(path, data, meta, is_label=False)
