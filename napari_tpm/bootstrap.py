"""Pseudo-paint: the slice of a first result that a second, same-scan pass starts from.

With paint from another patient (or an atlas) the prototypes carry that patient's appearance,
and the query's organ scores lower than it would against its own: cross-patient Dice sat far
below same-scan Dice (0.54 against 0.88 on the BTCV tuning volumes). Once the first pass has
found the organ, its most reliable slice can stand in for the user's paint on this volume, and
the same-scan pipeline (prototypes from this scan, its own calibration, slice continuity) runs
from there.

Which part of the first result to trust was measured on the tuning volumes (another patient's
support, one painted slice; benchmarks/RESULTS-accuracy.md "Second pass from the first
result"): the slice where the result is widest, and on it the 2D piece with the highest mean
score, used whole. The widest piece instead (a leak is often the widest part) and an eroded
core (it shrinks the count the calibration reproduces) both did worse, and so did the result's
middle slice, three slices, and a second round.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["CORE_LOGIT_SHIFT", "pseudo_paint"]

#: how much lower (in log-odds) the second pass's default boundary sits than the calibrated
#: one. The calibration reproduces the pseudo-paint's area, but that piece is a core: on the
#: tuning pairs it held 0.6-0.96 of the organ's section on its slice, and the results came out
#: too small (precision 0.97-1.00, recall 0.45-0.82). Chosen on the tuning volumes
#: (benchmarks/RESULTS-accuracy.md, "Another patient's paint: the prototype match picks the
#: region, and the second pass's boundary moves out").
CORE_LOGIT_SHIFT = 1.0


def pseudo_paint(labels: np.ndarray, score: np.ndarray, values: Sequence[int]) -> np.ndarray | None:
    """Paint for a second pass, taken from a first result; None when it found nothing.

    Args:
        labels: (n, H, W) label volume of the first pass, slice axis first.
        score: (n, H, W) float log-odds of each voxel's best class (higher: more confident).
        values: the label values to paint (the classes of the first pass).

    Every class found is painted on one slice. Several classes share the slice that shows the
    most of them (then the largest total area), so that what the second pass takes as
    background there is background; a class that slice does not show gets its own widest
    slice. On its slice a class is the 2D piece of its result with the highest mean score.
    """
    if labels.shape != score.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and score {score.shape} must be one 3D shape")
    found = [v for v in values if (labels == v).any()]
    if not found:
        return None
    areas = np.stack([(labels == v).sum(axis=(1, 2)) for v in found])  # (classes, n)
    shown = (areas > 0).sum(0)
    shared = int(np.lexsort((areas.sum(0), shown))[-1])
    paint = np.zeros(labels.shape, dtype=labels.dtype)
    for v, area in zip(found, areas, strict=True):
        z = shared if area[shared] > 0 else int(area.argmax())
        paint[z][_best_piece(labels[z] == v, score[z])] = v
    return paint


def _best_piece(mask: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The 2D connected piece of ``mask`` whose mean ``score`` is highest."""
    pieces, n = ndimage.label(mask)
    if n <= 1:
        return mask
    means = ndimage.mean(score, pieces, np.arange(1, n + 1))
    return pieces == 1 + int(np.argmax(means))
