"""The compiled kernels of 3D Felzenszwalb-Huttenlocher: graph, sort and union-find merging.

The graph is the 26-neighbourhood of the volume (13 forward edge directions, `DIRECTIONS`),
restricted to a mask; `edge_weights` stretches through-plane edges by the slice-thickness ratio
(see `napari_tpm.train.supervoxels` for the rule and the algorithm). Union-find over ~10^8 edges
is sequential, so these loops are compiled with numba; without numba the very same functions run
as plain Python (correct, but only usable on tiny volumes).

Kept apart from `napari_tpm.train.supervoxels` (the driver: intensity scaling, body mask, cache)
so that these loops, written in numba's subset of Python, read apart from the numpy code that
calls them; that module re-exports `HAVE_NUMBA`, `DIRECTIONS` and `edge_weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

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
