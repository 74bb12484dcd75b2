"""Contrast search: match another scan's paint to this scan's contrast phase.

Paint from another patient carries that scan's organ intensities. Contrast CT is taken at
different times after injection, so the same liver reads 30 HU in one scan and 100 HU in the
next; MR intensities have no fixed scale at all. The prototypes are then built from an organ
that looks like nothing in the query, and the result is empty or lands on another organ: on the
BTCV tuning volumes 11 of 48 cross-patient pairs scored about 0 Dice, and shifting the
support's organ intensities by the right amount (+-40-80 HU) fixed most of them.

The right amount is not known, so the session tries a few (:func:`candidate_steps`) and keeps
the result that fits the paint best (:func:`fit_score`):
- its footprint (:func:`napari_tpm.footprint.footprints`): the organ's widest slice should
  have about the painted area in mm², lie at about the same place in the body (position
  relative to the body's box) and at about the same relative height in the scan; organs of
  adult abdomens differ far less between patients than a wrong organ or an empty result does;
- the agreement of its two passes (the bootstrap's second pass from its own result, Dice of
  the two): a result that holds its shape when re-derived from this scan alone is the organ;
- a small preference for the paint as it was, so an unclear search changes nothing.

The weights were chosen on the tuning volumes' cross-patient pairs, then checked once on the
held-out ones (benchmarks/RESULTS-accuracy.md, "Contrast search").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_tpm.footprint import Footprint, Found, footprint_penalty

__all__ = [
    "CT_OFFSETS_HU",
    "DOUBTFUL_FIT",
    "MR_FACTORS",
    "UNCHANGED_BONUS",
    "candidate_steps",
    "describe_step",
    "doubt_message",
    "fit_score",
    "is_unchanged",
    "shift_support",
]

#: intensity offsets tried on CT (HU) added inside the paint; the unchanged paint comes last.
CT_OFFSETS_HU: tuple[float, ...] = (-80.0, -40.0, 40.0, 80.0, 0.0)
#: intensity factors tried on MR (no fixed scale), the same steps relative to a 160-unit range.
MR_FACTORS: tuple[float, ...] = (0.5, 0.75, 1.25, 1.5, 1.0)
#: the fit score's preference for the paint as it was: an unclear search changes nothing
UNCHANGED_BONUS = 0.2
#: a result from another volume's paint whose :func:`fit_score` is below this is reported as
#: doubtful. Chosen on the tuning pairs (every ordered pair of BTCV 15-21 and CHAOS 21-33, four
#: organs, 248 results) as the highest threshold whose flagged results are at least half wrong:
#: below 0.5 lay 23 of the 38 results with Dice < 0.3 and 21 of the 210 others
DOUBTFUL_FIT = 0.5


def doubt_message(label: int, fit: float | None = None) -> str:
    """What every front end says about a doubtful label (one wording for the CLI and napari).

    ``fit``, when given, is the label's fit score, shown against :data:`DOUBTFUL_FIT`.
    """
    score = f" (fit {fit:.2f} < {DOUBTFUL_FIT})" if fit is not None else ""
    return (
        f"label {label} fits the painted organ poorly{score}: from another scan's paint this is "
        "often a look-alike region, not the organ. Check it, or paint one slice of this scan."
    )


def candidate_steps(modality: str) -> tuple[tuple[str, float], ...]:
    """The intensity changes to try, as ``("add", HU)`` for CT or ``("scale", f)`` for MR.

    The unchanged support comes last: when it wins, as it usually does, the session's state
    after the search is already its result and nothing is run again.
    """
    if modality == "ct":
        return tuple(("add", d) for d in CT_OFFSETS_HU)
    if modality == "mr":
        return tuple(("scale", f) for f in MR_FACTORS)
    raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")


def is_unchanged(step: tuple[str, float]) -> bool:
    """Whether ``step`` leaves the support image as it is."""
    kind, amount = step
    return amount == (0.0 if kind == "add" else 1.0)


def describe_step(step: tuple[str, float]) -> str:
    """``step`` in words, for the CLI and the dock ("+40 HU", "x1.25")."""
    kind, amount = step
    return f"{amount:+g} HU" if kind == "add" else f"x{amount:g}"


def shift_support(
    image: np.ndarray, paint: np.ndarray, values: Sequence[int], step: tuple[str, float]
) -> np.ndarray:
    """A float32 copy of ``image`` with the voxels painted with ``values`` changed by ``step``.

    Only the painted organ changes: the rest of the support (its background, the body around
    it, background strokes) keeps the intensities the prototypes' background is built from.
    The result stays within the image's own range: a windowed CT's organ voxels pushed below
    its floor would otherwise hide the floor's pile that tells it from MR
    (:func:`napari_tpm.preprocess.guess_modality`).
    """
    if image.shape != paint.shape:
        raise ValueError(f"paint {paint.shape} and image {image.shape} must have one shape")
    out = np.array(image, dtype=np.float32, copy=True)
    inside = np.isin(paint, np.asarray(values))
    kind, amount = step
    if kind == "add":
        out[inside] += np.float32(amount)
    elif kind == "scale":
        out[inside] *= np.float32(amount)
    else:
        raise ValueError(f"step kind must be 'add' or 'scale', got {kind!r}")
    if out.size:
        np.clip(out, np.min(image), np.max(image), out=out)
    return out


def fit_score(
    support: dict[int, Footprint],
    result: dict[int, Found],
    agreement: float,
    unchanged: bool,
) -> float:
    """How well a candidate's result fits the paint: higher is better.

    ``agreement`` is the Dice of its first and second pass (foreground against foreground);
    the footprint penalty is averaged over the painted classes.
    """
    if not support:
        raise ValueError("the support holds no painted class")
    penalty = float(np.mean([footprint_penalty(f, result.get(v)) for v, f in support.items()]))
    return agreement - penalty + (UNCHANGED_BONUS if unchanged else 0.0)
