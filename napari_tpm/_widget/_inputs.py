"""The checks a Segment press makes before any work: one message per problem, no Qt.

Each returns the sentence the user sees (toast and status line), so the same wording is used
however the run was started (the button, Auto-update, the refresh after Adapt).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_tpm._widget._layers import same_grid
from napari_tpm._widget._worker import SegmentRequest


def _not_a_volume(layer: Any) -> bool:
    return bool(layer.multiscale or layer.rgb or np.ndim(layer.data) != 3)


def image_problem(image: Any) -> str:
    """Why ``image`` (an Image layer or None) cannot be segmented, or "" when it can."""
    if image is None:
        return "open a 3D image first (File > Open, or File > Open Sample)."
    if _not_a_volume(image):
        return (
            f"'{image.name}' is not a single-channel 3D volume (shape {np.shape(image.data)}); "
            "TPM segments 3D scans."
        )
    return ""


def build_request(
    image: Any, support: Any, support_image: Any, n_prototypes: int
) -> SegmentRequest | str:
    """A snapshot of everything a run needs, or the sentence saying what is wrong.

    The paint is copied, so the user can keep painting while the worker runs; it may lie on
    several slices along one axis, and label 255 marks background strokes (see
    :func:`napari_tpm.support.parse_support`, which the session applies too).
    """
    from napari_tpm.session import BACKGROUND_LABEL, SupportError
    from napari_tpm.support import parse_support

    problem = image_problem(image)
    if problem:
        return problem
    if support is None:
        return "no support layer. Press 'New support layer' and paint the structure."
    reference = support_image if support_image is not None else image
    if not same_grid(support, reference):
        return (
            f"the support layer '{support.name}' {tuple(np.shape(support.data))} is not on the "
            f"grid of '{reference.name}' {tuple(np.shape(reference.data))}."
        )
    if support_image is not None and _not_a_volume(support_image):
        return f"the support image '{support_image.name}' is not a 3D volume."
    paint = np.array(support.data, copy=True)
    try:
        parse_support(paint, BACKGROUND_LABEL)
    except SupportError as exc:
        return f"{exc}."
    other, other_spacing, reordered = None, None, ""
    if support_image is not None:
        other = np.asarray(support_image.data)
        other_spacing = tuple(float(s) for s in support_image.scale)
        direction = _direction(support_image), _direction(image)
        if None not in direction:  # both read from files: the same axes as the image's
            from napari_tpm.orientation import reorient_pair

            other, paint, other_spacing, reordered = reorient_pair(
                other, paint, other_spacing, *direction
            )
    return SegmentRequest(
        image=np.asarray(image.data),
        spacing=tuple(float(s) for s in image.scale),
        support=paint,
        support_image=other,
        support_spacing=other_spacing,
        n_prototypes=int(n_prototypes),
        reordered=reordered,
    )


def _direction(layer: Any) -> tuple[float, ...] | None:
    """The file's direction cosines that our reader kept in the layer's metadata, if any.

    Another volume's paint is reordered to the image's axes with them
    (:mod:`napari_tpm.orientation`); a layer made in napari has none, and is taken as is.
    """
    from napari_tpm._reader import GEOMETRY_KEY

    geometry = getattr(layer, "metadata", {}).get(GEOMETRY_KEY) or {}
    direction = geometry.get("direction")
    return None if direction is None else tuple(float(d) for d in direction)
