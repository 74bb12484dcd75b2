"""The pseudo-paint of a first result, and the session's second pass from it."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from napari_tpm.bootstrap import (
    FIT_MARGIN,
    count_floor_prior,
    fitting_pseudo_paint,
    pseudo_paint,
)
from napari_tpm.footprint import Footprint, footprints
from napari_tpm.options import SegmentOptions
from napari_tpm.phantom import make_phantom
from napari_tpm.session import SegmentationSession

SHAPE = (24, 96, 96)


def test_widest_slice_and_its_most_confident_piece():
    labels = np.zeros((5, 20, 20), np.uint8)
    labels[1, 2:6, 2:6] = 1  # 16 px
    labels[3, 2:8, 2:8] = 1  # 36 px, the widest slice: two pieces there
    labels[3, 12:19, 12:19] = 1  # 49 px, the larger piece but less confident
    score = np.zeros(labels.shape, np.float32)
    score[3, 2:8, 2:8] = 5.0
    score[3, 12:19, 12:19] = 1.0
    paint = pseudo_paint(labels, score, (1,))
    assert paint is not None
    assert np.flatnonzero(paint.any(axis=(1, 2))).tolist() == [3]
    assert (paint[3] == 1).sum() == 36 and paint[3, 2:8, 2:8].all()


def test_a_class_caught_at_its_pole_on_the_shared_slice_gets_its_widest_slice():
    labels = np.zeros((6, 24, 24), np.uint8)
    labels[1:5, 2:10, 2:10] = 1  # 64 px on slices 1-4
    labels[1, 12:18, 12:18] = 2  # 36 px: class 2's widest slice
    labels[2, 13:17, 13:17] = 2
    labels[3, 14:16, 14:16] = 2  # 4 px: its pole, on the slice that shows the most classes
    labels[3, 18:23, 2:7] = 3  # class 3 only there
    score = np.ones(labels.shape, np.float32)
    paint = pseudo_paint(labels, score, (1, 2, 3))
    assert paint is not None
    assert np.flatnonzero(paint.any(axis=(1, 2))).tolist() == [1, 3]
    # the shared slice without the pole's cap; the widest slice with every class it shows
    assert sorted(np.unique(paint[3]).tolist()) == [0, 1, 3]
    assert sorted(np.unique(paint[1]).tolist()) == [0, 1, 2]
    assert (paint[1] == 2).sum() == 36 and (paint[1] == 1).sum() == 64
    # at half its widest section a class stays on the shared slice alone
    labels[3, 14:17, 14:20] = 2  # 18 px = half of 36
    paint = pseudo_paint(labels, score, (1, 2, 3))
    assert paint is not None
    assert np.flatnonzero(paint.any(axis=(1, 2))).tolist() == [3]
    assert sorted(np.unique(paint[3]).tolist()) == [0, 1, 2, 3]


def _kidney_into_spleen() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A first result that ran from a small organ (slices 2-5, left of the body's middle) into a
    larger look-alike above it (slices 6-11, at the body's edge), and its image."""
    image = np.zeros((14, 64, 64), np.float32)
    image[:, 4:60, 4:60] = 1.0  # the body
    labels = np.zeros(image.shape, np.uint8)
    labels[2:6, 36:46, 20:30] = 1  # the organ: 100 px per slice
    labels[6:12, 30:56, 34:58] = 1  # the look-alike: 624 px per slice, the widest slices
    labels[6, 36:46, 28:36] = 1  # where they touch
    return image, labels, np.ones(image.shape, np.float32)


def _paint_target(image: np.ndarray, labels: np.ndarray) -> Footprint:
    paint = np.zeros(labels.shape, np.uint8)
    paint[4, 36:46, 20:30] = 1  # the organ's own section, painted at the same place
    return footprints(paint, image, (1,), 1.0)[1]


def test_the_second_pass_starts_from_the_piece_that_fits_the_paint():
    image, labels, score = _kidney_into_spleen()
    target = _paint_target(image, labels)
    widest = pseudo_paint(labels, score, (1,))
    assert widest is not None and (widest[6:12] > 0).any()  # the look-alike's slice
    paint = fitting_pseudo_paint(labels, score, 1, target, image, 1.0)
    assert paint is not None
    z = np.flatnonzero(paint.any(axis=(1, 2))).tolist()
    assert len(z) == 1 and 2 <= z[0] <= 5 and paint[z[0], 36:46, 20:30].all()
    assert (paint > 0).sum() == 100


def test_a_fit_only_a_little_better_keeps_the_widest_slice():
    image, labels, score = _kidney_into_spleen()
    target = _paint_target(image, labels)
    widest = pseudo_paint(labels, score, (1,))
    # a margin no piece clears: the widest slice's piece, as pseudo_paint gives it
    kept = fitting_pseudo_paint(labels, score, 1, target, image, 1.0, margin=100.0)
    assert kept is not None and widest is not None and np.array_equal(kept, widest)
    assert FIT_MARGIN < 100.0


