"""Cases, splits, cross-patient pairs and painted supports of the accuracy benchmark.

Kept apart from ``bench_accuracy.py`` so that the TPM runner and the random-forest anchor build
their supports from exactly the same code: the two methods must always see the same paint.

Every volume is read with ``napari_tpm.io.read_volume`` (the reader the CLI and the plugin use),
so axis 0 of the array is the axial slice axis the user paints on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

#: the four target organs, in table column order.
ORGANS: tuple[str, ...] = ("liver", "rkidney", "lkidney", "spleen")
#: other labelled structures a user paints too (``--organs``; never in ``multi`` modes, which
#: paint the four target organs): small, tubular or with a changing content, unlike the four.
#: CHAOS labels none of them.
OTHER_ORGANS: tuple[str, ...] = ("gallbladder", "stomach", "pancreas", "aorta", "ivc")
ALL_ORGANS: tuple[str, ...] = ORGANS + OTHER_ORGANS
#: label value of each structure per label map (shared/data/README.md and each SOURCES.md).
_BTCV = {"liver": 1, "rkidney": 2, "lkidney": 3, "spleen": 4}
_BTCV_OTHER = {"gallbladder": 5, "stomach": 7, "aorta": 8, "ivc": 9, "pancreas": 11}
_TS = {"liver": 5, "rkidney": 2, "lkidney": 3, "spleen": 1}
_TS_CT_OTHER = {"gallbladder": 4, "stomach": 6, "pancreas": 7, "aorta": 52, "ivc": 63}
_TS_MR_OTHER = {"gallbladder": 4, "stomach": 6, "pancreas": 7, "aorta": 23, "ivc": 24}
_AMOS = {"liver": 6, "rkidney": 2, "lkidney": 3, "spleen": 1}
_AMOS_OTHER = {"gallbladder": 4, "stomach": 7, "aorta": 8, "ivc": 9, "pancreas": 10}

#: Set names in table order. The TotalSegmentator files are split by modality: a cross-patient
#: support must come from a scan of the same kind, and its one MR has no partner.
SETS: tuple[str, ...] = ("sabs_ct", "chaos_t2spir", "ts_ct", "ts_mr", "amos_slabs")

#: Fixed tuning / held-out split. Tune on TUNE only; report HOLDOUT. The silver-label
#: TotalSegmentator scans and the AMOS slabs are never tuned on.
SABS_TUNE = (15, 16, 17, 18, 19, 20, 21)
SABS_HOLDOUT = (22, 23, 24, 25, 26, 27, 28, 29)
CHAOS_TUNE = (21, 22, 31, 32, 33)
CHAOS_HOLDOUT = (34, 36, 37, 38, 39)
SPLITS = ("tune", "holdout", "all")


@dataclass(frozen=True)
class CaseSpec:
    """One labelled volume: its set, its split group and its two files."""

    name: str
    set: str
    split: str  # "tune" or "holdout"
    image: Path
    label: Path
    values: dict[str, int]

    def load(
        self, like: CaseSpec | None = None
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
        """(image, integer labels, spacing) as the product's reader returns them.

        ``like``: the query this volume paints for; its arrays are then reordered to the
        query's axes, as ``python -m napari_tpm.segment --support-image`` does.
        """
        from napari_tpm.io import read_volume

        img = read_volume(self.image)
        lab = read_volume(self.label)
        if like is not None:
            from napari_tpm.io import Volume
            from napari_tpm.orientation import support_like

            # support_like reads only the query's direction
            query = Volume(np.zeros((1, 1, 1), np.uint8), direction=_direction(like.image))
            img, lab, _ = support_like(img, lab, query)
        labels = np.asarray(lab.array)
        if not np.issubdtype(labels.dtype, np.integer):
            labels = np.rint(labels).astype(np.int32)
        if labels.shape != img.array.shape:
            raise ValueError(f"{self.name}: image {img.array.shape} != labels {labels.shape}")
        return np.asarray(img.array), labels, tuple(float(s) for s in img.spacing)


@functools.lru_cache(maxsize=64)
def _direction(image: Path) -> tuple[float, ...]:
    """The direction cosines of a query image, read once: with ``--partners all`` every other
    volume of the group is reordered to the same query's axes."""
    from napari_tpm.io import read_volume

    return read_volume(image).direction


