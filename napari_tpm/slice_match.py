"""Which slice of this CT matches a slice of another: a 1D registration along the slice axis.

Paint from another patient says where the organ was in that scan; the fit of a result to the
paint (:mod:`napari_tpm.contrast`) compares their heights. As a fraction of each scan's length
that height is only as good as the two fields of view agree, and they seldom do: one BTCV scan
starts at the lungs, the next at the liver's dome, a third runs down to the pelvis. On the BTCV
tuning volumes' 42 ordered pairs the painted kidney's middle slice, placed at the same fraction
of the query, landed inside the query's kidney in 20-23 of them (median 49-59 mm off).

A CT carries its own ruler instead: every slice has a body cross-section, a share of bone and
contrast-filled vessels and a share of fat, and their course along the body (the ribs, the
pelvis, the fat of the lower abdomen) is alike between adults. :func:`slice_profiles` measures
them per slice (in cm², from the HU-fixed normalisation), and :func:`map_slice` finds the
stretch and shift of one scan's slice axis that best correlates the two profiles, held near the
same-fraction guess. Mapped this way the kidneys' middle slice fell inside the query's kidney in
39-40 of the 42 pairs (median 11-14 mm off), the liver's in 42 and the spleen's in 40 (same
fraction: 37 and 28).

MR has no fixed intensity scale, so its profiles do not transfer: on the CHAOS tuning pairs the
mapping did worse than the same fraction (kidneys inside 13-15 of 20 against 16-18, the scans
all framing the abdomen alike). The session maps CT only.

Written here rather than taken from a registration library: it is an exhaustive search over
two parameters of a 1D signal, a few vectorised numpy lines; a 3D affine registration of the
two scans (SimpleITK) took 7-43 s per pair and landed 20-100 mm off on pairs of different
lengths (benchmarks/RESULTS-accuracy.md, "Affine registration").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_tpm.footprint import BODY_MARGIN  # the footprints' body rule: above the floor
from napari_tpm.preprocess import normalise_intensity

__all__ = ["ct_profiles", "map_slice", "slice_profiles"]

#: normalised CT above this is bone or contrast-filled vessel (about 190 HU with the robust map
#: ``(HU + 55) / 95`` of :mod:`napari_tpm.preprocess`)
BRIGHT = 2.6
#: normalised CT below this, inside the body, is fat or fluid (about 0 HU)
LOW = 0.6
#: stretches of one scan's slice axis tried against the other (adult bodies differ by ~20 %)
SCALES: tuple[float, ...] = tuple(np.round(np.arange(0.8, 1.2501, 0.05), 2))
#: shift step (mm) of the search
SHIFT_MM = 2.5
#: the two scans must overlap over at least this length (mm) for a candidate to count
MIN_OVERLAP_MM = 100.0
#: correlation given up per 100 mm away from the same-fraction guess: keeps a flat or
#: ambiguous profile near that guess (chosen on the BTCV tuning pairs: without it 5 of the 42
#: kidney pairs landed 200-330 mm off, with 0.1-0.3 none beyond 85 mm)
PULL = 0.2


def slice_profiles(normalised: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Per-slice profile ``(n, 4)`` of a normalised CT, slice axis first.

    Columns: body area (cm²), mean value inside the body, bright area (cm², bone and
    contrast), low area inside the body (cm², fat and fluid). ``spacing`` is (slice, row,
    column) in mm.
    """
    if normalised.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {normalised.shape}")
    cm2 = float(spacing[1]) * float(spacing[2]) / 100.0
    n = np.asarray(normalised, dtype=np.float32)
    floor = n.min(axis=(1, 2), keepdims=True)
    body = n > floor + BODY_MARGIN
    count = body.sum(axis=(1, 2))
    mean = np.where(body, n, 0).sum(axis=(1, 2)) / np.maximum(count, 1)
    bright = (n > BRIGHT).sum(axis=(1, 2))
    low = (body & (n < LOW)).sum(axis=(1, 2))
    return np.stack([count * cm2, mean, bright * cm2, low * cm2], axis=1).astype(np.float64)


