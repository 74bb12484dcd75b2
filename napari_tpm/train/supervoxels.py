"""3D Felzenszwalb-Huttenlocher supervoxels: the pseudo-labels of self-supervised training.

Training never sees a manual label. Each episode instead asks the network to segment one
*supervoxel* (a compact region of similar intensity) on a neighbouring slice, so the quality and
size of these regions shape what the encoder learns (tpm-method.md section 3).

The graph is the 26-neighbourhood of the volume (13 edge directions). An edge costs
``sqrt(w) * |I_u - I_v|`` on the 0-255 scaled image, where ``w`` stretches through-plane steps by
the slice-thickness ratio ``s = spacing_z / spacing_x``: 1 in-plane, ``s**2`` along z,
``(1 + s**2) / 2`` for a z step plus one in-plane step and ``(2 + s**2) / 3`` for the 3D diagonals.
Standard FH merging with ``k = scale / 255`` is followed by a pass that merges every component
smaller than ``min_size`` into its cheapest neighbour. Because k is tiny, the second pass makes most
of the segmentation; ``min_size`` is a size floor in voxels, not a number of supervoxels.

One deliberate difference from the reference: the graph only joins voxels inside the body mask.
The reference segments the whole box and blanks the outside afterwards, which leaves slivers
below ``min_size`` along the body outline; restricting the graph keeps every supervoxel at least
``min_size`` voxels (unless a whole body component is smaller) and skips the air, which is faster.

Union-find over ~10^8 edges is sequential, so the kernels (`napari_tpm.train._fh_kernels`) are
compiled with numba. Without numba the very same functions run as plain Python (correct, but
only usable on tiny volumes). This module drives them and caches their result.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_tpm.train._fh_kernels import (
    DIRECTIONS,
    HAVE_NUMBA,
    _build_edges,
    _count_edges,
    _merge,
    _radix_argsort,
    edge_weights,
)

__all__ = [
    "ALGORITHM_VERSION",
    "DIRECTIONS",
    "HAVE_NUMBA",
    "array_hash",
    "body_mask",
    "cached_supervoxels",
    "compute_supervoxels",
    "edge_weights",
    "felzenszwalb_3d",
    "scale_to_255",
    "supervoxel_cache_key",
]

#: Bumped whenever the algorithm changes, so stale cache files are not reused.
ALGORITHM_VERSION = 1


def body_mask(image255: np.ndarray, threshold: float = 10.0) -> np.ndarray:
    """Per-slice body: ``image > threshold``, largest 2D connected component, holes filled.

    The body mask decides which voxels may become pseudo-classes; air and table are never
    sampled as training targets.
    """
    mask = np.zeros(image255.shape, dtype=bool)
    for z, plane in enumerate(image255):
        lab, n = ndi.label(plane > threshold)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask[z] = ndi.binary_fill_holes(lab == int(np.argmax(sizes)))
    return mask


def scale_to_255(image: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 255] float32 (a constant image becomes all zeros)."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros_like(img)
    return (img - lo) * np.float32(255.0 / (hi - lo))


# --------------------------------------------------------------------------- public functions


def felzenszwalb_3d(
    image255: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    scale: float = 1.0,
    min_size: int = 5000,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """3D FH segmentation of a 0-255 scaled (z, y, x) volume restricted to ``mask``.

    Returns int32 labels, 0 outside ``mask`` and 1..n inside, numbered in raster order of each
    segment's first voxel (so the output is deterministic).
    """
    img = np.ascontiguousarray(image255, dtype=np.float32)
    if img.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) volume, got shape {img.shape}")
    if mask is None:
        mask = np.ones(img.shape, dtype=bool)
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    if not HAVE_NUMBA and img.size > 200_000:
        warnings.warn(
            "numba is not installed: supervoxels run as pure Python and will be very slow",
            RuntimeWarning,
            stacklevel=2,
        )
    sqrtw = edge_weights(spacing)
    n_edges = _count_edges(mask, DIRECTIONS)
    small = img.size * len(DIRECTIONS) < np.iinfo(np.int32).max
    index = np.int32 if small else np.int64
    costs = np.empty(n_edges, dtype=np.float32)
    ids = np.empty(n_edges, dtype=index)
    _build_edges(img, mask, DIRECTIONS, sqrtw, costs, ids)
    order = _radix_argsort(costs, np.empty(n_edges, index), np.empty(n_edges, index))
    labels = _merge(costs, ids, order, mask, DIRECTIONS, float(scale) / 255.0, int(min_size))
    return labels.reshape(img.shape)


def compute_supervoxels(
    image: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    min_size: int = 5000,
    scale: float = 1.0,
    body_threshold: float = 10.0,
) -> np.ndarray:
    """Supervoxel pseudo-labels of an intensity-normalised (z, y, x) volume.

    The volume is min-max scaled to [0, 255] (sigma = 0: no smoothing), the body is found per
    slice, and FH runs on the body graph. Returns int32 ids, 0 = outside the body.
    """
    img = scale_to_255(image)
    body = body_mask(img, body_threshold)
    return felzenszwalb_3d(img, spacing, scale=scale, min_size=min_size, mask=body)


def supervoxel_cache_key(
    content_hash: str, params: dict[str, Any], spacing: tuple[float, float, float]
) -> str:
    """Digest of everything a supervoxel map depends on: data, parameters and algorithm."""
    blob = json.dumps(
        {
            "data": content_hash,
            "params": params,
            "spacing": [round(float(s), 6) for s in spacing],
            "version": ALGORITHM_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def array_hash(array: np.ndarray) -> str:
    """Content hash of an array (dtype, shape and bytes)."""
    h = hashlib.sha256()
    h.update(str(array.dtype).encode())
    h.update(str(array.shape).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def cached_supervoxels(
    image: np.ndarray,
    spacing: tuple[float, float, float],
    cache_dir: str | os.PathLike,
    *,
    name: str = "volume",
    content_hash: str | None = None,
    min_size: int = 5000,
    scale: float = 1.0,
    body_threshold: float = 10.0,
) -> np.ndarray:
    """`compute_supervoxels`, reused from ``cache_dir`` when the same data and parameters match.

    ``content_hash`` identifies the source (e.g. the file's hash); by default the array itself is
    hashed. The file is written atomically, so parallel workers never read a half-written one.
    """
    params = {"min_size": int(min_size), "scale": float(scale), "body": float(body_threshold)}
    key = supervoxel_cache_key(content_hash or array_hash(image), params, spacing)
    path = Path(cache_dir) / f"{name}.sv{min_size}.{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                labels = f["supervoxels"]
            if labels.shape == image.shape:
                return labels.astype(np.int32, copy=False)
        except Exception:  # truncated or damaged (BadZipFile, EOFError, zlib.error...)
            pass  # is simply recomputed, and replaced below
    labels = compute_supervoxels(
        image, spacing, min_size=min_size, scale=scale, body_threshold=body_threshold
    )
    from napari_tpm.atomic import atomic_output

    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if labels.max() < 65536 else np.int32
    # atomic: parallel workers never read a half-written file, and a killed writer's
    # temporary is removed by the next write of the same cache entry
    with atomic_output(path) as tmp:
        np.savez_compressed(tmp / path.name, supervoxels=labels.astype(dtype))
    return labels
