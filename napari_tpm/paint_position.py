"""Where the painted slice lies in the organ, and what that does to the decision boundary.

A model without a learned threshold (the filter bank) places its boundary where the painted
slice's predicted count equals the painted count (``_session_steps._calibrate``). That is right
for a slice through the organ's middle, where users usually paint and where the benchmark paints.
Near either end of an organ, the painted section is small and partial-volumed, and the same rule
gives a boundary that is too strict for the wider sections further in. The result is then
precise but short: on the tuning volumes (BTCV CT and CHAOS MR, paint at 15 % of the organ's
slices) precision was 0.90-0.95 and recall 0.43-0.72.

The first result itself shows where the paint lies. If it extends to both sides of the painted
slice about equally, the paint is central. If nearly all of it lies on one side, the paint is
near an end. :func:`side_balance` measures this and :func:`tip_logit_shift` turns it into a
shift of the boundary (in log-odds, as a higher class prior). Measured on the tuning volumes,
with the paint at 15, 30, 50, 70 and 85 % of each organ's slices (benchmarks/RESULTS-accuracy.md,
"Paint away from the organ's middle"):
- mean Dice over those positions rose from 0.785 to 0.811;
- the middle slice was unchanged within 0.002.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "END_PASS_AGREEMENT",
    "END_PASS_NEW_SCORE",
    "TIP_BALANCE",
    "TIP_SLOPE",
    "side_balance",
    "tip_logit_shift",
]

#: a result at least this balanced about the painted slice(s) is taken as painted mid-organ
TIP_BALANCE = 0.4
#: a second pass from the organ's body (``SegmentOptions.end_second_pass``) is kept when its
#: result's Dice with the outline on the painted slice is at least this; chosen on the tuning
#: volumes, paint at 15 / 85 %: 0.8 and 0.85 both gained on BTCV and CHAOS, 0.9 lost CHAOS
#: (benchmarks/RESULTS-accuracy.md, "A second pass from the organ's body")
END_PASS_AGREEMENT = 0.8
#: ... and when the voxels it adds scored below this probability, on average, in the first
#: pass. The pass is for an organ body the tip's prototypes missed, which scores low there;
#: voxels that already scored as the organ were left out by the 3D steps (a neighbour joined
#: through a neck, a part past a split), and the pass would take them back. On the tuning
#: volumes (BTCV, CHAOS; the middle slice, 1-2 slices either side, 15 / 85 %) the pass was
#: kept 73 times; the 7 whose added voxels averaged over one half lost 6 times, -0.52 Dice in
#: all (BTCV 16's left kidney at 15 % -0.31, CHAOS 31's spleen two slices above its middle
#: -0.19), while the other 66 gained +1.75 (benchmarks/RESULTS-accuracy.md, "What an end pass
#: adds")
END_PASS_NEW_SCORE = 0.5
#: log-odds added per unit of balance below :data:`TIP_BALANCE` (up to the option's maximum)
TIP_SLOPE = 6.0


def side_balance(result: np.ndarray, painted: Sequence[int]) -> float | None:
    """How evenly ``result`` extends to both sides of the painted slices.

    Args:
        result: (n, ...) the first result, slice axis first; nonzero is foreground.
        painted: the painted slice indices.

    Returns:
        ``min(slices below, slices above) / max(result's extent, 1)``: 0.5 for a result
        centred on the paint, 0 when it lies on one side only (or only on the painted slice).
        None for an empty result or no painted slice.
    """
    if len(painted) == 0:
        return None
    rows = np.flatnonzero(np.asarray(result).reshape(len(result), -1).any(axis=1))
    if rows.size == 0:
        return None
    below = max(min(painted) - int(rows[0]), 0)
    above = max(int(rows[-1]) - max(painted), 0)
    return min(below, above) / max(int(rows[-1] - rows[0]), 1)


def tip_logit_shift(balance: float | None, max_shift: float) -> float:
    """The boundary's outward shift (log-odds, >= 0) for a result of this :func:`side_balance`."""
    if balance is None or max_shift <= 0:
        return 0.0
    return float(np.clip(TIP_SLOPE * (TIP_BALANCE - balance), 0.0, max_shift))
