"""Clean-ups applied to a label volume after scoring: connectivity to the paint, slice range, holes.

A prototype model scores every voxel independently, so look-alike tissue far from the organ
(another organ with a similar texture, a bowel loop) can light up. The user's paint tells us
where the organ really is: `keep_connected` keeps only what is connected to it. `limit_range`
applies the "organ spans these slices" bound the user can set in the widget.

All functions take a label array of any integer type and leave the input untouched unless told
otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cc3d
import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

__all__ = [
    "IN_PLANE",
    "bounding_box",
    "fill_holes_2d",
    "keep_connected",
    "labelled_max",
    "limit_range",
    "limit_z",
    "second_choice",
    "smooth_scores",
    "split_at_saddles",
]

Fallback = Literal["largest", "keep", "remove"]

#: a ``scipy.ndimage.label`` structure for a volume with slices along axis 0: 2D
#: 8-connectivity within each slice, no links between slices, so one labelling call gives every
#: slice's 2D pieces their own ids
IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE[1] = True


def bounding_box(
    array: np.ndarray, margin: Sequence[int] | None = None
) -> tuple[slice, ...] | None:
    """Slices of the box around ``array``'s non-zero voxels, grown by ``margin`` voxels per axis
    (None: not grown) and clipped to the array; None when no voxel is non-zero.

    The 3D label steps work inside it: an organ fills a small part of a CT volume.
    """
    margin = (0,) * array.ndim if margin is None else tuple(margin)
    box = []
    for axis, pad in enumerate(margin):
        other = tuple(a for a in range(array.ndim) if a != axis)
        hit = np.flatnonzero(array.any(axis=other))
        if hit.size == 0:
            return None
        box.append(slice(max(int(hit[0]) - pad, 0), min(int(hit[-1]) + pad + 1, array.shape[axis])))
    return tuple(box)


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    if not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be between 1 and {ndim}, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, connectivity)


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}D array")
    return axis % ndim


def _check_labels(labels: np.ndarray) -> None:
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer or bool array, got {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError("labels must be non-negative")


def _object_boxes(labels: np.ndarray) -> list[tuple[int, tuple[slice, ...]]]:
    """(value, bounding box) of every non-zero value, in one pass over the array."""
    _check_labels(labels)
    arr = labels.view(np.uint8) if labels.dtype == bool else labels
    if arr.size == 0:
        return []
    boxes = ndimage.find_objects(arr)
    return [(i + 1, box) for i, box in enumerate(boxes) if box is not None]


def keep_connected(
    labels: np.ndarray,
    seeds: np.ndarray | None,
    *,
    fallback: Fallback = "largest",
    connectivity: int = 3,
) -> np.ndarray:
    """Keep, for each label value, the connected components that contain a seed of that value.

    `seeds` is typically the user's painted support (same shape as `labels`, 0 elsewhere).
    Values with no seed voxel inside any of their components (the support was painted on
    another volume, or the prediction missed the paint) follow `fallback`: "largest" keeps their
    largest component, "keep" keeps them unchanged, "remove" drops them. `seeds=None` applies
    the fallback to every value.

    Connectivity defaults to 3 (26-neighbourhood in 3D). Dropping real organ is worse than
    keeping a stray blob, and with thick slices an oblique, thin part of an organ (the tip of the
    spleen, the edge of the left liver lobe) often meets the next slice only along an edge or a
    corner; 6-connectivity (`connectivity=1`) would cut such parts off.

    Speed: one pass of connected-components-3d labels every value's components at once (two
    values that touch stay apart); everything after it works on the labelled voxels alone.

    Returns:
        A new array of the same dtype and shape.
    """
    if fallback not in ("largest", "keep", "remove"):
        raise ValueError(f"fallback must be 'largest', 'keep' or 'remove', got {fallback!r}")
    if seeds is not None and seeds.shape != labels.shape:
        raise ValueError(f"seeds shape {seeds.shape} does not match labels shape {labels.shape}")
    _check_labels(labels)
    _structure(labels.ndim, connectivity)  # validates connectivity against ndim
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be 2-D or 3-D, got {labels.ndim} dimensions")
    out = np.array(labels, copy=True, order="C")
    if not out.any():
        return out
    neighbours = {2: {1: 4, 2: 8}, 3: {1: 6, 2: 18, 3: 26}}[out.ndim][connectivity]
    # connected-components-3d labels each value's components in one pass (values that touch
    # stay apart), several times faster than scipy.ndimage.label on a CT-sized volume
    units = cc3d.connected_components(
        out.view(np.uint8) if out.dtype == bool else out, connectivity=neighbours
    )
    n_units = int(units.max())
    where = np.flatnonzero(units)  # flat indices of all labelled voxels
    unit_of = units.ravel()[where]
    values = out.ravel()[where]
    unit_value = np.zeros(n_units + 1, dtype=out.dtype)
    unit_value[unit_of] = values
    unit_size = np.bincount(unit_of, minlength=n_units + 1)
    keep = np.zeros(n_units + 1, dtype=bool)
    if seeds is not None:
        seed_values = np.ascontiguousarray(seeds).ravel()[where]
        keep[unit_of[seed_values == values]] = True
    for value in np.unique(values):
        ids = np.flatnonzero((unit_value == value) & (unit_size > 0))
        if keep[ids].any() or fallback == "remove":
            continue
        if fallback == "keep":
            keep[ids] = True
        else:
            keep[ids[np.argmax(unit_size[ids])]] = True
    out.ravel()[where[~keep[unit_of]]] = 0
    return out


def second_choice(
    labels: np.ndarray,
    seeds: np.ndarray,
    runner_up: np.ndarray,
    runner_up_score: np.ndarray,
    threshold: float | Sequence[float] = 0.0,
    values: Sequence[int] | None = None,
) -> np.ndarray:
    """Voxels of a value cut off from that value's seeds take their runner-up value instead,
    where its score clears its threshold (else 0); everything else is left as it is.

    Several classes scored at once give each voxel its best class. Where a look-alike class
    wins voxels of another organ, away from its own paint (on T2 MR the spleen's prototypes
    beat a kidney's own below a kidney painted at its pole), those voxels are not connected to
    the winner's seeds, and :func:`keep_connected` would drop them; their second-best class is
    often the organ they belong to. Whatever is reassigned still has to connect to its new
    value's seeds: the caller's :func:`keep_connected` decides that.

    Args:
        labels: integer volume (label values, 0 background).
        seeds: the paint, same shape and values (0 elsewhere).
        runner_up: each voxel's second-best label value, same shape; with ``values``, its
            index into ``values`` (a session's class index).
        runner_up_score: that class's score (log-odds), same shape.
        threshold: the score a voxel needs to be foreground: one number, or with ``values``
            one per class.
        values: the label value of each class index, when ``runner_up`` holds indices.

    Returns:
        A new array like ``labels``. Only the cut-off voxels are looked up, so a result with
        none costs one connected-components pass.
    """
    labels = np.asarray(labels)
    _check_labels(labels)
    for name, other in (
        ("seeds", seeds),
        ("runner_up", runner_up),
        ("runner_up_score", runner_up_score),
    ):
        if np.shape(other) != labels.shape:
            raise ValueError(f"{name} {np.shape(other)} must match labels {labels.shape}")
    if np.ndim(threshold) and (values is None or np.size(threshold) != len(values)):
        raise ValueError("one threshold per class needs values of the same length")
    out = np.array(labels, copy=True)
    cut_off = (out > 0) & (keep_connected(out, seeds, fallback="keep") == 0)
    if cut_off.any():
        which = np.asarray(runner_up)[cut_off]
        bar = np.asarray(threshold, dtype=np.float64)[which] if np.ndim(threshold) else threshold
        new = np.asarray(values, dtype=out.dtype)[which] if values is not None else which
        out[cut_off] = np.where(np.asarray(runner_up_score)[cut_off] > bar, new, 0)
    return out


def limit_range(
    labels: np.ndarray, lo: int, hi: int, axis: int = 0, *, inplace: bool = False
) -> np.ndarray:
    """Zero everything outside slices lo..hi (inclusive) along `axis`.

    Bounds beyond the array are clipped to it, so a range covering the volume is a no-op.
    """
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise ValueError(f"empty slice range: lo={lo} > hi={hi}")
    axis = _axis(axis, labels.ndim)
    out = labels if inplace else labels.copy()
    n = labels.shape[axis]
    before = [slice(None)] * labels.ndim
    after = [slice(None)] * labels.ndim
    before[axis] = slice(0, max(0, min(lo, n)))
    after[axis] = slice(max(0, hi + 1), n)
    out[tuple(before)] = 0
    out[tuple(after)] = 0
    return out


def limit_z(labels: np.ndarray, z_range: tuple[int, int] | None, axis: int = 0) -> np.ndarray:
    """`limit_range` with an inclusive (lo, hi) tuple; None returns an unchanged copy."""
    if z_range is None:
        return labels.copy()
    return limit_range(labels, z_range[0], z_range[1], axis)


def fill_holes_2d(labels: np.ndarray, axis: int = 0) -> np.ndarray:
    """Fill background holes enclosed by one label value, slice by slice along `axis`.

    Per slice rather than in 3D because organ cavities (renal sinus, vessels entering the liver)
    are open along the body axis and a 3D fill would never close them, while score maps leave
    in-plane pinholes that are clearly errors. Only background (0) voxels are filled, so one
    structure never overwrites another.

    A hole is a 4-connected in-plane region outside the value that does not reach the edge of
    the value's bounding box; one `ndimage.label` call per value finds them in every slice at
    once (the structure has no neighbours along `axis`).
    """
    axis = _axis(axis, labels.ndim)
    structure = np.zeros((3,) * labels.ndim, dtype=bool)
    plane = [slice(None)] * labels.ndim
    plane[axis] = 1
    structure[tuple(plane)] = _structure(labels.ndim - 1, 1)
    out = labels.copy()
    for value, box in _object_boxes(labels):
        outside, n = ndimage.label(labels[box] != value, structure=structure)
        if n == 0:
            continue
        open_ids = np.zeros(n + 1, dtype=bool)
        open_ids[0] = True
        for a in range(labels.ndim):
            if a == axis:
                continue
            for edge in (0, -1):
                index = [slice(None)] * labels.ndim
                index[a] = edge
                open_ids[outside[tuple(index)]] = True
        region = out[box]
        region[~open_ids[outside] & (region == 0)] = value
    return out


def labelled_max(values: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """(count,) the largest of ``values`` on each label 1..count of ``labels`` (-inf if none).

    ``scipy.ndimage.maximum`` with an index sorts every value of the array first: on the 3D
    parts' depth map and on each slice's pockets in the concavity fill that sort was a third
    of a relabel (a 512-pixel liver). One unbuffered ``np.maximum.at`` over the labelled
    pixels gives the same maxima.
    """
    out = np.full(int(count) + 1, -np.inf)
    on = labels > 0
    np.maximum.at(out, labels[on], np.asarray(values, dtype=float)[on])
    return out[1:]


def smooth_scores(scores: np.ndarray, sigma: Sequence[float], bound: float = 5.0) -> np.ndarray:
    """Gaussian smoothing of log-odds ``scores`` with per-axis ``sigma`` (in voxels), bounded.

    Log-odds far from every prototype run to the -100s, so each is first bounded to
    ``+-bound`` (P between 0.7 % and 99.3 % for 5): a confident background voxel then counts as
    confident, not as a hundred of them, and cannot erase the organ's edge when averaged.
    """
    bounded = np.clip(np.asarray(scores, dtype=np.float32), -bound, bound)
    return ndimage.gaussian_filter(bounded, tuple(float(s) for s in sigma), mode="nearest")


def split_at_saddles(
    mask: np.ndarray, spacing: Sequence[float], h_mm: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """``mask`` (2D or 3D) split where its blobs meet: ``(depth, parts, n)``.

    ``depth`` is each pixel's distance (mm, scipy's exact transform with ``spacing``) to the
    outside of ``mask``, the outside of the array included; ``parts`` numbers the ``n``
    watershed basins of ``-depth`` (scikit-image) grown from the maxima standing at least
    ``h_mm`` above the saddle to a deeper one (its h-maxima), 0 off ``mask``. A mask no deeper
    than ``h_mm`` is not split: ``n`` is 0 and ``parts`` all 0. Shared by the slice walk's 2D
    split at necks and the 3D split of a whole result.
    """
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=tuple(spacing))
    depth = depth[(slice(1, -1),) * mask.ndim]
    if depth.max() <= h_mm:
        return depth, np.zeros(mask.shape, dtype=np.int32), 0
    markers, n = ndimage.label(h_maxima(depth, h_mm))
    return depth, watershed(-depth, markers, mask=mask), int(n)
