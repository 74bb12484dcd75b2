"""Helpers the headless session tests on real volumes share (imported by name: ``tests/`` is
on ``sys.path``, as for ``gui_helpers``)."""

from __future__ import annotations

import numpy as np

from napari_tpm.options import SegmentOptions
from napari_tpm.session import SegmentationSession


def read_case(folder, stem: str, kind: str):
    """A development volume and its labels: ``folder / f"{stem}_{kind}.nii.gz"`` (a
    ``napari_tpm.io.Volume``) and ``folder / f"{stem}_label.nii.gz"`` as an array."""
    from napari_tpm.io import read_volume

    image = read_volume(folder / f"{stem}_{kind}.nii.gz")
    return image, np.asarray(read_volume(folder / f"{stem}_label.nii.gz").array)


def section_paint(mask: np.ndarray, value: int, fraction: float | None = None) -> np.ndarray:
    """``mask``'s section on one axial slice, painted ``value``: its middle labelled slice (the
    paper's choice) or the one at ``fraction`` of its labelled slices (0 first, 1 last)."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    z = int(zs[len(zs) // 2] if fraction is None else zs[round(fraction * (zs.size - 1))])
    paint = np.zeros(mask.shape, np.uint8)
    paint[z][mask[z]] = value
    return paint


def segment_labels(image, paint: np.ndarray, options: SegmentOptions, atlas=None) -> np.ndarray:
    """``labels(None)`` of a filter-bank session on ``image`` (a ``napari_tpm.io.Volume``)
    from ``paint``, on ``atlas`` (another Volume) when given, else on the image itself."""
    session = SegmentationSession("filterbank", device="cpu", options=options)
    session.set_image(image.array, image.spacing)
    support = (
        {} if atlas is None else {"support_image": atlas.array, "support_spacing": atlas.spacing}
    )
    for _ in session.segment(paint, **support):
        pass
    return session.labels(None)
