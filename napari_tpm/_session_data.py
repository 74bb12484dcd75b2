"""The session's data: the volume and support records, device and memory, small helpers.

Kept apart from ``session.py`` so that module reads as the pipeline (encode, prototypes,
scores, refinement, labels) and these plain records and array helpers (input checks, slice
encoding, batch order) can be tested alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

# the session's device rule (a device must exist here), re-exported for session.py
from napari_tpm import axial_frame
from napari_tpm.devices import resolve_device as resolve_device
from napari_tpm.preprocess import WorkingGrid, check_intensity_range
from napari_tpm.support import SupportSlices, plane_spacing
from napari_tpm.tpm import icp_from_scores, support_pixel_features

#: in-plane size of the square grid the encoder sees (the paper's 256 x 256).
WORKING_SIZE = 256


class VolumeTooLargeError(ValueError):
    """The volume would need more memory than this machine has available."""


def available_memory_bytes() -> int:
    """Memory the process may still use: MemAvailable from /proc/meminfo, else free pages."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


@dataclass(frozen=True)
class _Job:
    """One checked request of ``segment()``: the paint, where it lies, and its fit settings.

    The cross-volume paths run the same pipeline on variants of it (a shifted support image,
    one class of the paint), made with :func:`dataclasses.replace`.
    """

    paint: np.ndarray
    parsed: SupportSlices
    support_image: np.ndarray | None  # None: the paint is on the query itself
    support_spacing: tuple[float, float, float]  # the query's own when the paint is on it
    k: int  # prototypes per class
    background_label: int | None
    #: the painted slice is taken as each class's widest (footprint.Footprint.widest); False
    #: for one class of a slice painted with several
    paint_widest: bool = True
    #: slice profiles of another CT the paint is on, slice axis first
    #: (:func:`napari_tpm.slice_match.slice_profiles`); None: heights stay fractions of each
    #: scan (MR, paint on this volume, or ``options.match_slices`` off)
    support_profiles: np.ndarray | None = None
    #: memo of :func:`napari_tpm.slice_match.map_slice` per (class, painted height): the
    #: contrast search's variants of this job (``replace``) share the one dict, so the painted
    #: slice is matched once, not once per candidate step
    matched_heights: dict[tuple[int, float], float | None] = field(
        default_factory=dict, compare=False, repr=False
    )


@dataclass
class _Volume:
    """A volume seen along one slice axis: normalised slices and the working grid."""

    slices: np.ndarray  # (n, H, W) float32, slice axis moved to the front
    grid: WorkingGrid
    pad_value: float
    features: torch.Tensor | None = None  # (n, C, h, w) float16, CPU
    encoded: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # the fully encoded features reweighted for one position scale (scale, features), float16
    weighted: tuple[float, torch.Tensor] | None = None
    axis: int = 0  # the slice axis of the volume this view was cut from
    # the axis-0 slices' body boxes, an edge that jumped along that axis put back
    # (napari_tpm.axial_frame.mend_boxes), whose frame the view's position channels take (its
    # rows for an axis-0 view); None keeps the encoder's own
    frame: np.ndarray | None = None


@dataclass
class _Support:
    """What the prototypes are fitted from: per-class support pixel features and geometry."""

    axis: int
    indices: tuple[int, ...]  # painted slices along the axis (ascending)
    index: int  # the painted slice nearest the middle of the painted ones
    n_slices: int  # slices along the axis in the support volume (for LinEst's location)
    label_values: tuple[int, ...]
    pixel_features: list[torch.Tensor]  # per class (N_k, C), unit-normalised
    negative_features: torch.Tensor | None  # (N, C) features under background strokes
    fraction: float  # painted fraction of the working grid on the middle slice (LinEst's size)
    same_volume: bool
    masks_native: dict[int, np.ndarray]  # painted slice index -> (H, W) paint (native grid)
    counts_working: list[int]  # painted pixels per class on the working grid, all slices
    features: torch.Tensor  # (S, C, h, w) float32 features of the painted slices
    masks_working: torch.Tensor  # (S, size, size) int64 class index + 1 (0 none, -1 background)
    radius_mm: list[float] = field(default_factory=list)  # per class: inscribed radius of paint
    intensity: list[tuple[float, float] | None] = field(default_factory=list)  # per class, raw
    # painted slice -> the one structure painted on it as a filled region (not a stroke)
    outlined: dict[int, int] = field(default_factory=dict)
    # (N, C) the painted slices' own look-alikes (hard negatives), mined after the first fit
    mined_features: torch.Tensor | None = None
    # structure -> the slice its features came from, for one painted only on a pole's small
    # section (_session_support.pole_features)
    pole_slices: dict[int, int] = field(default_factory=dict)


