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

Union-find over ~10^8 edges is sequential, so the kernels are compiled with numba. Without numba
the very same functions run as plain Python (correct, but only usable on tiny volumes).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

# nogil: the kernels touch only their own arrays, so they release the GIL; napari's GUI thread
# then stays responsive while "Adapt to this volume" computes supervoxels in its worker.
try:  # numba turns the union-find loops from minutes into seconds
    from numba import njit as _njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

    def _njit(*args: Any, **kwargs: Any) -> Callable:
        if args and callable(args[0]):
            return args[0]
        return lambda f: f


#: Bumped whenever the algorithm changes, so stale cache files are not reused.
ALGORITHM_VERSION = 1

#: The 13 "forward" neighbour steps (dz, dy, dx) of the 26-neighbourhood.
DIRECTIONS = np.array(
    [
        (dz, dy, dx)
        for dz in (0, 1)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dz, dy, dx) > (0, 0, 0)
    ],
    dtype=np.int64,
)


def edge_weights(spacing: tuple[float, float, float]) -> np.ndarray:
    """``sqrt(w)`` for each of the 13 directions, from the (z, y, x) spacing.

    Only the ratio of slice spacing to in-plane (x) spacing matters, as in the reference.
    """
    s = float(spacing[0]) / float(spacing[2])
    out = np.empty(len(DIRECTIONS), dtype=np.float32)
    for i, (dz, dy, dx) in enumerate(DIRECTIONS):
        n_plane = int(dy != 0) + int(dx != 0)
        w = 1.0 if dz == 0 else (n_plane + s * s) / (n_plane + 1)
        out[i] = np.sqrt(w)
    return out


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


# --------------------------------------------------------------------------- compiled kernels


@_njit(cache=True, nogil=True)
def _count_edges(mask: np.ndarray, dirs: np.ndarray) -> int:
    nz, ny, nx = mask.shape
    n = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if not mask[z, y, x]:
                    continue
                for d in range(dirs.shape[0]):
                    zz, yy, xx = z + dirs[d, 0], y + dirs[d, 1], x + dirs[d, 2]
                    if 0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx and mask[zz, yy, xx]:
                        n += 1
    return n


@_njit(cache=True, nogil=True)
def _build_edges(
    img: np.ndarray,
    mask: np.ndarray,
    dirs: np.ndarray,
    sqrtw: np.ndarray,
    costs: np.ndarray,
    ids: np.ndarray,
) -> None:
    """Fill edge costs and ids ``voxel * 13 + direction``, in increasing id order."""
    nz, ny, nx = mask.shape
    nd = dirs.shape[0]
    i = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if not mask[z, y, x]:
                    continue
                v = (z * ny + y) * nx + x
                a = img[z, y, x]
                for d in range(nd):
                    zz, yy, xx = z + dirs[d, 0], y + dirs[d, 1], x + dirs[d, 2]
                    if 0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx and mask[zz, yy, xx]:
                        costs[i] = sqrtw[d] * abs(a - img[zz, yy, xx])
                        ids[i] = v * nd + d
                        i += 1


