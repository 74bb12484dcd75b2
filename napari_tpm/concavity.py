"""Outline conventions: fill a result's concavities where the user's paint fills its own.

Manual outlines follow a convention the image does not show. A kidney's sinus (fat, vessels
and the renal pelvis in its hilum) is dark on T2 MR and on CT; CHAOS outlines take it in with
the kidney, BTCV's leave it out. The scores follow the image, so on T2 MR each result comes out
C-shaped around the sinus while the truth is a filled oval (CHAOS 33's left kidney 0.85, most
of its error the sinus on every slice).

The paint says which convention the user follows. Its solidity (area over the area of its
convex hull) on the middle slice is 0.91-0.97 for CHAOS kidneys and 0.63-0.90 for BTCV's;
livers and spleens, whose concavities hold other organs, 0.69-0.93. Where every painted
section of a structure is at least :data:`MIN_SOLIDITY` solid and one of them is nearly as
wide as the result's widest section (:data:`MIN_WIDTH`), each 2D piece of its result on the
other slices is filled into the deep pockets of its convex hull (:data:`POCKET_DEPTH`), the
pixels nearest the piece first, until the piece is as solid as the paint (never beyond the
hull, never over another structure or a background stroke). A section near the organ's end
(a kidney's pole) is convex whatever the convention, so it says nothing: from such paint
BTCV kidneys were filled around the sinus their outlines leave out (BTCV 18's left kidney
painted at 15 % 0.94 -> 0.87). Chosen on the tuning volumes (benchmarks/RESULTS-accuracy.md,
"Concavities filled like the paint").

Written here rather than taken from a library: scipy gives the hull's half-planes and the
distances, and the fill up to a solidity is a sort of the hull's new pixels by distance; the
hull's pixels are scikit-image's ``convex_hull_image``'s, filled row by row
(:func:`convex_hull`: the same pixels in a third of the time on large sections).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from napari_tpm.postprocess import labelled_max
from napari_tpm.scribble import is_scribble

__all__ = [
    "MIN_PIECE",
    "MIN_SOLIDITY",
    "MIN_WIDTH",
    "POCKET_DEPTH",
    "asks_for_fill",
    "convex_hull",
    "fill_like_paint",
    "fill_target",
    "paint_solidity",
    "solidity",
]

#: the least solidity of every painted section for the result to be filled: at 0.90 BTCV's
#: kidneys, a liver and a spleen painted on a convex section lost up to 0.01 on the tuning
#: volumes; from 0.93 only kidneys outlined with their sinus are filled.
MIN_SOLIDITY = 0.93
#: the widest painted section must reach this fraction of the result's widest section (on the
#: tuning volumes 0.7 still filled BTCV kidneys painted near a pole; 0.85 none of them). A
#: result often bulges on one slice past the paint (CHAOS kidneys on their middle slice: 0.81
#: of it). On the tuning volumes (middle slice, 1-2 off, 15 / 85 %), 0.85 -> 0.75: CHAOS at
#: 15 / 85 % 0.851 -> 0.857, BTCV 0.852 -> 0.851; 0.8 gave BTCV the same losses and CHAOS
#: less, 0.65 lost on BTCV what CHAOS gained (benchmarks/RESULTS-accuracy.md, "The concavity
#: fill's width test"). The session takes this test once, at the auto prior.
MIN_WIDTH = 0.75
#: a pocket of the hull outside a piece is filled only when it reaches this fraction of the
#: piece's equivalent radius into the hull: a kidney's sinus does, the shallow dents that
#: neighbours press into a convex liver do not (the 512-pixel phantom's liver, painted on a
#: convex section, lost 0.011 with every pocket filled, none from 0.4; tuning CHAOS same scan
#: 0.888 -> 0.890 against every pocket)
POCKET_DEPTH = 0.4
#: pieces of fewer pixels are left as they are (a hull of a few pixels says nothing)
MIN_PIECE = 20


def solidity(mask: np.ndarray) -> float:
    """A 2D mask's area over its convex hull's area (0 for an empty mask)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"solidity needs a 2D mask, got shape {mask.shape}")
    if not mask.any():
        return 0.0
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return float(crop.sum() / convex_hull(crop).sum())


def paint_solidity(planes: Iterable[np.ndarray], value: int) -> float:
    """The least solidity of ``value``'s painted sections on ``planes`` (2D paint, one per
    painted slice); 0 when none is painted or one is a stroke (a stroke is no outline)."""
    sections = [m for m in (np.asarray(plane) == value for plane in planes) if m.any()]
    if not sections or any(is_scribble(m) for m in sections):
        return 0.0
    return min(solidity(m) for m in sections)


def asks_for_fill(planes: Iterable[np.ndarray], value: int) -> float | None:
    """The paint's solidity (:func:`paint_solidity`) when it is at least :data:`MIN_SOLIDITY`,
    else None: whether ``value``'s paint asks for the fill at all, whatever its result is. The
    session asks it before labelling anything (no paint asks: no prior fills)."""
    target = paint_solidity(planes, value)
    return target if target >= MIN_SOLIDITY else None


