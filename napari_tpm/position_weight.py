"""How much the filter bank's body-relative position counts, from the painted organ's size.

The filter bank's position channels (coordinates across each slice's body box) tell organs of
one density apart by where they lie: a left kidney from the spleen, bowel from the liver. They
carry a weight of 1.5, the largest of the bank's groups. That suits an organ whose sections
stay where the painted one is. A liver's do not: its painted section lies in the right of the
body, and slices further up hold a left lobe that reaches across the midline, positions the
painted section never had. The prototypes then score that lobe as background although it has
the painted tissue's density (BTCV 17's liver on its middle slice: 0.74, its upper half's left
lobe missing).

So when every painted section is large (an equivalent radius over :data:`FULL_WEIGHT_MM`),
the position channels count less, down to :data:`MIN_SCALE` of their weight at
:data:`MIN_WEIGHT_MM`. The radii of the development volumes' middle sections separate the
organs: spleens 19-46 mm, kidneys 19-34 mm, livers 29-82 mm (52-82 on the full-height tuning
volumes). Several structures painted together keep the smallest one's weight: the joint model
compares them in one feature space, and the small ones need their position.

Chosen on the tuning volumes (benchmarks/RESULTS-accuracy.md, "Position weighs less for a
large organ"): the weight lowered for every organ lifted livers and lowered kidneys and
spleens; with this rule, same scan BTCV 0.895 -> 0.901, CHAOS 0.890 -> 0.892 (BTCV 17's liver
0.74 -> 0.86), another patient's paint 0.774 -> 0.779 / 0.722 -> 0.735; half the weight beat a
third. Held out: BTCV same scan 0.904 -> 0.906, CHAOS 0.838 -> 0.836 (CHAOS 36's liver
0.85 -> 0.81). The features stay cached unweighted, and the weight is applied as they are
read (:func:`reweight`), so painting another organ never re-encodes the volume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from napari_tpm.tpm.features import l2_normalize

__all__ = ["FULL_WEIGHT_MM", "MIN_SCALE", "MIN_WEIGHT_MM", "position_scale", "reweight"]

#: up to this equivalent radius (mm) of the smallest painted structure's largest section, the
#: position channels keep their full weight ...
FULL_WEIGHT_MM = 48.0
#: ... from this radius on they count :data:`MIN_SCALE` of it, linearly in between
MIN_WEIGHT_MM = 58.0
MIN_SCALE = 0.5


def position_scale(areas_mm2: Mapping[int, float | None]) -> float:
    """The factor on the position channels' weight for structures painted with these largest
    sections (mm² per structure; None for a stroke, whose own area says nothing).

    1.0 unless every sized structure is large; strokes alone also keep 1.0.
    """
    sized = [a for a in areas_mm2.values() if a is not None and a > 0]
    if not sized:
        return 1.0
    radius = math.sqrt(min(sized) / math.pi)
    if radius <= FULL_WEIGHT_MM:
        return 1.0
    if radius >= MIN_WEIGHT_MM:
        return MIN_SCALE
    t = (radius - FULL_WEIGHT_MM) / (MIN_WEIGHT_MM - FULL_WEIGHT_MM)
    return 1.0 - t * (1.0 - MIN_SCALE)


def reweight(features: torch.Tensor, channels: slice | None, scale: float) -> torch.Tensor:
    """``features`` ([B, C, h, w], unit along C, any float dtype) with ``channels`` scaled by
    ``scale`` and unit again: what the encoder would give with that group's weight times
    ``scale``, since its output is the unit-normalised concatenation of weighted groups.

    Returns ``features`` itself (not a copy) when there is nothing to change.
    """
    if channels is None or scale == 1.0:
        return features
    out = features.float().clone()
    out[:, channels] *= scale
    return l2_normalize(out, dim=1)