@_njit(cache=True, nogil=True)
def _radix_argsort(costs: np.ndarray, order: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """Stable LSD radix argsort of non-negative float32 (their bit patterns sort as uint32).

    Stable, so ties keep edge-id order: the result is identical on every machine, unlike an
    unstable SIMD quicksort, and it runs in linear time. Keys travel with the indices so every
    pass reads memory sequentially; ``order`` and ``tmp`` are caller-allocated index buffers
    (int32 where they fit, which halves the memory traffic).
    """
    n = costs.shape[0]
    keys = costs.view(np.uint32).copy()
    keys_tmp = np.empty(n, dtype=np.uint32)
    for i in range(n):
        order[i] = i
    bits = 8
    radix = 1 << bits
    mask = radix - 1
    for shift in range(0, 32, bits):
        count = np.zeros(radix + 1, dtype=np.int64)
        for i in range(n):
            count[((keys[i] >> shift) & mask) + 1] += 1
        if count[1] == n:
            continue  # every key has a zero digit here: the pass would not move anything
        for b in range(radix):
            count[b + 1] += count[b]
        for i in range(n):
            b = (keys[i] >> shift) & mask
            j = count[b]
            tmp[j] = order[i]
            keys_tmp[j] = keys[i]
            count[b] = j + 1
        order, tmp = tmp, order
        keys, keys_tmp = keys_tmp, keys
    return order


@_njit(cache=True, nogil=True)
def _find(parent: np.ndarray, a: int) -> int:
    """Root of ``a``; roots hold ``-size`` so one array serves both (fewer cache misses)."""
    while parent[a] >= 0:
        b = parent[a]
        if parent[b] >= 0:
            parent[a] = parent[b]  # path halving
        a = b
    return a


@_njit(cache=True, nogil=True)
def _merge(
    costs: np.ndarray,
    ids: np.ndarray,
    order: np.ndarray,
    mask: np.ndarray,
    dirs: np.ndarray,
    k: float,
    min_size: int,
) -> np.ndarray:
    """FH merging then the min-size pass; returns flat int32 labels, 0 outside ``mask``."""
    nz, ny, nx = mask.shape
    n_vox = nz * ny * nx
    nd = dirs.shape[0]
    offs = np.empty(nd, dtype=np.int64)
    for d in range(nd):
        offs[d] = (dirs[d, 0] * ny + dirs[d, 1]) * nx + dirs[d, 2]
    parent = np.full(n_vox, -1, dtype=np.int32)  # every voxel a root of size 1
    internal = np.zeros(n_vox, dtype=np.float32)
    flat_mask = mask.ravel()
    n_in = 0
    for v in range(n_vox):
        n_in += flat_mask[v]
    # A component's threshold Int(C) + k/|C| never exceeds k * H(|C|) < k * (1 + ln N), so no
    # edge above that can merge in the first pass and the sorted scan may stop there.
    bound = k * (1.0 + np.log(max(n_in, 1)))
    for i in range(order.shape[0]):
        e = order[i]
        c = costs[e]
        if c >= bound:
            break
        v = ids[e] // nd
        u = v + offs[ids[e] % nd]
        a = _find(parent, v)
        b = _find(parent, u)
        if a == b:
            continue
        sa, sb = -parent[a], -parent[b]
        if c < min(internal[a] + k / sa, internal[b] + k / sb):
            if sa < sb:
                a, b = b, a
            parent[a] = -(sa + sb)
            parent[b] = a
            internal[a] = c
    # Second pass: components below min_size join their cheapest neighbour. Sizes only grow,
    # so a voxel once seen in a big component is flagged and later edges between two flagged
    # voxels are skipped without a find; and once nothing is small the scan stops.
    big = np.zeros(n_vox, dtype=np.bool_)
    n_small = 0
    for v in range(n_vox):
        if flat_mask[v] and parent[v] < 0 and -parent[v] < min_size:
            n_small += 1
    for i in range(order.shape[0]):
        if n_small == 0:
            break
        e = order[i]
        v = ids[e] // nd
        u = v + offs[ids[e] % nd]
        if big[v] and big[u]:
            continue
        a = _find(parent, v)
        b = _find(parent, u)
        sa, sb = -parent[a], -parent[b]
        if a == b:
            if sa >= min_size:
                big[v] = True
                big[u] = True
            continue
        if sa >= min_size and sb >= min_size:
            big[v] = True
            big[u] = True
            continue
        n_small -= int(sa < min_size) + int(sb < min_size)
        if sa < sb:
            a, b = b, a
        parent[a] = -(sa + sb)
        parent[b] = a
        n_small += int(sa + sb < min_size)
    # Number segments 1..n in raster order of their first voxel (deterministic ids).
    new_id = np.zeros(n_vox, dtype=np.int32)
    labels = np.zeros(n_vox, dtype=np.int32)
    n_seg = 0
    for v in range(n_vox):
        if flat_mask[v]:
            r = _find(parent, v)
            if new_id[r] == 0:
                n_seg += 1
                new_id[r] = n_seg
            labels[v] = new_id[r]
    return labels


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