def all_cases(data: Path = DATA) -> list[CaseSpec]:
    """Every labelled development volume under ``data``, grouped by set, in a fixed order."""
    cases = []
    for group, ids in (("tune", SABS_TUNE), ("holdout", SABS_HOLDOUT)):
        for i in ids:
            cases.append(
                CaseSpec(
                    f"sabs_{i}",
                    "sabs_ct",
                    group,
                    data / f"sabs_ct/sabs_{i}_ct.nii.gz",
                    data / f"sabs_ct/sabs_{i}_label.nii.gz",
                    _BTCV | _BTCV_OTHER,
                )
            )
    for group, ids in (("tune", CHAOS_TUNE), ("holdout", CHAOS_HOLDOUT)):
        for i in ids:
            cases.append(
                CaseSpec(
                    f"chaos_{i}",
                    "chaos_t2spir",
                    group,
                    data / f"chaos_t2spir/chaos_t2_{i}_mr.nii.gz",
                    data / f"chaos_t2spir/chaos_t2_{i}_label.nii.gz",
                    _BTCV,
                )
            )
    ts = data / "totalsegmentator"
    cases += [
        CaseSpec(
            "ts_ct_full_3mm",
            "ts_ct",
            "holdout",
            ts / "ts_ct_full_3mm_ct.nii.gz",
            ts / "ts_ct_full_3mm_label_totalseg_fast.nii.gz",
            _TS | _TS_CT_OTHER,
        ),
        CaseSpec(
            "ts_dicom_ct",
            "ts_ct",
            "holdout",
            ts / "ts_dicom_ct.nii.gz",
            ts / "ts_dicom_ct_label_totalseg.nii.gz",
            _TS | _TS_CT_OTHER,
        ),
        CaseSpec(
            "ts_mr_3mm",
            "ts_mr",
            "holdout",
            ts / "ts_mr_3mm_mr.nii.gz",
            ts / "ts_mr_3mm_label_totalseg_mr.nii.gz",
            _TS | _TS_MR_OTHER,
        ),
    ]
    for i in ("0001", "0013"):
        cases.append(
            CaseSpec(
                f"amos_{i}",
                "amos_slabs",
                "holdout",
                data / f"amos_slabs/amos_{i}_slab_ct.nii.gz",
                data / f"amos_slabs/amos_{i}_slab_label.nii.gz",
                _AMOS | _AMOS_OTHER,
            )
        )
    return cases


