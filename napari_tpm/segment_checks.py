"""Up-front checks of the segment CLI's inputs: memory, label values and intensities.

Each check runs before the expensive work and raises `BadInput` with one line, so a volume
that cannot be segmented is refused in seconds instead of after minutes of encoding (or after
spending gigabytes loading it), and never turns into a silently wrong result.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from napari_tpm._cli import BadInput
from napari_tpm.preprocess import check_intensity_range

#: Peak resident memory of ``segment`` per query voxel beyond the loaded inputs (bytes); the
#: session refuses a volume by the same figure (``SegmentationSession.set_image``).
#: Measured 2026-12-02 on the 2-core CPU machine with /usr/bin/time: phantoms of 40 and 160
#: x 256 x 256 voxels (int16 image, uint8 paint), filter bank and resnet18l3-cpu800 models.
#: Peak RSS grew by 32.5-32.6 bytes per voxel in all; the inputs account for 14 of them
#: (`estimate_peak_bytes`), so 18.6 are the session's, rounded up here.
SESSION_BYTES_PER_VOXEL = 20
#: Fixed cost of the process (Python, torch, SimpleITK, an encoder): the same fits gave
#: 506 MiB (filter bank) and 565 MiB (resnet18l3) at zero voxels.
BASE_BYTES = 600 * 2**20
#: Largest label value the session's output can hold (it stores labels as uint16).
MAX_LABEL_VALUE = 65535


def estimate_peak_bytes(
    image_voxels: int, image_item: int, paint_voxels: int, paint_item: int
) -> int:
    """Peak memory of a segment run from the inputs' headers (see the module constants).

    Reading a file holds the ITK image and its numpy copy at once (2x the stored type); the
    paint is also widened to int64 for the session.
    """
    inputs = 2 * image_voxels * image_item + paint_voxels * (2 * paint_item + 8)
    return BASE_BYTES + inputs + SESSION_BYTES_PER_VOXEL * image_voxels


def check_inputs_fit_memory(args: argparse.Namespace, available: int | None = None) -> None:
    """Refuse, from the file headers alone, inputs that would not fit in memory.

    Also settles an ambiguous DICOM folder (several series, no --series) before anything is
    loaded. ``available`` defaults to the memory the system has free now.
    """
    from napari_tpm.io import VolumeError, read_header
    from napari_tpm.session import available_memory_bytes

    try:
        image = read_header(args.image, series=getattr(args, "series", None))
        paint = read_header(args.support_labels)
        support = (
            read_header(args.support_image, series=getattr(args, "series", None))
            if getattr(args, "support_image", None)
            else None
        )
    except VolumeError as err:
        raise BadInput(str(err)) from None
    need = estimate_peak_bytes(
        image.voxels, image.bytes_per_voxel, paint.voxels, paint.bytes_per_voxel
    )
    if support is not None:
        need += 2 * support.voxels * support.bytes_per_voxel + 4 * support.voxels
    limit = available_memory_bytes() if available is None else int(available)
    if need > limit:
        raise BadInput(
            f"IMAGE {image.shape} needs about {need / 2**30:.1f} GiB of memory to segment but "
            f"only {limit / 2**30:.1f} GiB is available; crop or downsample it first"
        )


def check_label_values(paint: np.ndarray, name: str) -> None:
    """Paint must hold whole numbers 0..65535 that the output label volume can store as is."""
    if not np.issubdtype(paint.dtype, np.number) or np.issubdtype(paint.dtype, np.complexfloating):
        raise BadInput(f"--support-labels {name} must hold whole label numbers")
    if paint.size == 0:
        return
    lo, hi = float(np.min(paint)), float(np.max(paint))
    if not (math.isfinite(lo) and math.isfinite(hi)) or not np.all(np.mod(paint, 1) == 0):
        raise BadInput(f"--support-labels {name} must hold whole label numbers")
    if lo < 0 or hi > MAX_LABEL_VALUE:
        bad = lo if lo < 0 else hi
        raise BadInput(
            f"--support-labels {name} holds the label value {bad:g}; label values must lie in "
            f"1..{MAX_LABEL_VALUE} (0 is background) so the result can keep them"
        )


def check_intensities(image: np.ndarray, what: str, modality: str = "auto") -> None:
    """``preprocess.check_intensity_range`` as the CLI's one-line error (checked before work).

    ``modality`` is accepted for the callers' symmetry; the limits do not depend on it.
    """
    try:
        check_intensity_range(image, what)
    except ValueError as err:
        raise BadInput(str(err)) from None
