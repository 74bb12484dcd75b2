"""Contrast search: another volume's paint tried at several intensities, the best fit kept."""

from __future__ import annotations

import numpy as np
import pytest
from session_helpers import section_paint, segment_labels

from napari_tpm.boundary import grow_to_edge
from napari_tpm.contrast import (
    DOUBTFUL_FIT,
    UNCHANGED_BONUS,
    candidate_steps,
    describe_step,
    fit_score,
    is_unchanged,
    shift_support,
)
from napari_tpm.footprint import (
    MISSING_PENALTY,
    Footprint,
    footprint_penalty,
    footprints,
    keep_fitting_component,
)
from napari_tpm.options import SegmentOptions
from napari_tpm.phantom import make_phantom
from napari_tpm.session import SegmentationSession

SHAPE = (24, 96, 96)
LIVER = 5


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_candidates_end_with_the_unchanged_paint(modality):
    steps = candidate_steps(modality)
    assert is_unchanged(steps[-1])
    assert sum(is_unchanged(s) for s in steps) == 1
    assert len(set(steps)) == len(steps) == 5
    with pytest.raises(ValueError, match="modality"):
        candidate_steps("pet")


def test_only_the_painted_classes_change():
    image = 10 * np.arange(2 * 4 * 4, dtype=np.int16).reshape(2, 4, 4)
    paint = np.zeros(image.shape, np.uint8)
    paint[0, :2, :2] = 1
    paint[0, 3, 3] = 255  # a background stroke keeps its intensity
    out = shift_support(image, paint, (1,), ("add", 40.0))
    assert out.dtype == np.float32
    assert np.array_equal(out - image, np.where(paint == 1, 40.0, 0.0))
    scaled = shift_support(image + 1, paint, (1,), ("scale", 1.25))
    assert np.allclose(scaled, np.where(paint == 1, 1.25, 1.0) * (image + 1))
    assert describe_step(("add", 40.0)) == "+40 HU" and describe_step(("scale", 1.25)) == "x1.25"
    with pytest.raises(ValueError, match="one shape"):
        shift_support(image, paint[:, :3], (1,), ("add", 40.0))
    with pytest.raises(ValueError, match="kind"):
        shift_support(image, paint, (1,), ("gamma", 2.0))


def test_footprint_of_an_organ_in_a_body():
    image = np.zeros((5, 64, 64), np.float32)
    image[:, 8:56, 16:48] = 3.0  # the body: rows 8-55, columns 16-47
    labels = np.zeros(image.shape, np.uint8)
    labels[1, 10:14, 18:22] = 2  # small
    labels[3, 8:16, 16:24] = 2  # widest: 64 px at the body's upper left corner
    found = footprints(labels, image, (2, 7), pixel_area_mm2=0.5)
    assert set(found) == {2}  # class 7 is not there
    f = found[2]
    assert f.area_mm2 == pytest.approx(32.0)
    assert f.height == pytest.approx(0.75)
    # relative to the body's box; smoothing a step 20x the margin grows the body by 2 pixels
    assert f.position[0] == pytest.approx((2 * 11.5 - 6 - 57) / 51, abs=0.02)
    assert f.position[1] == pytest.approx((2 * 19.5 - 14 - 49) / 35, abs=0.02)
    with pytest.raises(ValueError, match="3D shape"):
        footprints(labels, image[:, :10], (2,), 1.0)


def test_fit_score_prefers_the_painted_size_place_and_height():
    painted = {1: Footprint(100.0, (0.2, -0.3), 0.5)}
    same = {1: Footprint(100.0, (0.2, -0.3), 0.5)}
    assert fit_score(painted, same, 0.9, unchanged=False) == pytest.approx(0.9)
    assert fit_score(painted, same, 0.9, unchanged=True) == pytest.approx(0.9 + UNCHANGED_BONUS)
    larger = {1: Footprint(400.0, (0.2, -0.3), 0.5)}
    moved = {1: Footprint(100.0, (0.8, -0.3), 0.5)}
    higher = {1: Footprint(100.0, (0.2, -0.3), 0.9)}
    for worse in (larger, moved, higher):
        assert fit_score(painted, worse, 0.9, False) < fit_score(painted, same, 0.9, False)
    assert fit_score(painted, {}, 1.0, False) == pytest.approx(1.0 - MISSING_PENALTY)
    with pytest.raises(ValueError, match="no painted class"):
        fit_score({}, same, 1.0, False)


