"""Synthetic abdominal CT (or T2-like MR) phantoms with organ labels, for tests, demos and training.

Real annotated scans are few and large; a phantom is small, instant, reproducible per seed and
varied across seeds, so tests can build as many volumes as they need and training/evaluation code
can be exercised end to end without data.

Orientation (identical to a real scan read by SimpleITK with an identity direction, i.e. LPS):

- array axes are (z, y, x); z index 0 is the most inferior slice, z grows towards the head;
- row (y) 0 is anterior, rows grow towards the patient's back;
- column (x) 0 is the patient's right, columns grow towards the patient's left, so an axial
  slice shown with row 0 at the top appears as radiologists view it (patient's right on the
  viewer's left).

Anatomy: an elliptic body (subcutaneous fat, muscle wall, visceral fat), a spine with discs,
spinal canal and spinous process, paraspinal and psoas muscles, ribs, aorta and inferior vena
cava, bowel loops (fluid, gas or oral contrast), a stomach, a gallbladder, and the four target
organs: a large liver on the patient's right in the upper slices (with bright portal vessels
and a tapering left lobe), a crescent spleen posterior-laterally on the left, and two bean-shaped
kidneys either side of the spine with a bright cortex, darker medullary pyramids and sinus fat
(the right kidney a little lower). Every organ is a randomly rotated ellipsoid with a smooth random
deformation; positions, sizes, intensities, texture strength, bias field and noise vary per seed.
Organ intensities follow a contrast-enhanced portal-venous CT: liver ~60 HU, spleen ~50, kidney
cortex ~170, fat ~-100, muscle ~50, bone 400+, air -1000. Look-alike distractors (muscle and bowel
wall near spleen/liver values, contrast-filled bowel and vessels near kidney values) keep the
task from being solvable by intensity alone; organs differ in shape and texture as well.

Label values follow the TotalSegmentator "total" task used by the files in shared/data, plus one
phantom-only value for the spine: see `LABEL_NAMES`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from napari_tpm.io import Volume

__all__ = [
    "LABEL_NAMES",
    "TARGET_LABELS",
    "Phantom",
    "make_phantom",
    "make_phantom_dataset",
]

#: The organs the project segments, with the TotalSegmentator values used in shared/data.
TARGET_LABELS: dict[int, str] = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver"}

#: Every value a phantom's label map holds. 4, 6, 18, 52 and 63 are TotalSegmentator "total"
#: values; 200 ("spine": vertebral bodies, discs and posterior elements) is phantom-only, as
#: TotalSegmentator labels each vertebra separately. Muscles, ribs and fat are unlabelled (0).
LABEL_NAMES: dict[int, str] = {
    **TARGET_LABELS,
    4: "gallbladder",
    6: "stomach",
    18: "small_bowel",
    52: "aorta",
    63: "inferior_vena_cava",
    200: "spine",
}
LABEL_NAMES = dict(sorted(LABEL_NAMES.items()))

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


@dataclass
class Phantom:
    """A synthetic volume and its labels.

    Attributes:
        image: (z, y, x); int16 Hounsfield units for CT, float32 arbitrary units for MR.
        labels: (z, y, x) uint8, values as in `label_names`.
        spacing: (z, y, x) in mm.
        label_names: value -> structure name for every non-zero value in `labels`.
        modality: "ct" or "mr".
        seed: the seed it was made from.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    label_names: dict[int, str] = field(default_factory=lambda: dict(LABEL_NAMES))
    modality: str = "ct"
    seed: int = 0

    def volume(self, labels: bool = False) -> Volume:
        """The image (or the labels) as an `io.Volume` on an LPS identity grid at the origin."""
        from napari_tpm.io import Volume

        return Volume(self.labels if labels else self.image, spacing=self.spacing)


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


# --------------------------------------------------------------------------------------------
# anatomy