def ct_profiles(image: np.ndarray, spacing: Sequence[float], axis: int) -> np.ndarray:
    """:func:`slice_profiles` of a CT in HU (clipped or not) along ``axis``.

    Through the HU-fixed map of :mod:`napari_tpm.preprocess` whatever the model's own
    normalisation, so the thresholds mean the same tissue in every scan.
    """
    normalised = normalise_intensity(np.asarray(image), modality="ct", method="robust")
    first = (spacing[axis], *(s for a, s in enumerate(spacing) if a != axis))
    return slice_profiles(np.moveaxis(normalised, axis, 0), first)


def map_slice(
    support: np.ndarray,
    support_mm: float,
    query: np.ndarray,
    query_mm: float,
    z: float,
    *,
    pull: float = PULL,
) -> float | None:
    """The query slice (fractional index) that matches slice ``z`` of the support scan.

    Args:
        support, query: :func:`slice_profiles` of the two scans.
        support_mm, query_mm: their slice spacings (mm).
        z: a slice index of the support scan (the painted slice).
        pull: correlation given up per 100 mm between the answer and the same-fraction guess.

    Returns:
        The matching index in the query; it may lie outside ``0 .. n - 1`` when the query does
        not reach that far. None when the scans are too short to overlap by
        :data:`MIN_OVERLAP_MM` (a slab of a few slices): their profiles say nothing.
    """
    ns, nq = support.shape[0], query.shape[0]
    guess_mm = z / max(ns - 1, 1) * (nq - 1) * query_mm
    zq_mm = np.arange(nq) * query_mm
    qn = _standardised(query)
    best, best_mm = -np.inf, None
    for scale in SCALES:
        # query slice at q mm shows the support's (q - shift) / scale mm
        lo = -ns * support_mm * scale
        shifts = np.arange(lo, nq * query_mm + SHIFT_MM, SHIFT_MM)
        pos = (zq_mm[None, :] - shifts[:, None]) / scale / support_mm  # support index
        inside = (pos >= 0) & (pos <= ns - 1)
        enough = inside.sum(axis=1) * query_mm >= MIN_OVERLAP_MM
        if not enough.any():
            continue
        pos, inside, shifts = pos[enough], inside[enough], shifts[enough]
        corr = _masked_correlation(support, pos, inside, qn)
        mapped_mm = z * support_mm * scale + shifts
        score = corr - pull * np.abs(mapped_mm - guess_mm) / 100.0
        i = int(np.argmax(score))
        if score[i] > best:
            best, best_mm = float(score[i]), float(mapped_mm[i])
    return None if best_mm is None else best_mm / query_mm


def _standardised(profile: np.ndarray) -> np.ndarray:
    """Each column z-scored over its slices (a flat column stays 0)."""
    return (profile - profile.mean(axis=0)) / (profile.std(axis=0) + 1e-6)


def _masked_correlation(
    support: np.ndarray, pos: np.ndarray, inside: np.ndarray, query_std: np.ndarray
) -> np.ndarray:
    """Mean over columns of the correlation of the support profile, sampled at ``pos``, with
    the query profile, over the ``inside`` slices of each candidate row."""
    w = inside.astype(np.float64)
    count = w.sum(axis=1)
    grid = np.arange(support.shape[0])
    total = np.zeros(pos.shape[0])
    for j in range(support.shape[1]):
        s = np.interp(np.clip(pos, 0, support.shape[0] - 1), grid, support[:, j])
        q = np.broadcast_to(query_std[:, j], pos.shape)
        ms, mq = (w * s).sum(1) / count, (w * q).sum(1) / count
        ds, dq = (s - ms[:, None]) * w, (q - mq[:, None]) * w
        cov = (ds * dq).sum(1)
        total += cov / np.sqrt((ds * ds).sum(1) * (dq * dq).sum(1) + 1e-12)
    return total / support.shape[1]