def select_cases(
    split: str, sets: list[str] | None = None, limit: int | None = None, data: Path = DATA
) -> list[CaseSpec]:
    """Cases of ``split`` ("tune", "holdout" or "all") in ``sets``; ``limit`` per set."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out, per_set = [], {}
    for case in all_cases(data):
        if sets and case.set not in sets:
            continue
        if split != "all" and case.split != split:
            continue
        if limit is not None and per_set.get(case.set, 0) >= limit:
            continue
        per_set[case.set] = per_set.get(case.set, 0) + 1
        out.append(case)
    return out


def cross_partner(case: CaseSpec, data: Path = DATA) -> CaseSpec | None:
    """The support volume for ``case`` in cross mode: the next one of its set and split group.

    The cycle stays inside the split group so that a held-out query never borrows a tuning
    patient's paint (and the pairs do not change with ``--split`` or ``--limit``).
    """
    partners = cross_partners(case, data)
    return partners[0] if partners else None


def cross_partners(case: CaseSpec, data: Path = DATA, every: bool = False) -> list[CaseSpec]:
    """:func:`cross_partner` as a list; ``every``: all other volumes of the group, the next
    one first and then on round the cycle.

    One partner per query gives 5-8 pairs per set, too few to tune on: on the BTCV tuning
    volumes their kidneys scored 0.71 cross-patient, all 42 ordered pairs 0.60
    (benchmarks/RESULTS-accuracy.md, "Every ordered pair").
    """
    group = [c for c in all_cases(data) if c.set == case.set and c.split == case.split]
    if len(group) < 2:
        return []
    i = [c.name for c in group].index(case.name)
    ring = [group[(i + j) % len(group)] for j in range(1, len(group))]
    return ring if every else ring[:1]


# ------------------------------------------------------------------------------ supports
def organ_slices(truth: np.ndarray, count: int) -> list[int]:
    """Axial slices painted for ``count`` = 1, 2 or 3 (duplicates removed for tiny organs).

    1 = the organ's middle labelled slice (index ``n // 2`` of its labelled slices, the
    paper's choice); 2 adds the slice at three quarters of that list (higher index); 3 also
    adds the one at one quarter (lower index).
    """
    zs = np.flatnonzero(truth.any(axis=(1, 2)))
    if zs.size == 0:
        return []
    n = zs.size
    picks = [int(zs[n // 2]), int(zs[(3 * n) // 4]), int(zs[n // 4])][: max(count, 1)]
    return list(dict.fromkeys(picks))


def organ_slice_at(truth: np.ndarray, fraction: float) -> list[int]:
    """The one axial slice at ``fraction`` (0 first, 1 last) of the organ's labelled slices:
    paint near an end of the organ (the ``ends`` mode), where users also paint."""
    zs = np.flatnonzero(truth.any(axis=(1, 2)))
    if zs.size == 0:
        return []
    return [int(zs[round(fraction * (zs.size - 1))])]


def organ_paint(truth: np.ndarray, slices: list[int]) -> np.ndarray:
    """uint8 volume: 1 where the organ is on the painted slices, 0 elsewhere."""
    paint = np.zeros(truth.shape, np.uint8)
    for z in slices:
        paint[z][truth[z]] = 1
    return paint


#: how far (mm) the ``rough`` mode's paint misses the organ's outline: about a brush's edge
ROUGH_MM = 2.5
#: the ``rough`` mode's three kinds of imprecise paint (see :func:`rough_paint`)
ROUGH_KINDS: tuple[str, ...] = ("grown", "shrunk", "jitter")


def rough_paint(
    mask: np.ndarray, spacing_hw: tuple[float, float], kind: str, seed: int = 0
) -> np.ndarray:
    """One slice's organ mask as an imprecise painter outlines it (2D boolean).

    ``grown``: every pixel within :data:`ROUGH_MM` of the organ (the brush spills over its
    edge); ``shrunk``: only pixels deeper than that inside it (a careful painter keeps off the
    edge); ``jitter``: the outline moved in and out by up to about that much along its length
    (a smooth random field, seeded, 10 mm across, half that much on average). A paint that
    would keep under a quarter of the organ keeps the organ's mask instead (a tiny section
    cannot be shrunk so far).
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if kind not in ROUGH_KINDS:
        raise ValueError(f"kind must be one of {ROUGH_KINDS}, got {kind!r}")
    pad = np.pad(mask, 1)
    inside = ndimage.distance_transform_edt(pad, sampling=spacing_hw)[1:-1, 1:-1]
    outside = ndimage.distance_transform_edt(~pad, sampling=spacing_hw)[1:-1, 1:-1]
    signed = np.where(mask, inside, -outside)  # mm, positive inside the organ
    if kind == "grown":
        out = signed >= -ROUGH_MM
    elif kind == "shrunk":
        out = signed > ROUGH_MM
    else:
        rng = np.random.default_rng(seed)
        field = ndimage.gaussian_filter(
            rng.standard_normal(mask.shape), [10.0 / sp for sp in spacing_hw]
        )
        # a standard deviation of half the distance, clipped at the whole of it
        field *= 0.5 * ROUGH_MM / max(float(field.std()), 1e-12)
        field = np.clip(field, -ROUGH_MM, ROUGH_MM)
        out = signed + field > 0
    return out if out.sum() >= 0.25 * mask.sum() else mask


#: the ``partial`` mode's three kinds of paint covering part of the organ (:func:`partial_paint`)
PARTIAL_KINDS: tuple[str, ...] = ("stroke", "line", "dab")
#: how far (mm) inside the organ's edge a partial paint keeps, and its brush's radius
PARTIAL_INSET_MM = 3.0
PARTIAL_BRUSH_MM = 1.5
#: the ``dab``'s radius (mm): one press of a wide brush (less where the organ is thinner)
DAB_MM = 8.0