def _make_view(
    normalised: np.ndarray,
    spacing: tuple[float, float, float],
    axis: int,
    only: tuple[int, ...] | None = None,
    mm: float | None = None,
) -> _Volume:
    """The volume along ``axis`` on its working grid; ``only`` keeps just those slices.

    ``mm`` (an encoder's ``working_mm``) fixes the working pixel at that many millimetres, so
    the encoder's scales mean the same distance on every scan; the square then grows or
    shrinks with the field of view (a multiple of 8, 64 to 512). Without it every slice fills
    the paper's 256 x 256 square, whatever its size in millimetres.
    """
    slices = np.moveaxis(normalised, axis, 0)
    if only is not None:
        slices = slices[list(only)]
    inplane = plane_spacing(spacing, axis)
    size = WORKING_SIZE
    if mm:
        fov = max(slices.shape[1] * inplane[0], slices.shape[2] * inplane[1])
        # (a hair under: a field of view of exactly 256 pixels stays 256, not 264)
        size = int(min(512, max(64, 8 * math.ceil(fov / mm / 8 - 1e-6))))
    grid = WorkingGrid.fit(slices.shape[1:], inplane, size=size)
    return _Volume(
        slices=slices,
        grid=grid,
        pad_value=float(normalised.min()),
        encoded=np.zeros(slices.shape[0], bool),
        axis=axis,
    )


def _class_mask(
    grid: WorkingGrid, plane: np.ndarray, values: tuple[int, ...], background: int | None
) -> torch.Tensor:
    """Painted plane -> working grid map: class index + 1, -1 for background strokes, else 0.

    Each value is resampled on its own so a stroke thinner than one working pixel keeps the
    pixels it touches instead of vanishing between nearest-neighbour samples; when all of
    those are another class's, it still keeps the working pixel it covers most, so every
    value painted on the plane is on the map (a few-voxel piece beside a large organ).
    """
    nearest = grid.to_working_mask(torch.from_numpy(plane.astype(np.int64)))
    out = torch.zeros(nearest.shape, dtype=torch.int64)
    codes = [(v, c + 1) for c, v in enumerate(values)]
    if background is not None:
        codes.append((background, -1))
    for value, code in codes:
        m = nearest == value
        if (m & (out == 0)).any() or not (plane == value).any():
            out[m & (out == 0)] = code
            continue
        native = torch.from_numpy((plane == value).astype(np.float32))[None, None]
        cover = grid.to_working(native, pad_value=0.0)[0, 0]
        free = (cover > 0) & (out == 0)
        out[free if free.any() else cover == cover.max()] = code
    return out


def _logit_icp(scores: torch.Tensor, count: int) -> float:
    """logit of the prior at which exactly ``count`` of ``scores`` are foreground (clipped)."""
    icp = float(np.clip(icp_from_scores(scores.reshape(-1), count), 1e-4, 1 - 1e-4))
    return math.log(icp / (1 - icp))


def _content_mask(grid: WorkingGrid, hw: tuple[int, int]) -> torch.Tensor:
    """(h, w) bool: feature-map pixels whose centre lies on the slice content, not the padding."""
    h, w = (int(v) for v in hw)
    ys = (torch.arange(h) + 0.5) * grid.size / h
    xs = (torch.arange(w) + 0.5) * grid.size / w
    top, left = grid.offset
    ch, cw = grid.content_hw
    rows = (ys >= top) & (ys < top + ch)
    cols = (xs >= left) & (xs < left + cw)
    return rows[:, None] & cols[None, :]