def _liver_paint(other):
    zs = np.flatnonzero((other.labels == LIVER).any(axis=(1, 2)))
    paint = np.zeros(SHAPE, np.uint8)
    z = int(zs[len(zs) // 2])
    paint[z][other.labels[z] == LIVER] = LIVER
    return paint


def _dice(result, truth):
    result = result.astype(bool)
    return 2 * (result & truth).sum() / (result.sum() + truth.sum())


def test_session_undoes_another_scans_contrast_phase():
    """The other scan's liver is 80 HU brighter (a later phase): the search finds it again."""
    query = make_phantom(shape=SHAPE, seed=3)
    other = make_phantom(shape=SHAPE, seed=11)
    brighter = np.where(other.labels == LIVER, other.image + 80.0, other.image)
    paint = _liver_paint(other)
    truth = query.labels == LIVER
    results = {}
    for search in (False, True):
        session = SegmentationSession(
            "filterbank", device="cpu", options=SegmentOptions(contrast_search=search)
        )
        session.set_image(query.image, query.spacing)
        stages = [p.stage for p in session.segment(paint, support_image=brighter)]
        results[search] = _dice(session.labels(None), truth)
        if search:
            assert session.contrast_steps[LIVER][1] < 0
            # a first pass per step, a second pass for those that could still win
            n = len(candidate_steps("ct"))
            assert n < stages.count("support") <= 2 * n + 2
        else:
            assert session.contrast_steps == {}
    assert results[True] > 0.8
    assert results[True] > results[False] + 0.2


def test_paint_on_the_same_volume_runs_once():
    query = make_phantom(shape=SHAPE, seed=3)
    session = SegmentationSession("filterbank", device="cpu")
    session.set_image(query.image, query.spacing)
    stages = [p.stage for p in session.segment(_liver_paint(query))]
    assert stages.count("support") == 1 and session.contrast_steps == {}
    assert session.fit_scores == {} and session.doubtful_labels == ()


def test_a_result_far_from_where_the_paint_lies_is_doubtful():
    """The fit of the kept result is reported per label; one that does not sit where the
    paint lay (here the paint mirrored left-right over other tissue) is flagged."""
    query = make_phantom(shape=SHAPE, seed=3)
    other = make_phantom(shape=SHAPE, seed=11)
    paint = _liver_paint(other)
    fits = {}
    for name, support in (("as painted", paint), ("mirrored", paint[:, :, ::-1])):
        session = SegmentationSession("filterbank", device="cpu")
        session.set_image(query.image, query.spacing)
        for _ in session.segment(np.ascontiguousarray(support), support_image=other.image):
            pass
        assert set(session.fit_scores) == {LIVER}
        fits[name] = session.fit_scores[LIVER]
        doubtful = fits[name] < DOUBTFUL_FIT
        assert session.doubtful_labels == ((LIVER,) if doubtful else ())
    assert fits["as painted"] > DOUBTFUL_FIT > fits["mirrored"], fits
    # the next segment() starts without the last one's fits
    for _ in session.segment(_liver_paint(query)):
        pass
    assert session.fit_scores == {} and session.doubtful_labels == ()


def test_the_region_that_fits_the_paint_wins_over_the_largest():
    image = np.zeros((9, 64, 64), np.float32)
    image[:, 8:56, 8:56] = 3.0  # the body
    labels = np.zeros(image.shape, np.uint8)
    labels[1:8, 10:30, 10:30] = 1  # the largest region, upper left: a look-alike neighbour
    labels[3:6, 36:46, 40:50] = 1  # the organ: lower right, about the painted size
    labels[2:5, 40:44, 12:16] = 2  # another class, left alone
    painted = {1: Footprint(100.0, (0.45, 0.55), 0.5)}
    out = keep_fitting_component(labels, image, painted, pixel_area_mm2=1.0)
    assert (out == 1).sum() == 3 * 10 * 10 and out[4, 40, 45] == 1 and out[4, 20, 20] == 0
    assert np.array_equal(out == 2, labels == 2)
    # a paint at the upper left keeps the large region instead
    upper_left = {1: Footprint(400.0, (-0.55, -0.55), 0.5)}
    out = keep_fitting_component(labels, image, upper_left, pixel_area_mm2=1.0)
    assert out[4, 20, 20] == 1 and out[4, 40, 45] == 0


def test_the_pick_weighs_the_painted_height_over_the_painted_size():
    """A first pass finds an organ's core, often a third of the painted area, while a
    look-alike neighbour of about the painted size lies higher in the scan (the spleen above
    the left kidney): picking one region, the height counts for more than the size."""
    from napari_tpm import footprint

    image = np.zeros((20, 64, 64), np.float32)
    image[:, 8:56, 8:56] = 3.0  # the body
    labels = np.zeros(image.shape, np.uint8)
    labels[8:13, 28:35, 27:37] = 1  # the organ's core: 70 pixels at the painted height
    labels[15:20, 22:42, 27:37] = 1  # the neighbour: the painted 200 pixels, higher up
    painted = {1: Footprint(200.0, (0.0, 0.0), 0.5)}
    out = keep_fitting_component(labels, image, painted, pixel_area_mm2=1.0)
    assert out[10, 31, 31] == 1 and out[17, 31, 31] == 0
    # each region's footprint under both weightings: the contrast search's (whole results)
    # still prefers the neighbour's size
    below = np.arange(20)[:, None, None] < 14
    core = footprints(np.where(below, labels, 0), image, [1], 1.0)[1]
    neighbour = footprints(np.where(below, 0, labels), image, [1], 1.0)[1]
    assert footprint_penalty(painted[1], neighbour) < footprint_penalty(painted[1], core)
    pick = footprint.PICK_WEIGHTS
    assert footprint_penalty(painted[1], core, pick) < footprint_penalty(
        painted[1], neighbour, pick
    )


def test_a_windowed_ct_stays_ct_when_its_organ_is_darkened():
    from napari_tpm.preprocess import guess_modality

    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(40, 60, (6, 32, 32)), -125, 275).astype(np.float32)
    image[:, :8] = -125  # the window's floor: fat and air
    paint = np.zeros(image.shape, np.uint8)
    paint[3, 4:12, 4:12] = 1  # touches the floor
    assert guess_modality(image) == "ct"
    darker = shift_support(image, paint, (1,), ("add", -80.0))
    assert darker.min() == -125 and guess_modality(darker) == "ct"


def test_real_mr_kidney_from_another_patient(shared_data):
    """CHAOS 33's left kidney from CHAOS 21's paint: the largest region is a neighbour there."""
    from napari_tpm.io import read_volume

    folder = shared_data / "chaos_t2spir"
    query = read_volume(folder / "chaos_t2_33_mr.nii.gz")
    truth = read_volume(folder / "chaos_t2_33_label.nii.gz").array == 3
    atlas = read_volume(folder / "chaos_t2_21_mr.nii.gz")
    kidney = read_volume(folder / "chaos_t2_21_label.nii.gz").array == 3
    paint = section_paint(kidney, 3)
    scores = {}
    for fit in (True, False):
        found = segment_labels(query, paint, SegmentOptions(fit_component=fit), atlas=atlas)
        scores[fit] = _dice(found == 3, truth)
    assert scores[True] > 0.6 and scores[True] > scores[False] + 0.3, scores


@pytest.mark.parametrize("apart", [True, False])
def test_several_classes_from_another_scan(apart, monkeypatch):
    """Liver and spleen painted on another phantom: each found alone first, then jointly."""
    from napari_tpm import _session_contrast

    compared = []  # (paint's widest flags, result given slice by slice) per fit_score call

    def spy(target, found, *args, **kwargs):
        flags = {f.widest for f in target.values()}
        compared.append((flags, {isinstance(f, tuple) for f in found.values()}))
        return fit_score(target, found, *args, **kwargs)

    monkeypatch.setattr(_session_contrast, "fit_score", spy)
    query = make_phantom(shape=SHAPE, seed=3)
    other = make_phantom(shape=SHAPE, seed=11)
    both = np.isin(other.labels, (1, LIVER))
    z = int(np.argmax([np.unique(other.labels[i][both[i]]).size for i in range(SHAPE[0])]))
    paint = np.where(both[z], other.labels[z], 0).astype(np.uint8)
    support = np.zeros(SHAPE, np.uint8)
    support[z] = paint
    session = SegmentationSession(
        "filterbank", device="cpu", options=SegmentOptions(classes_apart=apart)
    )
    session.set_image(query.image, query.spacing)
    stages = [p.stage for p in session.segment(support, support_image=other.image)]
    assert session.label_values == (1, LIVER) and session.bootstrapped
    assert set(session.contrast_steps) == {1, LIVER} == set(session.fit_scores)
    s = session._require_support()
    assert s.same_volume  # the last pass started from this scan's pseudo-paint
    n = len(candidate_steps("ct"))
    # apart: each class's search (n first passes at least), then the joint pass
    assert stages.count("support") > (2 * n if apart else n)
    result = session.labels(None)
    for v in (1, LIVER):
        assert _dice(result == v, query.labels == v) > 0.7
    # one slice painted with two organs is the widest of at most one: apart, each class's
    # results are compared with its paint slice by slice; jointly, on their widest slices
    assert compared
    assert all(flags == {not apart} and kinds <= {apart} for flags, kinds in compared)


def test_between_two_regions_that_fit_alike_the_better_matching_one_wins():
    """A look-alike neighbour placed as well as the organ loses on its weaker prototype match."""
    from napari_tpm import footprint

    image = np.zeros((9, 64, 64), np.float32)
    image[:, 8:56, 8:56] = 3.0  # the body
    labels = np.zeros(image.shape, np.uint8)
    labels[3:6, 14:24, 27:37] = 1  # two regions of one size, mirror places about the paint
    labels[3:6, 40:50, 27:37] = 1
    painted = {1: Footprint(100.0, (0.0, 0.0), 0.5)}
    score = np.zeros(image.shape, np.float32)
    score[labels == 1] = 1.0
    score[3:6, 40:50, 27:37] = 3.0  # the lower region matches the prototypes better
    out = keep_fitting_component(labels, image, painted, pixel_area_mm2=1.0, score=score)
    assert out[4, 45, 30] == 1 and out[4, 18, 30] == 0
    score[3:6, 14:24, 27:37] = 4.0  # ... and now the upper one does
    out = keep_fitting_component(labels, image, painted, pixel_area_mm2=1.0, score=score)
    assert out[4, 18, 30] == 1 and out[4, 45, 30] == 0
    assert footprint.PICK_WEIGHTS.score > 0 and footprint.FIT_WEIGHTS.score > 0


def test_region_footprints_from_the_class_box_match_the_whole_volume_ones():
    """keep_fitting_component measures regions in the class's bounding box only; their
    footprints must be exactly those :func:`footprints` gives on the whole volume."""
    import cc3d

    from napari_tpm import footprint
    from napari_tpm.postprocess import bounding_box

    rng = np.random.default_rng(3)
    image = np.zeros((12, 48, 56), np.float32)
    image[:, 6:44, 5:50] = 3.0  # the body
    mask = np.zeros(image.shape, bool)
    mask[2:9, 10:22, 30:44] = True
    mask[5:11, 28:40, 8:20] = True
    mask[3, 30:33, 46:49] = True  # a speck
    mask &= rng.random(mask.shape) > 0.05
    box = bounding_box(mask)
    assert box is not None
    whole = cc3d.connected_components(mask, connectivity=26)
    crop = cc3d.connected_components(mask[box], connectivity=26)
    assert np.array_equal(whole[box], crop)  # the crop numbers the regions alike
    ids = [int(i) for i in np.unique(crop)[1:]]
    fast = footprint._piece_footprints(crop, box, image, ids, 0.8)
    assert fast == footprints(whole, image, ids, 0.8)
    every = footprint._piece_footprints(crop, box, image, ids, 0.8, every_slice=True)
    assert every == footprints(whole, image, ids, 0.8, every_slice=True)
    assert bounding_box(np.zeros((2, 3, 4), bool)) is None


def test_every_slice_footprints_and_the_best_fitting_slice():
    image = np.zeros((5, 64, 64), np.float32)
    image[:, 8:56, 16:48] = 3.0
    labels = np.zeros(image.shape, np.uint8)
    labels[1, 10:14, 18:22] = 2
    labels[3, 8:16, 16:24] = 2
    boxes: dict = {}
    each = footprints(labels, image, (2,), 0.5, every_slice=True, boxes=boxes)[2]
    assert [f.height for f in each] == [0.25, 0.75] and set(boxes) == {1, 3}
    assert each[1] == footprints(labels, image, (2,), 0.5)[2]  # the widest, as before
    # a paint like slice 1's: as far as that slice when any slice may be compared ...
    small = Footprint(each[0].area_mm2, each[0].position, 0.25, widest=False)
    assert footprint_penalty(small, each) == pytest.approx(0.0)
    assert footprint_penalty(small, each) < footprint_penalty(small, each[1])
    assert footprint_penalty(small, ()) == MISSING_PENALTY
    with pytest.raises(ValueError, match="3D shape"):
        footprints(labels, image[:, :10], (2,), 1.0, every_slice=True)


def test_a_painted_slice_that_is_not_the_widest_finds_the_organ_by_its_tip():
    """With several classes on one slice, the slice may cut an organ near its end: the region
    whose slice at the paint's height looks like the paint wins over a region of the painted
    size at another height (the comparison on the widest slice picks that one)."""
    image = np.zeros((21, 64, 64), np.float32)
    image[:, 8:56, 8:56] = 3.0  # the body
    labels = np.zeros(image.shape, np.uint8)
    labels[9:14, 14:34, 14:34] = 1  # the organ: widest 20 x 20 ...
    labels[8, 22:26, 22:26] = 1  # ... with a 4 x 4 tip on slice 8
    labels[5:7, 22:26, 22:26] = 1  # a 4 x 4 look-alike at the same place, a little lower
    tip = footprints(labels[8:9], image[8:9], (1,), 1.0)[1]
    paint = Footprint(16.0, tip.position, 0.4)  # the tip painted on another patient
    out = keep_fitting_component(labels, image, {1: paint}, pixel_area_mm2=1.0)
    assert out[5, 24, 24] == 1 and out[11, 20, 20] == 0  # widest slices: the look-alike
    several = Footprint(16.0, tip.position, 0.4, widest=False)
    out = keep_fitting_component(labels, image, {1: several}, pixel_area_mm2=1.0)
    assert out[11, 20, 20] == 1 and out[5, 24, 24] == 0  # any slice: the organ's tip fits


@pytest.mark.parametrize("search", [True, False])
def test_the_outline_growth_waits_for_the_result(search, monkeypatch):
    """Placing another scan's paint compares regions without the halfway growth; the result
    the caller reads has it (``SegmentOptions.halfway_edge``)."""
    from napari_tpm import _session_labels

    grown = []

    def spy(*args, **kwargs):
        grown.append(1)
        return grow_to_edge(*args, **kwargs)

    monkeypatch.setattr(_session_labels, "grow_to_edge", spy)
    query = make_phantom(shape=SHAPE, seed=3)
    other = make_phantom(shape=SHAPE, seed=11)
    session = SegmentationSession(
        "filterbank", device="cpu", options=SegmentOptions(contrast_search=search)
    )
    session.set_image(query.image, query.spacing)
    for _ in session.segment(_liver_paint(other), support_image=other.image):
        pass
    assert session.bootstrapped and grown == []
    result = session.labels(None)
    assert grown and _dice(result, query.labels == LIVER) > 0.8
    # paint on this volume: every labels() call grows, the tip shift's measurement too
    grown.clear()
    for _ in session.segment(_liver_paint(query)):
        pass
    session.labels(None)
    assert grown
