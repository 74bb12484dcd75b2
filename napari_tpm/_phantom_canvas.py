"""The synthetic phantom's canvas: tissue classes with their CT and MR intensities, physical
coordinates in the body's frame, and the shape helpers (rotations, deformed ellipsoids, tubes,
smooth random profiles) that the anatomy builders (:mod:`napari_tpm._phantom_anatomy`) paint
with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Tissue classes: the image is a lookup of per-tissue intensity and texture strength.
(
    AIR,
    FAT,
    VISCERAL_FAT,
    MUSCLE,
    LIVER,
    LIVER_VESSEL,
    SPLEEN,
    CORTEX,
    MEDULLA,
    SINUS_FAT,
    BOWEL_WALL,
    FLUID,
    GAS,
    ORAL_CONTRAST,
    BILE,
    AORTA,
    IVC,
    BONE,
    MARROW,
    DISC,
    CSF,
) = range(21)
_N_TISSUES = 21

# (mean, jitter sd across seeds, texture sd) per tissue, CT in HU.
_CT_TABLE: dict[int, tuple[float, float, float]] = {
    AIR: (-1000, 0, 0),
    FAT: (-100, 8, 8),
    VISCERAL_FAT: (-90, 8, 10),
    MUSCLE: (48, 4, 5),
    LIVER: (62, 4, 7),
    LIVER_VESSEL: (165, 20, 8),
    SPLEEN: (50, 3, 2.5),
    CORTEX: (175, 18, 8),
    MEDULLA: (105, 12, 8),
    SINUS_FAT: (-70, 10, 10),
    BOWEL_WALL: (42, 6, 12),
    FLUID: (15, 6, 8),
    GAS: (-850, 40, 60),
    ORAL_CONTRAST: (260, 50, 40),
    BILE: (10, 4, 3),
    AORTA: (185, 25, 6),
    IVC: (130, 20, 8),
    BONE: (850, 80, 60),
    MARROW: (400, 40, 45),
    DISC: (90, 10, 8),
    CSF: (15, 4, 4),
}

# T2-weighted, fat-suppressed MR in arbitrary units: fluid bright, fat and flowing blood dark,
# spleen and kidneys brighter than liver, renal medulla brighter than cortex.
_MR_TABLE: dict[int, tuple[float, float, float]] = {
    AIR: (0, 0, 0),
    FAT: (90, 10, 10),
    VISCERAL_FAT: (80, 10, 10),
    MUSCLE: (120, 10, 8),
    LIVER: (200, 15, 12),
    LIVER_VESSEL: (70, 10, 8),
    SPLEEN: (380, 25, 8),
    CORTEX: (420, 30, 15),
    MEDULLA: (560, 35, 15),
    SINUS_FAT: (70, 10, 8),
    BOWEL_WALL: (250, 25, 25),
    FLUID: (800, 60, 40),
    GAS: (10, 5, 5),
    ORAL_CONTRAST: (600, 60, 40),
    BILE: (900, 50, 20),
    AORTA: (60, 10, 10),
    IVC: (90, 15, 10),
    BONE: (25, 5, 5),
    MARROW: (160, 20, 20),
    DISC: (450, 40, 20),
    CSF: (950, 40, 20),
}


# --------------------------------------------------------------------------------------------
# geometry helpers


class _Canvas:
    """Physical coordinates, the tissue and label maps being painted, and the body frame."""

    def __init__(self, shape: Sequence[int], spacing: Sequence[float]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        # centred physical coordinates in mm: x -> patient's left, y -> posterior, z -> superior
        self.z, self.y, self.x = (
            ((np.arange(n, dtype=np.float32) - (n - 1) / 2) * s)
            for n, s in zip(self.shape, self.spacing)
        )
        self.tissue = np.full(self.shape, AIR, dtype=np.uint8)
        self.labels = np.zeros(self.shape, dtype=np.uint8)
        self.cavity = np.zeros(self.shape, dtype=bool)
        self.trunk = np.zeros(self.shape, dtype=bool)
        self.z_len = self.shape[0] * self.spacing[0]
        self.z_low = float(self.z[0]) - self.spacing[0] / 2
        # body frame, set by the body builder
        self.cx = self.cy = 0.0
        self.bx = self.by = self.bm = 1.0

    def point(self, u: float, v: float, w: float) -> np.ndarray:
        """Body-relative (u right->left in [-1, 1], v ant->post in [-1, 1], w inf->sup in [0, 1])
        to mm (z, y, x)."""
        return np.array(
            [self.z_low + w * self.z_len, self.cy + v * self.by, self.cx + u * self.bx],
            dtype=np.float64,
        )

    def box(self, centre: np.ndarray, half: Sequence[float]) -> tuple[slice, ...] | None:
        """Index box covering centre +- half (mm) per axis, or None if outside the volume."""
        out = []
        for axis, coords in enumerate((self.z, self.y, self.x)):
            sp = self.spacing[axis]
            n = self.shape[axis]
            lo = math.floor((centre[axis] - half[axis] - coords[0]) / sp)
            hi = math.ceil((centre[axis] + half[axis] - coords[0]) / sp) + 1
            lo, hi = max(lo, 0), min(hi, n)
            if lo >= hi:
                return None
            out.append(slice(lo, hi))
        return tuple(out)

    def paint(self, box: tuple[slice, ...], mask: np.ndarray, tissue, label: int) -> None:
        """Overwrite tissue (constant or array over the box) and label where `mask` is set."""
        t = self.tissue[box]
        if np.isscalar(tissue):
            t[mask] = tissue
        else:
            t[mask] = tissue[mask]
        self.labels[box][mask] = label


def _rotation(angle: float, tilt_yz: float = 0.0, tilt_xz: float = 0.0) -> np.ndarray:
    """Rotation matrix acting on (z, y, x) column vectors."""
    ca, sa = math.cos(angle), math.sin(angle)
    in_plane = np.array([[1, 0, 0], [0, ca, sa], [0, -sa, ca]])  # about z
    c1, s1 = math.cos(tilt_yz), math.sin(tilt_yz)
    yz = np.array([[c1, -s1, 0], [s1, c1, 0], [0, 0, 1]])
    c2, s2 = math.cos(tilt_xz), math.sin(tilt_xz)
    xz = np.array([[c2, 0, -s2], [0, 1, 0], [s2, 0, c2]])
    return xz @ yz @ in_plane


@dataclass
class _Blob:
    """A rotated, smoothly deformed ellipsoid; `field` < 1 inside."""

    centre: np.ndarray  # mm (z, y, x)
    radii: np.ndarray  # mm (z, y, x) in the blob's own frame
    rot: np.ndarray
    lumps: list[tuple[np.ndarray, float, float]]

    def extent(self) -> np.ndarray:
        # bounding half-size of the rotated ellipsoid, plus room for the deformation
        return 1.25 * np.sqrt((self.rot.T**2) @ (self.radii**2))

    def field(self, canvas: _Canvas, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised radius over `box`, and the local normalised coordinates (z, y, x)."""
        zc = (canvas.z[box[0]] - self.centre[0])[:, None, None]
        yc = (canvas.y[box[1]] - self.centre[1])[None, :, None]
        xc = (canvas.x[box[2]] - self.centre[2])[None, None, :]
        r = self.rot.astype(np.float32)
        q = [
            (r[i, 0] * zc + r[i, 1] * yc + r[i, 2] * xc) / np.float32(self.radii[i])
            for i in range(3)
        ]
        rad = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
        for k, amp, phase in self.lumps:
            rad += np.float32(amp) * np.sin(
                np.float32(k[0]) * q[0]
                + np.float32(k[1]) * q[1]
                + np.float32(k[2]) * q[2]
                + np.float32(phase)
            )
        return rad, np.stack(np.broadcast_arrays(*q))

    def region(self, canvas: _Canvas) -> tuple:
        """(box, normalised radius, local coordinates) or Nones when outside the volume."""
        box = canvas.box(self.centre, self.extent())
        if box is None:
            return None, None, None
        rad, q = self.field(canvas, box)
        return box, rad, q


