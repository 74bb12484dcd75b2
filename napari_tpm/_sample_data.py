"""Sample data for File > Open Sample: a synthetic CT-like phantom and a small real MR scan.

Both come with their reference labels as a hidden layer, so a user can try the plugin (and
check it) without owning a scan. Nothing is downloaded: the phantom is generated and the MR
ships inside the package (see ``sample_data/ATTRIBUTION.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_tpm._reader import GEOMETRY_KEY, LayerData, volume_to_layer_data

SAMPLE_DIR = Path(__file__).parent / "sample_data"
MR_IMAGE = SAMPLE_DIR / "abdomen_mr_3mm.nii.gz"
MR_LABELS = SAMPLE_DIR / "abdomen_mr_3mm_labels.nii.gz"


def _reference(data: Any, kwargs: dict[str, Any], name: str) -> LayerData:
    """The reference labels as a hidden layer: there to compare against, not to paint on."""
    return data, {**kwargs, "name": name, "visible": False, "opacity": 0.4}, "labels"


def _placement_only(kwargs: dict[str, Any]) -> dict[str, Any]:
    """An image's layer keywords without its display settings (colormap, CT window)."""
    return {k: v for k, v in kwargs.items() if k not in ("colormap", "contrast_limits")}


def make_phantom_sample(
    shape: tuple[int, int, int] | None = None, seed: int = 0
) -> list[LayerData]:
    """The synthetic abdominal phantom (CT-like intensities) and its organ labels.

    Labels: 1 spleen, 2 right kidney, 3 left kidney, 5 liver (the TotalSegmentator values).
    """
    from napari_tpm.io import Volume
    from napari_tpm.phantom import make_phantom

    phantom = make_phantom(seed=seed) if shape is None else make_phantom(shape=shape, seed=seed)
    spacing = tuple(float(s) for s in phantom.spacing)
    volume = Volume(np.asarray(phantom.image), spacing=spacing)
    image, kwargs, _ = volume_to_layer_data(volume, source=None)
    kwargs["name"] = "phantom"
    kwargs["metadata"][GEOMETRY_KEY]["source"] = f"napari_tpm.phantom.make_phantom(seed={seed})"
    labels = np.asarray(phantom.labels)
    return [
        (image, kwargs, "image"),
        _reference(labels, _placement_only(kwargs), "phantom labels"),
    ]


def make_mr_sample() -> list[LayerData]:
    """A real abdominal MR (117 x 91 x 20 at 3 mm) with TotalSegmentator's predicted labels."""
    from napari_tpm.io import read_volume

    image = volume_to_layer_data(read_volume(MR_IMAGE), source=MR_IMAGE)
    data, kwargs, _ = volume_to_layer_data(read_volume(MR_LABELS), source=MR_LABELS)
    return [image, _reference(data, kwargs, "MR labels (TotalSegmentator prediction)")]