def test_several_classes_or_a_matched_ct_slice_keep_the_widest_slice():
    image, labels, score = _kidney_into_spleen()
    widest = pseudo_paint(labels, score, (1,))
    for target in (
        replace(_paint_target(image, labels), widest=False),  # several classes on the slice
        replace(_paint_target(image, labels), matched=True),  # a CT's slice matched into this
    ):
        kept = fitting_pseudo_paint(labels, score, 1, target, image, 1.0)
        assert np.array_equal(kept, widest)
    assert fitting_pseudo_paint(np.zeros_like(labels), score, 1, target, image, 1.0) is None


def test_classes_share_the_slice_that_shows_most_of_them():
    labels = np.zeros((6, 20, 20), np.uint8)
    labels[0:4, 2:8, 2:8] = 1
    labels[1, 2:9, 2:9] = 1  # class 1 alone is widest on slice 1 (the shared slices show
    # 36 of its 49 px: over half, so it stays there; see the test above for a pole's cap)
    labels[2:5, 12:16, 12:16] = 2  # class 2 on slices 2-4
    labels[5, 10:18, 10:18] = 3  # class 3 only on slice 5
    paint = pseudo_paint(labels, np.ones(labels.shape, np.float32), (1, 2, 3))
    assert paint is not None
    # slices 2 and 3 both show two classes; equal areas there, the later one wins the tie
    z = int(np.flatnonzero((paint == 1).any(axis=(1, 2)))[0])
    assert z in (2, 3) and (paint[z] == 2).any()
    assert np.flatnonzero((paint == 3).any(axis=(1, 2))).tolist() == [5]
    for v in (1, 2, 3):  # painted where the first result has that class, nowhere else
        assert ((paint == v) <= (labels == v)).all()


def test_nothing_found_gives_none_and_shapes_are_checked():
    labels = np.zeros((3, 8, 8), np.uint8)
    assert pseudo_paint(labels, np.zeros(labels.shape), (1,)) is None
    with pytest.raises(ValueError, match="3D shape"):
        pseudo_paint(labels, np.zeros((3, 8, 9)), (1,))