def fill_target(planes: Iterable[np.ndarray], value: int, mask: np.ndarray) -> float | None:
    """The solidity to fill ``value``'s result ``mask`` (3D, slice axis first) to, or None.

    ``planes``: the 2D paint of each painted slice (label values). None unless every painted
    section of ``value`` is at least :data:`MIN_SOLIDITY` solid and the widest is at least
    :data:`MIN_WIDTH` of the result's widest section.
    """
    planes = [np.asarray(plane) for plane in planes]
    target = asks_for_fill(planes, value)
    if target is None or not mask.any():
        return None
    widest = max(int((plane == value).sum()) for plane in planes)
    if widest < MIN_WIDTH * int(mask.sum(axis=(1, 2)).max()):
        return None
    return target


def fill_like_paint(
    mask: np.ndarray,
    target: float,
    skip: Iterable[int] = (),
    free: np.ndarray | None = None,
) -> np.ndarray:
    """``mask`` (3D, slice axis first) with each 2D piece's concavities filled up to ``target``.

    Args:
        mask: 3D boolean result of one structure.
        target: the solidity each piece is filled to (the paint's), in (0, 1].
        skip: slices left as they are (the painted ones).
        free: 3D boolean, where the fill may go (None: anywhere outside ``mask``).

    Returns:
        A boolean superset of ``mask`` (a new array).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (slices first), got shape {mask.shape}")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target solidity must be in (0, 1], got {target!r}")
    if free is not None and free.shape != mask.shape:
        raise ValueError(f"free {free.shape} and mask {mask.shape} must be one shape")
    out = mask.copy()
    skipped = {int(z) for z in skip}
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        if int(z) in skipped:
            continue
        allowed = ~mask[z] if free is None else free[z] & ~mask[z]
        _fill_slice(out[z], mask[z], allowed, target)
    return out


def _fill_slice(out: np.ndarray, plane: np.ndarray, allowed: np.ndarray, target: float) -> None:
    """Fill each piece of ``plane`` into its hull, nearest first, in place on ``out``."""
    pieces, count = ndimage.label(plane)
    for box, index in zip(ndimage.find_objects(pieces), range(1, count + 1), strict=True):
        piece = pieces[box] == index
        area = int(piece.sum())
        if area < MIN_PIECE:
            continue
        hull = convex_hull(piece)
        need = int(target * hull.sum()) - area
        if need <= 0:
            continue
        candidates = _deep_pockets(hull, piece, area) & allowed[box]
        if not candidates.any():
            continue
        distance = ndimage.distance_transform_edt(~piece)
        ys, xs = np.nonzero(candidates)
        order = np.argsort(distance[ys, xs], kind="stable")[:need]
        out[box][ys[order], xs[order]] = True


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """The pixels of a non-empty 2D mask's convex hull: scikit-image's ``convex_hull_image``
    (the hull of the pixels' edge midpoints, pixels on it included), filled row by row.

    scikit-image tests every pixel of the box against every vertex of the hull; a convex
    polygon's rows are intervals, so each row's ends come from the hull's edges' half-planes.
    The same pixels on every piece compared (1192 sections of phantom and development results),
    a third of the time on a 512-pixel liver, where the hulls were most of the fill's cost.
    """
    rows, cols = mask.shape
    filled_rows = np.flatnonzero(mask.any(axis=1))
    filled_cols = np.flatnonzero(mask.any(axis=0))
    # only each row's and each column's first and last pixel can be on the hull
    ends = [
        np.stack([filled_rows, mask[filled_rows].argmax(axis=1)], axis=1),
        np.stack([filled_rows, cols - 1 - mask[filled_rows, ::-1].argmax(axis=1)], axis=1),
        np.stack([mask[:, filled_cols].argmax(axis=0), filled_cols], axis=1),
        np.stack([rows - 1 - mask[::-1, filled_cols].argmax(axis=0), filled_cols], axis=1),
    ]
    points = np.concatenate(ends).astype(float)
    midpoints = np.array([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]])
    points = np.unique((points[:, None, :] + midpoints).reshape(-1, 2), axis=0)
    facets = ConvexHull(points).equations  # a * row + b * col + c <= 0 inside
    a, b, c = facets[:, 0], facets[:, 1], facets[:, 2]
    room = -c - a * np.arange(rows, dtype=float)[:, None]  # b * col <= room, per row and facet
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = room / b
    tol = 1e-9
    upper = np.where(b > tol, limit, np.inf).min(axis=1)
    lower = np.where(b < -tol, limit, -np.inf).max(axis=1)
    inside = (np.where(np.abs(b) <= tol, room, np.inf) >= -tol).all(axis=1)
    col = np.arange(cols)[None, :]
    return (
        (col >= np.ceil(lower - 1e-7)[:, None])
        & (col <= np.floor(upper + 1e-7)[:, None])
        & (inside[:, None])
    )


def _deep_pockets(hull: np.ndarray, piece: np.ndarray, area: int) -> np.ndarray:
    """The parts of ``hull`` outside ``piece`` that reach at least :data:`POCKET_DEPTH` of the
    piece's equivalent radius into the hull (a kidney's sinus, not a neighbour's dent)."""
    pockets, count = ndimage.label(hull & ~piece)
    if count == 0:
        return pockets > 0
    depth = ndimage.distance_transform_edt(np.pad(hull, 1))[1:-1, 1:-1]
    deepest = labelled_max(depth, pockets, count)
    keep = np.flatnonzero(deepest >= POCKET_DEPTH * np.sqrt(area / np.pi)) + 1
    return np.isin(pockets, keep)
