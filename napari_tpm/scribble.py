"""Scribbles: a stroke inside an organ, grown to the region TPM assigns to it on that slice.

The one-shot protocol paints the whole organ on its slice, and two things rely on that: the
prototype is the mean of the organ's features, and a model without a learned threshold places
its boundary where the painted slice's predicted count equals the painted count. A user who
draws one stroke through the organ (what micro-sam and nnInteractive accept) breaks both: the
prototype sees a line of pixels and the count says the organ is a line, so the result shrinks to
a sliver (Dice 0.2-0.4 measured).

So a stroke that is thin and elongated is grown first, on its own slice: score the slice against
the stroke's prototype, split the scores in two with Otsu's threshold (organ vs the rest of the
slice), and keep the part connected to the stroke. That region then acts as the painted organ
for the prototype and the calibration; the result keeps only what the user drew as paint.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = ["grow_scribbles", "is_scribble", "stroke_shaped"]

#: A stroke is at most this thick (inscribed radius, working pixels: ~4 mm on a 256 grid)...
MAX_RADIUS = 3.0
#: ...and at least this many times longer than a disc of that radius.
MIN_ELONGATION = 4.0


def is_scribble(mask: np.ndarray) -> bool:
    """Whether a painted 2D ``mask`` is a thin, elongated stroke rather than a filled region.

    A filled organ has a large inscribed radius; a small round structure painted whole has a
    small radius but is not elongated. Only thin and long strokes count as scribbles.
    """
    area = int(mask.sum())
    if area == 0:
        return False
    return stroke_shaped(float(ndimage.distance_transform_edt(mask).max()), area)


def stroke_shaped(radius: float, area: float) -> bool:
    """Whether a painted region of this inscribed ``radius`` and ``area`` (working pixels, and
    their square) is a stroke: thin (:data:`MAX_RADIUS`) and long (:data:`MIN_ELONGATION`)."""
    return radius <= MAX_RADIUS and area >= MIN_ELONGATION * np.pi * radius**2


def grow_scribbles(
    masks: torch.Tensor,
    features: torch.Tensor,
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Grow every scribbled class on every painted slice; returns new working-grid masks.

    Args:
        masks: ``(S, H, W)`` int64 codes on the working grid: class index + 1, -1 background
            strokes, 0 unpainted.
        features: ``(S, C, h, w)`` features of those slices.
        score_fn: ``(features (1, C, h, w), pixel features (N, C)) -> (h, w)`` log-odds of one
            class whose prototype is fitted to those pixel features.

    Grown pixels never overwrite paint (another class or a background stroke).
    """
    from napari_tpm.tpm import support_pixel_features

    out = masks.clone()
    size = masks.shape[-2:]
    for s in range(masks.shape[0]):
        codes = [int(c) for c in torch.unique(masks[s]) if int(c) > 0]
        for code in codes:
            stroke = (masks[s] == code).numpy()
            if not is_scribble(stroke):
                continue
            pix = support_pixel_features(features[s], torch.from_numpy(stroke.astype(np.float32)))
            low = score_fn(features[s : s + 1], pix)[None, None]
            up = torch.nn.functional.interpolate(low, size=size, mode="bilinear")[0, 0]
            scores = up.clamp(-20, 20).numpy()
            if np.ptp(scores) <= 1e-6:
                continue
            region = scores > threshold_otsu(scores)
            lab, _ = ndimage.label(region | stroke)
            keep = np.isin(lab, np.unique(lab[stroke]))
            free = out[s] == 0
            out[s][torch.from_numpy(keep) & free] = code
    return out
