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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import ndimage

from napari_tpm._phantom_anatomy import (
    _body,
    _bowel,
    _gallbladder,
    _kidney,
    _liver,
    _ribs,
    _spine_and_muscles,
    _spleen,
    _stomach,
    _vessels,
)
from napari_tpm._phantom_canvas import (
    _CT_TABLE,
    _MR_TABLE,
    _N_TISSUES,
    AIR,
    CORTEX,
    LIVER,
    MEDULLA,
    SPLEEN,
    _Canvas,
    _smooth_1d,
)

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