def _lumps(rng: np.random.Generator, n: int, amp: tuple[float, float]) -> list:
    out = []
    for _ in range(n):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        out.append(
            (direction * rng.uniform(1.5, 3.5), rng.uniform(*amp), rng.uniform(0, 2 * np.pi))
        )
    return out


def _blob(
    rng: np.random.Generator,
    canvas: _Canvas,
    uvw: Sequence[float],
    radii_rel: Sequence[float],
    *,
    jitter_pos: float = 0.04,
    jitter_size: float = 0.12,
    angle: float = 0.0,
    angle_sd: float = 0.15,
    tilt_sd: float = 0.12,
    lump_amp: tuple[float, float] = (0.02, 0.06),
) -> _Blob:
    """Blob at body-relative position uvw, radii (rz of z length, ry and rx of the body scale)."""
    u, v, w = (c + rng.normal(0, jitter_pos) for c in uvw)
    scale = rng.uniform(1 - jitter_size, 1 + jitter_size, size=3)
    radii = (
        np.array([radii_rel[0] * canvas.z_len, radii_rel[1] * canvas.bm, radii_rel[2] * canvas.bm])
        * scale
    )
    rot = _rotation(angle + rng.normal(0, angle_sd), rng.normal(0, tilt_sd), rng.normal(0, tilt_sd))
    return _Blob(canvas.point(u, v, w), radii, rot, _lumps(rng, 3, lump_amp))


def _smooth_1d(rng: np.random.Generator, coords: np.ndarray, length: float) -> np.ndarray:
    """A random smooth function of one coordinate, ~unit amplitude (a short cosine series)."""
    out = np.zeros_like(coords)
    for k in (1, 2):
        out += rng.normal(0, 1 / k) * np.cos(np.pi * k * coords / length + rng.uniform(0, np.pi))
    return out.astype(np.float32)
