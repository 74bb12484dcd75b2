"""The synthetic phantom's anatomy: the builders that paint each structure (body, spine and
muscles, bowel, stomach, organs, vessels, ribs) onto the canvas (:mod:`napari_tpm._phantom_canvas`).

Kept apart from :mod:`napari_tpm.phantom`, which holds the label values, the per-tissue
intensity tables, the rendering and the public ``make_phantom``. The builders draw from the
caller's random generator in a fixed order, so a seed gives the same phantom as before the
split.
"""

from __future__ import annotations

import math

import numpy as np

from napari_tpm._phantom_canvas import (
    AORTA,
    BILE,
    BONE,
    BOWEL_WALL,
    CORTEX,
    CSF,
    DISC,
    FAT,
    FLUID,
    GAS,
    IVC,
    LIVER,
    LIVER_VESSEL,
    MARROW,
    MEDULLA,
    MUSCLE,
    ORAL_CONTRAST,
    SINUS_FAT,
    SPLEEN,
    VISCERAL_FAT,
    _blob,
    _Canvas,
    _rotation,
    _smooth_1d,
)

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