def _body(rng: np.random.Generator, c: _Canvas) -> None:
    half_x = c.shape[2] * c.spacing[2] / 2
    half_y = c.shape[1] * c.spacing[1] / 2
    c.bx = half_x * rng.uniform(0.80, 0.90)
    c.by = min(half_y * 0.9, c.bx * rng.uniform(0.68, 0.80))
    c.bm = math.sqrt(c.bx * c.by)
    c.cx = rng.normal(0, 0.02) * half_x
    c.cy = rng.uniform(0.0, 0.05) * half_y
    # slow change of girth along z and a lumpy outline in-plane
    girth = 1 + 0.05 * _smooth_1d(rng, c.z, c.z_len)[:, None, None]
    u = (c.x[None, None, :] - c.cx) / c.bx
    v = (c.y[None, :, None] - c.cy) / c.by
    theta = np.arctan2(v, u)
    outline = np.zeros_like(theta)
    for k in (2, 3, 5):
        outline = outline + rng.uniform(0, 0.025) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    # flatten the back a little: the patient lies on the table
    v_eff = np.where(v > 0, v * (1 + 0.15 * v**4), v)
    rad = np.sqrt(u**2 + v_eff**2) / (girth * (1 + outline))
    fat = rng.uniform(0.05, 0.12)
    wall = rng.uniform(0.04, 0.06)
    t = c.tissue
    t[rad < 1] = FAT
    c.trunk = rad < 1 - fat
    t[c.trunk] = MUSCLE
    c.cavity = rad < 1 - fat - wall
    t[c.cavity] = VISCERAL_FAT