def partial_paint(mask: np.ndarray, spacing_hw: tuple[float, float], kind: str) -> np.ndarray:
    """Paint inside one slice's organ ``mask`` that covers only part of it (2D boolean), as a
    user marks an organ without outlining it.

    ``stroke``: a brush of :data:`PARTIAL_BRUSH_MM` along the middle line (skeleton) of the
    organ kept :data:`PARTIAL_INSET_MM` inside its edge; ``line``: the same brush along one
    straight stroke through the organ's centre on its long axis, kept inside that inset;
    ``dab``: a disc of :data:`DAB_MM` (at most 0.7 of the organ's inscribed radius) at its
    deepest point. Every kind stays within the organ.
    """
    from scipy import ndimage
    from skimage.draw import line
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, dtype=bool)
    if kind not in PARTIAL_KINDS:
        raise ValueError(f"kind must be one of {PARTIAL_KINDS}, got {kind!r}")
    sp = np.asarray(spacing_hw, dtype=float)
    inside = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=sp)[1:-1, 1:-1]
    core = inside > PARTIAL_INSET_MM
    if core.sum() < 10:  # too thin to keep off its edge
        core = mask
    if kind == "dab":
        seed = np.zeros_like(mask)
        seed[np.unravel_index(np.argmax(inside), mask.shape)] = True
        radius = min(DAB_MM, 0.7 * float(inside.max()))
        return (ndimage.distance_transform_edt(~seed, sampling=sp) <= radius) & mask
    if kind == "stroke":
        centre = skeletonize(core)
    else:
        yy, xx = np.nonzero(core)
        pts = np.stack([yy * sp[0], xx * sp[1]], axis=1)
        mid = pts.mean(axis=0)
        axis = np.linalg.eigh((pts - mid).T @ (pts - mid))[1][:, -1]
        along = (pts - mid) @ axis
        a, b = (mid + along.min() * axis) / sp, (mid + along.max() * axis) / sp
        rr, cc = line(*(round(float(v)) for v in (a[0], a[1], b[0], b[1])))
        keep = (rr >= 0) & (rr < mask.shape[0]) & (cc >= 0) & (cc < mask.shape[1])
        centre = np.zeros_like(mask)
        centre[rr[keep], cc[keep]] = True
        centre &= core
    return (ndimage.distance_transform_edt(~centre, sampling=sp) <= PARTIAL_BRUSH_MM) & mask


#: the ``fix`` mode corrects a result only when its worst error holds at least this share of the
#: organ's voxels (a user leaves a nearly right result alone)
FIX_MIN_SHARE = 0.05
#: the ``fix`` mode's background stroke keeps this far (mm) from the organ, as a user's would
FIX_CLEAR_MM = 3.0


def correction(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[str, int, np.ndarray] | None:
    """The one action a user takes on a result's worst error (the ``fix`` mode's paint).

    When the wrongly included voxels outnumber the missed ones: a background stroke along the
    middle line (skeleton) of the largest wrongly included 3D region, on its widest slice,
    keeping :data:`FIX_CLEAR_MM` from the organ (``("bg", z, stroke)``). Otherwise: the
    organ's outline on the slice missing most of it (``("fg", z, section)``). None when
    neither error reaches :data:`FIX_MIN_SHARE` of the organ, or a leak lies too close to
    the organ to stroke.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    wrong, missed = pred & ~truth, truth & ~pred
    if max(int(wrong.sum()), int(missed.sum())) < FIX_MIN_SHARE * truth.sum():
        return None
    if wrong.sum() >= missed.sum():
        parts, _ = ndimage.label(wrong, structure=np.ones((3, 3, 3), bool))
        largest = parts == 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))
        z = int(np.argmax(largest.sum(axis=(1, 2))))
        clear = ndimage.distance_transform_edt(~truth[z], sampling=spacing[1:]) >= FIX_CLEAR_MM
        stroke = skeletonize(largest[z]) & clear
        return ("bg", z, stroke) if stroke.any() else None
    z = int(np.argmax(missed.sum(axis=(1, 2))))
    return ("fg", z, truth[z].copy())


def multi_slice(labels: np.ndarray, values: dict[str, int]) -> int:
    """The slice painted in ``multi`` mode: most of the four organs shown, then largest area.

    Taking the slice of largest summed area alone tends to pick a liver-dominated slice without
    kidneys; preferring the slice that shows the most organs measures as many of them as
    possible from one slice, which is what a user painting "everything here" would choose.
    """
    four = [values[o] for o in ORGANS]  # the other structures never choose the slice
    present = np.stack([(labels == v).any(axis=(1, 2)) for v in four]).sum(0)
    area = np.isin(labels, four).sum(axis=(1, 2))
    order = np.lexsort((-np.arange(labels.shape[0]), area, present))  # last = best
    return int(order[-1])


def multi_paint(labels: np.ndarray, values: dict[str, int], z: int) -> np.ndarray:
    """Label volume with organ k (1-based, ORGANS order) painted on slice ``z`` only."""
    paint = np.zeros(labels.shape, np.uint8)
    for k, organ in enumerate(ORGANS, start=1):
        paint[z][labels[z] == values[organ]] = k
    return paint


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """3D Dice of two boolean volumes (1.0 when both are empty)."""
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return float(2 * np.logical_and(pred, truth).sum() / total)
