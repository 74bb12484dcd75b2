"""The accuracy benchmark's jobs: which paint each mode puts on which volume.

Kept apart from ``bench_accuracy.py`` (the runner and its command line) so the modes read in
one place; the supports themselves (slices, paint, pairs) come from ``accuracy_cases.py``,
shared with the random forest so both methods always see the same paint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import accuracy_cases as ac
import numpy as np

MODES = (
    "same",
    "cross",
    "multi",
    "alone",
    "cross-multi",
    "ends",
    "rough",
    "near",
    "fix",
    "axes",
    "partial",
)
#: the ``near`` mode: the organ painted on a slice this many slices from its middle one
NEAR = {"same-m2": -2, "same-m1": -1, "same-p1": 1, "same-p2": 2}
#: the ``ends`` mode: one slice painted near each end of the organ, at these fractions of its
#: labelled slices (a user does not always find the middle)
ENDS = {"same-lo": 0.15, "same-hi": 0.85}
#: the ``axes`` mode: the organ's middle slice along another axis than the first (axis 1:
#: coronal, axis 2: sagittal for scans read axial-first), as a user painting in that view does
AXES = {"same-cor": 1, "same-sag": 2}
#: the ``partial`` mode's job modes: the middle slice marked by a stroke, a line or a dab
PARTIAL_MODES = tuple(f"same-{kind}" for kind in ac.PARTIAL_KINDS)


def ends_modes(fractions: list[float]) -> dict[str, float]:
    """Mode name per ``ends`` fraction: the defaults keep their names (``same-lo``, ``same-hi``,
    so rows stay comparable with earlier runs), any other is ``same-atNN`` (NN percent)."""
    named = {f: m for m, f in ENDS.items()}
    out: dict[str, float] = {}
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"--ends-at takes fractions in [0, 1], got {f}")
        out[named.get(f, f"same-at{round(100 * f):02d}")] = float(f)
    return out


@dataclass
class Job:
    """One support for one query: which organs it paints and on which volume."""

    #: same(-2sl, -3sl, -lo, -hi, -atNN, -m2, -m1, -p1, -p2, -fix1), cross(-2sl, -3sl), multi,
    #: alone, cross-multi
    mode: str
    organs: tuple[str, ...]  # organ of paint value k is organs[k - 1]
    paint: np.ndarray
    support: str  # case name of the support volume
    slices: list[int]
    image: np.ndarray | None = None  # support image when it is another volume
    spacing: tuple[float, float, float] | None = None
    extra_partner: bool = False  # a cross partner other than the next volume (--partners all)
    #: the ``fix`` mode: the runner corrects its own first result once (accuracy_cases.correction)
    correct: bool = False
    #: what that correction was, for the report: "bg@z" / "fg@z", "none" when none was needed
    corrected: str = ""
    #: the axis ``slices`` index (the ``axes`` mode paints along axis 1 or 2)
    axis: int = 0

    @property
    def tpm_only(self) -> bool:
        """Whether the forest leaves this job out: it takes every unpainted pixel of a painted
        slice as background, so a correction on another slice (``fix``) or paint covering
        part of the organ (``partial``) has no meaning to it."""
        return self.correct or self.mode in PARTIAL_MODES

    @property
    def key(self) -> str:
        # the next partner keeps the key it always had, so cached forests stay valid
        tail = f"|{self.support}" if self.extra_partner else ""
        return f"{self.mode}|{'+'.join(self.organs)}{tail}"


def _middle_slice_jobs(
    labels: np.ndarray,
    case: ac.CaseSpec,
    present: list[str],
    kinds: tuple[str, ...],
    paint2d: Callable[[np.ndarray, str, int], np.ndarray],
) -> list[Job]:
    """One job per kind and organ (mode ``same-<kind>``): the organ's middle slice painted by
    ``paint2d(its mask there, kind, the organ's number in present)``."""
    jobs = []
    for kind in kinds:
        for number, organ in enumerate(present):
            truth = labels == case.values[organ]
            zs = ac.organ_slices(truth, 1)
            paint = np.zeros(truth.shape, np.uint8)
            for z in zs:
                paint[z][paint2d(truth[z], kind, number)] = 1
            jobs.append(Job(f"same-{kind}", (organ,), paint, case.name, zs))
    return jobs


def build_jobs(
    case: ac.CaseSpec,
    labels: np.ndarray,
    modes: list[str],
    organs: list[str],
    slice_counts: list[int],
    data: Path = ac.DATA,
    every_partner: bool = False,
    ends: dict[str, float] = ENDS,
    spacing_hw: tuple[float, float] = (1.0, 1.0),
    cross_counts: tuple[int, ...] = (1,),
) -> list[Job]:
    """Every support to run on ``case``; organs absent from the query are left out.

    ``every_partner``: the cross modes take each other volume of the group in turn. ``ends``:
    the ``ends`` mode's paint positions, mode name -> fraction (:func:`ends_modes`).
    ``spacing_hw``: the query's in-plane pixel size (mm), for the ``rough`` and ``partial``
    modes' paint.
    ``cross_counts``: the ``cross`` mode's painted slice counts (as ``slice_counts`` for
    ``same``; 2 and 3 are the modes ``cross-2sl`` and ``cross-3sl``).
    """
    present = [o for o in organs if o in case.values and (labels == case.values[o]).any()]
    jobs: list[Job] = []
    if "same" in modes:
        jobs += _counted_jobs("same", slice_counts, labels, case, present)
    if "ends" in modes:
        for mode, fraction in ends.items():
            for organ in present:
                truth = labels == case.values[organ]
                zs = ac.organ_slice_at(truth, fraction)
                jobs.append(Job(mode, (organ,), ac.organ_paint(truth, zs), case.name, zs))
    if "near" in modes:
        # a user paints a slice near the middle, seldom the middle one itself
        for mode, step in NEAR.items():
            for organ in present:
                truth = labels == case.values[organ]
                z = ac.organ_slices(truth, 1)[0] + step
                if 0 <= z < truth.shape[0] and truth[z].any():
                    jobs.append(Job(mode, (organ,), ac.organ_paint(truth, [z]), case.name, [z]))
    if "rough" in modes:
        # the middle slice painted imprecisely (accuracy_cases.rough_paint): users' paint is
        # never the exact outline the other modes paint
        jobs += _middle_slice_jobs(
            labels,
            case,
            present,
            ac.ROUGH_KINDS,
            lambda mask, kind, number: ac.rough_paint(mask, spacing_hw, kind, seed=number),
        )
    if "partial" in modes:
        # the middle slice marked without outlining the organ (accuracy_cases.partial_paint)
        jobs += _middle_slice_jobs(
            labels,
            case,
            present,
            ac.PARTIAL_KINDS,
            lambda mask, kind, number: ac.partial_paint(mask, spacing_hw, kind),
        )
    if {"cross", "cross-multi"} & set(modes):
        for rank, partner in enumerate(ac.cross_partners(case, data, every_partner)):
            jobs += _cross_jobs(case, partner, rank > 0, modes, present, organs, cross_counts)
    if "multi" in modes and present:
        job = _multi_job("multi", labels, case, present, organs)
        if job is not None:
            jobs.append(job)
    if "fix" in modes:
        # the middle slice, then one correction of the result's worst error (TPM only: the
        # forest labels every unpainted pixel of a painted slice background, so a stroke on
        # another slice has no meaning to it)
        for organ in present:
            truth = labels == case.values[organ]
            zs = ac.organ_slices(truth, 1)
            paint = ac.organ_paint(truth, zs)
            jobs.append(Job("same-fix1", (organ,), paint, case.name, zs, correct=True))
    if "axes" in modes:
        # the middle slice along another axis: a user painting in a coronal or sagittal view
        for mode, axis in AXES.items():
            for organ in present:
                turned = np.moveaxis(labels == case.values[organ], axis, 0)
                zs = ac.organ_slices(turned, 1)
                paint = np.moveaxis(ac.organ_paint(turned, zs), 0, axis)
                jobs.append(Job(mode, (organ,), paint, case.name, zs, axis=axis))
    if "alone" in modes and present:
        # each organ by itself on the multi mode's slice: what "multi" must not lose to
        z = ac.multi_slice(labels, case.values)
        for organ in (o for o in present if o in ac.ORGANS):
            truth = labels == case.values[organ]
            if truth[z].any():
                jobs.append(Job("alone", (organ,), ac.organ_paint(truth, [z]), case.name, [z]))
    return jobs


def _cross_jobs(
    case: ac.CaseSpec,
    partner: ac.CaseSpec,
    extra: bool,
    modes: list[str],
    present: list[str],
    organs: list[str],
    counts: tuple[int, ...] = (1,),
) -> list[Job]:
    """Both cross modes' supports from ``partner``, read once in the query's axes (as the CLI
    reads another volume); ``counts``: the cross mode's painted slice counts."""
    pimg, plab, pspacing = partner.load(like=case)
    jobs: list[Job] = []
    if "cross" in modes:
        for job in _counted_jobs("cross", counts, plab, partner, present):
            job.image, job.spacing, job.extra_partner = pimg, pspacing, extra
            jobs.append(job)
    if "cross-multi" in modes and present:
        job = _multi_job("cross-multi", plab, partner, present, organs)
        if job is not None:
            job.image, job.spacing, job.extra_partner = pimg, pspacing, extra
            jobs.append(job)
    return jobs


def _counted_jobs(
    mode: str,
    counts: list[int] | tuple[int, ...],
    labels: np.ndarray,
    painted: ac.CaseSpec,
    present: list[str],
) -> list[Job]:
    """Each organ of ``present`` painted on ``painted`` (``labels`` are its labels) on 1, 2 or
    3 slices (:func:`accuracy_cases.organ_slices`), one mode per count: ``mode``, then
    ``mode-2sl`` and ``mode-3sl``. An organ ``painted`` lacks is left out."""
    jobs: list[Job] = []
    for n in sorted(set(counts)):
        name = mode if n == 1 else f"{mode}-{n}sl"
        for organ in present:
            truth = labels == painted.values[organ]
            zs = ac.organ_slices(truth, n)
            if zs:
                jobs.append(Job(name, (organ,), ac.organ_paint(truth, zs), painted.name, zs))
    return jobs


def _multi_job(
    mode: str,
    labels: np.ndarray,
    painted: ac.CaseSpec,
    present: list[str],
    organs: list[str],
) -> Job | None:
    """All organs on ``painted``'s multi slice (``labels`` are its labels); None: none scored."""
    z = ac.multi_slice(labels, painted.values)
    paint = ac.multi_paint(labels, painted.values, z)
    shown = tuple(o for k, o in enumerate(ac.ORGANS, 1) if (paint == k).any())
    # renumber 1..len(shown) in ORGANS order so that paint value k means shown[k - 1]
    renum = np.zeros(len(ac.ORGANS) + 1, np.uint8)
    for k, o in enumerate(ac.ORGANS, 1):
        if o in shown:
            renum[k] = shown.index(o) + 1
    if not any(o in present and o in organs for o in shown):
        return None
    return Job(mode, shown, renum[paint], painted.name, [z])