def _tube(
    c: _Canvas,
    u: float,
    v: float,
    ru: float,
    rv: float,
    wobble: np.ndarray,
    w_range: tuple[float, float] = (0.0, 1.0),
    scale_z: np.ndarray | None = None,
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """A vertical elliptic tube (radii relative to the body scale) whose centre wobbles in z."""
    centre = c.point(u, v, 0.5)
    rx, ry = ru * c.bm, rv * c.bm
    z0 = int(np.clip(np.floor(w_range[0] * c.shape[0]), 0, c.shape[0]))
    z1 = int(np.clip(np.ceil(w_range[1] * c.shape[0]), 0, c.shape[0]))
    box = c.box(centre, (c.z_len, 1.6 * ry, 1.6 * rx))
    if box is None or z1 <= z0:
        return None
    box = (slice(z0, z1), box[1], box[2])
    wob = wobble[box[0]]
    s = 1.0 if scale_z is None else scale_z[box[0]][:, None, None]
    dx = (c.x[box[2]][None, None, :] - centre[2] - wob[:, None, None] * rx * 0.3) / (rx * s)
    dy = (c.y[box[1]][None, :, None] - centre[1]) / (ry * s)
    return box, np.sqrt(dx**2 + dy**2)


def _spine_and_muscles(rng: np.random.Generator, c: _Canvas) -> None:
    sway = _smooth_1d(rng, c.z, c.z_len)
    u0 = rng.normal(0, 0.02)
    # paraspinal muscles in the back wall, psoas beside the vertebral bodies (larger inferiorly)
    for side in (-1, 1):
        tube = _tube(c, u0 + side * 0.19, 0.80, 0.16, 0.12, sway)
        if tube:
            box, rad = tube
            c.paint(box, (rad < 1) & c.trunk[box], MUSCLE, 0)
        psoas_scale = np.clip(1.3 - (c.z - c.z_low) / c.z_len, 0.35, 1.3)
        tube = _tube(c, u0 + side * 0.20, 0.48, 0.09, 0.08, sway, (0.0, 0.75), psoas_scale)
        if tube:
            box, rad = tube
            c.paint(box, (rad < 1) & c.cavity[box], MUSCLE, 0)
    # vertebral bodies with discs, canal, posterior arch, spinous process
    v_body = rng.uniform(0.44, 0.50)
    r_body = rng.uniform(0.11, 0.13)
    period = rng.uniform(26, 34)
    disc_h = rng.uniform(6, 9)
    phase = rng.uniform(0, period)
    is_disc = ((c.z - c.z_low + phase) % period) < disc_h
    tube = _tube(c, u0, v_body, r_body, r_body * 0.85, sway)
    if tube:
        box, rad = tube
        tissue = np.where(rad > 0.82, BONE, MARROW).astype(np.uint8)
        tissue[is_disc[box[0]]] = DISC
        c.paint(box, rad < 1, tissue, 200)
    v_canal = v_body + r_body * 0.85 + 0.07
    tube = _tube(c, u0, v_canal, 0.085, 0.075, sway)
    if tube:
        box, rad = tube
        c.paint(box, rad < 1, BONE, 200)
        c.paint(box, rad < 0.6, CSF, 0)
    tube = _tube(c, u0, v_canal + 0.15, 0.025, 0.09, sway)
    if tube:
        box, rad = tube
        c.paint(box, (rad < 1) & c.trunk[box], BONE, 200)


def _ribs(rng: np.random.Generator, c: _Canvas) -> None:
    """Short bony segments in the body wall of the upper slices, around liver and spleen."""
    for _ in range(rng.integers(6, 12)):
        theta = rng.uniform(-0.2 * np.pi, 1.2 * np.pi)  # lateral and posterior, not the belly
        # on the muscle wall; the trunk-minus-cavity mask below trims them to it
        u, v = 0.88 * math.cos(theta), 0.88 * math.sin(theta)
        blob = _blob(rng, c, (u, v, rng.uniform(0.5, 1.0)), (0.05, 0.035, 0.035), jitter_pos=0.01)
        box, rad, _ = blob.region(c)
        if box is None:
            continue
        inside = (rad < 1) & c.trunk[box] & ~c.cavity[box] & (c.labels[box] == 0)
        c.paint(box, inside, np.where(rad > 0.6, BONE, MARROW).astype(np.uint8), 0)


def _bowel(rng: np.random.Generator, c: _Canvas) -> None:
    for i in range(rng.integers(10, 18)):
        if i < 3:  # colon flexures higher up on both sides
            uvw = (rng.choice([-0.55, 0.55]), rng.uniform(-0.3, 0.1), rng.uniform(0.3, 0.6))
        else:
            uvw = (rng.uniform(-0.5, 0.6), rng.uniform(-0.75, 0.15), rng.uniform(0.0, 0.6))
        blob = _blob(
            rng,
            c,
            uvw,
            (0.08, 0.11, 0.14),
            jitter_size=0.35,
            angle=rng.uniform(0, np.pi),
            angle_sd=0,
            lump_amp=(0.03, 0.1),
        )
        box, rad, _ = blob.region(c)
        if box is None:
            continue
        inside = (rad < 1) & c.cavity[box]
        content = rng.choice([FLUID, FLUID, GAS, ORAL_CONTRAST, -1])
        if content == -1:  # gas floating anterior of fluid (the patient is supine)
            level = rng.uniform(-0.4, 0.2)
            ant = (c.y[box[1]] - blob.centre[1])[None, :, None] < level * blob.radii[1]
            fill = np.where(ant, GAS, FLUID)
        else:
            fill = np.full(rad.shape, content)
        tissue = np.where(rad > rng.uniform(0.7, 0.82), BOWEL_WALL, fill).astype(np.uint8)
        c.paint(box, inside, tissue, 18)


def _stomach(rng: np.random.Generator, c: _Canvas) -> None:
    blob = _blob(rng, c, (0.28, -0.40, 0.80), (0.16, 0.26, 0.34), angle=0.5, lump_amp=(0.03, 0.08))
    box, rad, _ = blob.region(c)
    if box is None:
        return
    level = rng.uniform(-0.5, 0.0)
    ant = (c.y[box[1]] - blob.centre[1])[None, :, None] < level * blob.radii[1]
    tissue = np.where(rad > 0.85, BOWEL_WALL, np.where(ant, GAS, FLUID)).astype(np.uint8)
    c.paint(box, (rad < 1) & c.cavity[box], tissue, 6)


def _liver(rng: np.random.Generator, c: _Canvas) -> None:
    blob = _blob(
        rng,
        c,
        (-0.36, -0.08, 0.68),
        (0.36, 0.62, 0.78),
        angle=0.1,
        angle_sd=0.1,
        lump_amp=(0.02, 0.05),
        jitter_size=0.08,
    )
    box, rad, q = blob.region(c)
    if box is None:
        return
    # the left lobe thins out as it crosses the midline: shrink the AP extent with local x
    taper = rng.uniform(1.0, 1.8)
    qz, qy, qx = q
    # mostly from behind, so the left lobe stays anterior, as in a real liver
    squeeze = 1 + taper * np.clip(qx, 0, None) ** 2 * np.where(qy > 0, 1.6, 0.4)
    rad = np.sqrt(qz**2 + (qy * squeeze) ** 2 + qx**2) + (rad - np.sqrt(qz**2 + qy**2 + qx**2))
    inside = (rad < 1) & c.cavity[box]
    tissue = np.full(rad.shape, LIVER, dtype=np.uint8)
    # portal/hepatic vessels: tapering segments radiating from a hilum in the liver
    hilum = blob.centre + blob.rot.T @ (blob.radii * np.array([-0.15, 0.35, 0.35]))
    zc = (c.z[box[0]] - hilum[0])[:, None, None]
    yc = (c.y[box[1]] - hilum[1])[None, :, None]
    xc = (c.x[box[2]] - hilum[2])[None, None, :]
    reach = float(np.max(blob.radii)) * 0.9
    thick = rng.uniform(2.5, 4.0) * max(1.0, min(c.spacing[1:]) / 1.5)
    for _ in range(rng.integers(5, 9)):
        d = rng.normal(size=3) * np.array([0.6, 1.0, 1.0])
        d /= np.linalg.norm(d)
        along = np.clip(zc * d[0] + yc * d[1] + xc * d[2], 0, reach)
        dist2 = (zc - along * d[0]) ** 2 + (yc - along * d[1]) ** 2 + (xc - along * d[2]) ** 2
        radius = thick * (1 - 0.6 * along / reach)
        tissue[dist2 < radius**2] = LIVER_VESSEL
    c.paint(box, inside, tissue, 5)


def _gallbladder(rng: np.random.Generator, c: _Canvas) -> None:
    blob = _blob(rng, c, (-0.18, -0.35, 0.55), (0.07, 0.08, 0.12), jitter_size=0.25)
    box, rad, _ = blob.region(c)
    if box is not None:
        c.paint(box, (rad < 1) & c.cavity[box], BILE, 4)


def _spleen(rng: np.random.Generator, c: _Canvas) -> None:
    u, v = 0.62, 0.30
    # long axis (local y) along the posterolateral wall, i.e. the tangent of the body ellipse at
    # (u, v); local x then points outwards, so the hilum (carved below) faces the body centre
    angle = math.atan2(-v / c.by, u / c.bx)
    blob = _blob(
        rng,
        c,
        (u, v, 0.64),
        (0.19, 0.36, 0.15),
        angle=angle,
        angle_sd=0.12,
        lump_amp=(0.02, 0.04),
    )
    box, rad, q = blob.region(c)
    if box is None:
        return
    # crescent: carve the medial side with an offset ellipsoid in the local frame
    qz, qy, qx = q
    depth = rng.uniform(1.1, 1.5)
    hollow = (qz / 1.2) ** 2 + (qy / 1.1) ** 2 + (qx + depth) ** 2 / 0.8 < 1.0
    c.paint(box, (rad < 1) & ~hollow & c.cavity[box], SPLEEN, 1)


def _kidney(rng: np.random.Generator, c: _Canvas, side: int, value: int, w: float) -> None:
    """side -1: patient's right (low x), +1: patient's left."""
    # local x points medially-anteriorly for -side * qx > 0, so the hilum faces anteromedially
    angle = -side * rng.uniform(0.35, 0.7)
    blob = _blob(
        rng,
        c,
        (side * 0.36, 0.44, w),
        (0.19, 0.24, 0.16),
        angle=angle,
        jitter_pos=0.025,
        angle_sd=0.05,
        tilt_sd=0.05,
        lump_amp=(0.01, 0.025),
        jitter_size=0.1,
    )
    blob.rot = _rotation(angle, 0.0, side * rng.uniform(0.1, 0.25))
    box, rad, q = blob.region(c)
    if box is None:
        return
    qz, qy, qx = q
    # medial notch (renal sinus) in the local frame: local x points medially for both sides
    medial = -side * qx
    sinus = (medial > 0.35) & (np.sqrt(qz**2 / 0.35 + qy**2 / 0.5) < 1.0) & (rad < 1)
    cortex_depth = rng.uniform(0.6, 0.7)
    pyramids = np.sin(5 * np.arctan2(qz, qy) + rng.uniform(0, np.pi)) > -0.5
    tissue = np.where((rad < cortex_depth) & pyramids, MEDULLA, CORTEX).astype(np.uint8)
    c.paint(box, (rad < 1) & ~sinus & c.cavity[box], tissue, value)
    c.paint(box, sinus & c.cavity[box], SINUS_FAT, 0)


def _vessels(rng: np.random.Generator, c: _Canvas) -> None:
    sway = _smooth_1d(rng, c.z, c.z_len) * 0.5
    ivc = _tube(c, rng.uniform(-0.17, -0.11), rng.uniform(0.20, 0.26), 0.08, 0.055, sway)
    if ivc:
        box, rad = ivc
        c.paint(box, (rad < 1) & c.cavity[box], IVC, 63)
    aorta = _tube(c, rng.uniform(0.04, 0.09), rng.uniform(0.24, 0.28), 0.065, 0.065, sway)
    if aorta:
        box, rad = aorta
        c.paint(box, (rad < 1) & c.cavity[box], AORTA, 52)


# --------------------------------------------------------------------------------------------
# rendering


def _render(rng: np.random.Generator, c: _Canvas, modality: str) -> np.ndarray:
    table = _CT_TABLE if modality == "ct" else _MR_TABLE
    mean = np.zeros(_N_TISSUES, dtype=np.float32)
    tex = np.zeros(_N_TISSUES, dtype=np.float32)
    for t, (m, jitter, texture) in table.items():
        mean[t] = m + rng.normal(0, jitter)
        tex[t] = texture * rng.uniform(0.7, 1.3)
    if modality == "ct":
        # keep the textbook ordering whatever the jitter: cortex above medulla, liver above spleen
        mean[MEDULLA] = min(mean[MEDULLA], mean[CORTEX] - 55)
        mean[SPLEEN] = min(mean[SPLEEN], mean[LIVER] - 8)
    # fine texture: smoothed white noise at ~2.5 mm, scaled per tissue
    sigma_tex = [max(0.3, 2.5 / s) for s in c.spacing]
    texture = ndimage.gaussian_filter(rng.standard_normal(c.shape, dtype=np.float32), sigma_tex)
    texture *= np.float32(1 / max(float(texture.std()), 1e-6))
    image = mean[c.tissue]
    image += tex[c.tissue] * texture
    # partial-volume blur so edges are not perfectly sharp
    image = ndimage.gaussian_filter(image, [max(0.25, 0.6 / s) for s in c.spacing])
    body = c.tissue != AIR
    bias = (
        _smooth_1d(rng, c.z, c.z_len)[:, None, None]
        * _smooth_1d(rng, c.y, c.shape[1] * c.spacing[1])[None, :, None]
        + _smooth_1d(rng, c.x, c.shape[2] * c.spacing[2])[None, None, :]
    )
    bias *= np.float32(1 / max(float(np.abs(bias).max()), 1e-6))  # peak 1: a gentle drift
    if modality == "ct":
        image += np.float32(rng.uniform(3, 8)) * bias * body
        image += np.float32(rng.uniform(8, 18)) * rng.standard_normal(c.shape, dtype=np.float32)
        return np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    image *= np.exp(np.float32(rng.uniform(0.08, 0.2)) * bias)
    sd = np.float32(rng.uniform(8, 20))
    real = image + sd * rng.standard_normal(c.shape, dtype=np.float32)
    imag = sd * rng.standard_normal(c.shape, dtype=np.float32)
    return np.sqrt(real**2 + imag**2).astype(np.float32)  # magnitude: Rician noise


def make_phantom(
    shape: Sequence[int] = (48, 128, 128),
    *,
    seed: int = 0,
    spacing: Sequence[float] = (5.0, 1.5, 1.5),
    modality: Literal["ct", "mr"] = "ct",
) -> Phantom:
    """Make one synthetic abdominal volume with organ labels; the same seed gives the same data.

    The anatomy scales with the field of view (the volume always spans the abdomen from below
    the kidneys to the liver dome, and the body fills most of the slice), so any shape and
    spacing give all organs; the physical aspect ratio follows `spacing`. Values in `labels`
    and their names: `LABEL_NAMES`; orientation: see the module docstring.
    """
    if modality not in ("ct", "mr"):
        raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be 3 sizes of at least 4, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive values, got {spacing}")
    rng = np.random.default_rng(seed)
    c = _Canvas(shape, spacing)
    _body(rng, c)
    _spine_and_muscles(rng, c)
    _bowel(rng, c)
    _stomach(rng, c)
    _liver(rng, c)
    _gallbladder(rng, c)
    _spleen(rng, c)
    height = rng.normal(0, 0.04)  # both kidneys move together; the right stays the lower one
    _kidney(rng, c, -1, 2, 0.40 + height)
    _kidney(rng, c, +1, 3, 0.46 + height)
    _vessels(rng, c)
    _ribs(rng, c)
    image = _render(rng, c, modality)
    present = set(np.flatnonzero(np.bincount(c.labels.ravel(), minlength=256)).tolist())
    names = {k: v for k, v in LABEL_NAMES.items() if k in present}
    return Phantom(image, c.labels, spacing, names, modality, int(seed))


def make_phantom_dataset(
    n: int,
    *,
    seed: int = 0,
    shape: Sequence[int] = (48, 128, 128),
    spacing: Sequence[float] = (5.0, 1.5, 1.5),
    modality: Literal["ct", "mr"] = "ct",
) -> list[Phantom]:
    """`n` phantoms with seeds seed, seed + 1, ..., so disjoint seed ranges give disjoint sets
    (e.g. train on seed=0, evaluate on seed=1000)."""
    return [
        make_phantom(shape, seed=seed + i, spacing=spacing, modality=modality) for i in range(n)
    ]