def _liver_painted_on_another_phantom():
    """(query, other, paint): the liver painted on the other phantom's middle liver slice."""
    query = make_phantom(shape=SHAPE, seed=3)
    other = make_phantom(shape=SHAPE, seed=11)
    zs = np.flatnonzero((other.labels == 5).any(axis=(1, 2)))
    paint = np.zeros(SHAPE, np.uint8)
    z = int(zs[len(zs) // 2])
    paint[z][other.labels[z] == 5] = 5
    return query, other, paint


@pytest.mark.parametrize("bootstrap", [True, False])
def test_session_second_pass_from_another_volumes_paint(bootstrap):
    query, other, paint = _liver_painted_on_another_phantom()
    session = SegmentationSession(
        "filterbank",
        device="cpu",
        options=SegmentOptions(bootstrap=bootstrap, contrast_search=False),
    )
    session.set_image(query.image, query.spacing)
    stages = [p.stage for p in session.segment(paint, support_image=other.image)]
    assert session.bootstrapped is bootstrap
    s = session._require_support()
    assert s.same_volume is bootstrap  # the second pass's support is on the query itself
    assert stages.count("support") == (2 if bootstrap else 1)
    assert session.label_values == (5,)
    # the first pass (another volume's paint) refines; the second pass (pseudo-paint on this
    # volume) does not, though ``refine`` is on for paint on this volume
    assert session.options.refine > 0 and session.options.refine_atlas > 0
    assert stages.count("refine") == 1
    result = session.labels(None)
    truth = query.labels == 5
    assert 2 * (result.astype(bool) & truth).sum() / (result.astype(bool).sum() + truth.sum()) > 0.5
    if bootstrap:  # the pseudo-paint is part of the first result, on one slice of the query
        assert len(s.indices) == 1
        # ... and not the user's paint: the prior moves its slice too (nothing is frozen)
        z = s.indices[0]
        painted = int((s.masks_native[z] > 0).sum())
        strict = np.take(session.labels(1e-4), z, axis=s.axis)
        assert painted > 0 and (strict > 0).sum() < painted
    # the boundary moves out by CORE_LOGIT_SHIFT after a second pass (the pseudo-paint is a
    # core of the first result), and only then
    from napari_tpm import bootstrap as bs

    calibrated = session._calibrated_prior()
    logit = np.log(calibrated / (1 - calibrated)) + (bs.CORE_LOGIT_SHIFT if bootstrap else 0.0)
    assert session.auto_prior() == pytest.approx(1 / (1 + np.exp(-logit)))
    assert np.array_equal(result, session.labels(session.auto_prior()))
    if bootstrap:
        assert bs.CORE_LOGIT_SHIFT > 0
        assert (result > 0).sum() >= (session.labels(calibrated) > 0).sum()


def test_set_prototypes_after_a_second_pass_does_not_refine_its_pseudo_paint():
    query, other, paint = _liver_painted_on_another_phantom()
    session = SegmentationSession(
        "filterbank", device="cpu", options=SegmentOptions(contrast_search=False)
    )
    session.set_image(query.image, query.spacing)
    for _ in session.segment(paint, support_image=other.image):
        pass
    assert session.bootstrapped
    session.refine_trace = []
    session.set_prototypes(2)
    assert session.refine_trace == []
    # paint on this volume itself is refined (the default ``refine``), also after a new K
    for _ in session.segment(paint):
        pass
    assert not session.bootstrapped and session.refine_trace
    session.refine_trace = []
    session.set_prototypes(1)
    assert session.refine_trace


def _left_kidney_dice(folder, pattern: str, query: str, support: str, kind: str) -> float:
    """Dice of the left kidney (label 3 in both datasets) of volume ``query`` of ``folder``,
    segmented with the filter bank from its section painted on volume ``support``;
    ``pattern.format(id, kind or "label")`` names the files."""
    from session_helpers import section_paint, segment_labels

    from napari_tpm.io import read_volume

    image = read_volume(folder / f"{pattern.format(query, kind)}.nii.gz")
    truth = read_volume(folder / f"{pattern.format(query, 'label')}.nii.gz").array == 3
    atlas = read_volume(folder / f"{pattern.format(support, kind)}.nii.gz")
    other = read_volume(folder / f"{pattern.format(support, 'label')}.nii.gz").array == 3
    found = segment_labels(image, section_paint(other, 3), SegmentOptions(), atlas=atlas) == 3
    return float(2 * (found & truth).sum() / (found.sum() + truth.sum()))


def test_real_mr_kidney_merged_with_the_spleen(shared_data, monkeypatch):
    """CHAOS 31's left kidney from CHAOS 21's paint (T2 MR, tuning volumes): the first result
    runs from the kidney into the spleen, whose widest slice is the spleen's. Started from
    the piece that fits the paint, the second pass finds the kidney (Dice 0.82); started from
    the widest slice, it found the kidney and the spleen together (0.48)."""
    from napari_tpm import _session_contrast

    fitted = _left_kidney_dice(shared_data / "chaos_t2spir", "chaos_t2_{}_{}", "31", "21", "mr")
    widest = partial(_session_contrast.fitting_pseudo_paint, margin=np.inf)
    monkeypatch.setattr(_session_contrast, "fitting_pseudo_paint", widest)
    plain = _left_kidney_dice(shared_data / "chaos_t2spir", "chaos_t2_{}_{}", "31", "21", "mr")
    assert fitted > 0.75 and fitted > plain + 0.2, (fitted, plain)


def test_the_first_pass_boundary_drops_until_an_organ_sized_region_passes():
    rng = np.random.default_rng(0)
    score = rng.normal(-12.0, 1.0, (40, 64, 64)).astype(np.float32)
    score[10:30, 20:30, 20:30] = rng.normal(-3.0, 0.5, (20, 10, 10))  # the organ: best, < 0
    # a 100 mm2 section (100 px of 1 mm2) over a radius of 5.6 mm on 1 mm slices: 564 voxels
    p = count_floor_prior(score, 0.5, 100.0, 1.0, 1.0)
    assert p > 0.5
    passing = score > -np.log(p / (1 - p))
    assert abs(int(passing.sum()) - 564) <= 1
    assert passing[10:30, 20:30, 20:30].sum() == passing.sum()  # all of it the organ
    # a first pass that found enough keeps its prior, and so does one that found a core
    assert count_floor_prior(score + 20.0, 0.5, 100.0, 1.0, 1.0) == 0.5
    core = score.copy()
    core[18:20, 22:28, 22:28] = 1.0  # 72 voxels pass: more than FLOOR_TRIGGER of 564
    assert count_floor_prior(core, 0.5, 100.0, 1.0, 1.0) == 0.5
    assert count_floor_prior(score, 0.9, 1e9, 1.0, 1.0) == 0.9  # more than the volume holds
    with pytest.raises(ValueError):
        count_floor_prior(score, 1.0, 100.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        count_floor_prior(score, 0.5, 100.0, 0.0, 1.0)


def test_real_ct_kidney_that_scores_low_in_another_patient(shared_data, monkeypatch):
    """BTCV 20's left kidney from BTCV 19's paint (tuning volumes): the kidney is the
    best-scoring tissue, yet all of it lies below the support's boundary, so the first pass
    found nothing (Dice 0.00). With the boundary lowered until a region of the organ's size
    passes, it is found (0.72)."""
    from napari_tpm import bootstrap

    floored = _left_kidney_dice(shared_data / "sabs_ct", "sabs_{}_{}", "20", "19", "ct")
    monkeypatch.setattr(bootstrap, "count_floor_prior", lambda score, prior, *a: prior)
    plain = _left_kidney_dice(shared_data / "sabs_ct", "sabs_{}_{}", "20", "19", "ct")
    assert floored > 0.6 and plain < 0.2, (floored, plain)