def _pixels(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit features (N, C) of the pixels under ``mask`` (S, size, size), slices (S, C, h, w)."""
    return torch.cat(
        [support_pixel_features(f, m.to(torch.float32)) for f, m in zip(features, mask) if m.any()]
    )


def _apply_paint(
    view: np.ndarray, support: _Support, background: int | None, part: slice | None = None
) -> None:
    """Write the user's paint over ``view`` (slice axis first): painted structures keep their
    label, background strokes become 0. What the user painted is never contradicted.

    ``part`` limits the writing to those slices of ``view``."""
    lo, hi, _ = (part or slice(None)).indices(view.shape[0])
    for i, plane in support.masks_native.items():
        if not lo <= i < hi:
            continue
        painted = (plane != 0) & (plane != background)
        view[i][painted] = plane[painted]
        if background is not None:
            view[i][plane == background] = 0


def _outward_batches(n: int, start: int, size: int) -> Iterator[tuple[int, int]]:
    """Contiguous batches of ``range(n)`` visiting ``start`` first, then alternately up and down.

    Streaming outward from the painted slice shows the user the region they care about first.
    """
    start = min(max(int(start), 0), max(n - 1, 0))
    up, down = start, start
    first = True
    while up < n or down > 0:
        if first or (up < n and (up - start) <= (start - down)) or down <= 0:
            hi = min(up + size, n)
            if hi > up:
                yield up, hi
            up = hi
            first = False
        else:
            lo = max(down - size, 0)
            yield lo, down
            down = lo


def _check_prototypes(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"the number of prototypes must be a whole number >= 1, got {k!r}")
    return int(k)


def _check_prior(prior: float) -> float:
    p = float(prior)
    if not (0.0 < p < 1.0) or math.isnan(p):
        raise ValueError(f"the class prior must lie strictly between 0 and 1, got {prior!r}")
    return p


def _check_image(array: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, float]:
    """Refuse what cannot be a query volume (ValueError); returns the spacing as floats.

    Only the header-like checks: shape, dtype and spacing. The voxel values are checked by
    :func:`_check_voxels` after the memory check, so a huge volume is refused before a pass
    over it.
    """
    if array.ndim != 3:
        raise ValueError(f"the image must be a 3D volume, got shape {array.shape}")
    if min(array.shape) < 1:
        raise ValueError(f"the image is empty (shape {array.shape})")
    dt = array.dtype
    if not np.issubdtype(dt, np.number) or np.issubdtype(dt, np.complexfloating):
        raise ValueError(f"the image must hold real numbers, got dtype {array.dtype}")
    mm = tuple(float(s) for s in spacing)
    if len(mm) != 3 or not all(s > 0 and math.isfinite(s) for s in mm):
        raise ValueError(f"spacing must be three positive numbers, got {mm}")
    return mm[0], mm[1], mm[2]


def _check_voxels(array: np.ndarray, *, check_range: bool = True) -> None:
    """Refuse NaN/inf voxels and (``check_range``) a constant or overflowing image."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError("the image contains NaN or infinite voxels")
    if check_range:
        check_intensity_range(array)


def _encode_slices(
    view: _Volume, indices: np.ndarray, encoder: torch.nn.Module, device: torch.device
) -> int:
    """Encode the slices of ``view`` listed in ``indices`` that are not cached yet.

    Features are kept float16 on the CPU (the GPU only holds one batch). Returns how many
    slices went through the encoder.
    """
    todo = np.asarray([i for i in indices if not view.encoded[i]], dtype=int)
    if todo.size == 0:
        return 0
    x = torch.from_numpy(np.ascontiguousarray(view.slices[todo]))[:, None]
    x = view.grid.to_working(x, pad_value=view.pad_value).to(device)
    with torch.inference_mode():
        feats = encoder(x)
    feats = feats.to("cpu", torch.float32)
    if view.frame is not None:
        if view.axis == 0:
            raw = axial_frame.slice_positions(
                view.frame[todo], view.grid, feats.shape[-2:], encoder.stride
            )
        else:
            raw = axial_frame.position_map(
                view.frame, view.axis, view.grid, feats.shape[-2:], encoder.stride
            )
        feats = axial_frame.replace_position(feats, raw, encoder)
    feats = feats.to(torch.float16)
    if view.features is None:
        n, (c, h, w) = view.slices.shape[0], feats.shape[1:]
        view.features = torch.zeros((n, c, h, w), dtype=torch.float16)
    view.features[torch.from_numpy(todo)] = feats
    view.encoded[todo] = True
    return int(todo.size)


def _start_slice(support: _Support, n: int) -> int:
    """Where scoring a query of ``n`` slices starts: the painted slice, or (another volume's
    support) the slice at the painted one's relative position, where the organ should be."""
    if support.same_volume:
        return support.index
    return round(support.index / max(support.n_slices - 1, 1) * (n - 1))


def _smooth_sigma(
    mm: float, spacing: Sequence[float], axis: int, grid: WorkingGrid, h: int
) -> tuple[float, float, float, float]:
    """Gaussian sigma (slices, classes, rows, cols) of ``mm`` on (n, K, h, w) feature scores.

    Set in millimetres and converted per axis (feature pixels in-plane, slices across), so a
    smoothing means the same on any scan.
    """
    inplane = plane_spacing(spacing, axis)
    # mm per feature pixel: the working grid's mm per pixel times the working/feature ratio
    mm_per_px = max(grid.shape_hw[0] * inplane[0], grid.shape_hw[1] * inplane[1]) / h
    return (mm / spacing[axis], 0.0, mm / mm_per_px, mm / mm_per_px)
