"""Matching slices between two CT scans of different fields of view (napari_tpm.slice_match)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm.footprint import (
    FIT_WEIGHTS,
    Footprint,
    central_slices,
    footprint_penalty,
    footprints,
)
from napari_tpm.options import SegmentOptions
from napari_tpm.phantom import make_phantom
from napari_tpm.session import SegmentationSession
from napari_tpm.slice_match import ct_profiles, map_slice, slice_profiles


def _signal(mm: np.ndarray) -> np.ndarray:
    """Four smooth, distinct curves along a body (mm), like a profile's columns."""
    return np.stack(
        [
            np.sin(mm / 40.0) + 0.3 * np.cos(mm / 13.0),
            np.cos(mm / 55.0),
            np.exp(-(((mm - 180.0) / 30.0) ** 2)),
            np.sin(mm / 25.0 + 1.0),
        ],
        axis=1,
    )


@pytest.mark.parametrize("stretch", [1.0, 1.1])
def test_a_slice_is_found_in_another_field_of_view(stretch):
    # the support covers 100-400 mm at 5 mm, the query 20-320 mm at 3 mm of a body `stretch`
    # times as long: support slice z shows mm 100 + 5z, found in the query at that mm * stretch
    support = _signal(100.0 + 5.0 * np.arange(61))
    query_mm = 20.0 + 3.0 * np.arange(101)
    query = _signal(query_mm / stretch)
    for z in (10, 30, 45):
        want = ((100.0 + 5.0 * z) * stretch - 20.0) / 3.0
        assert abs(map_slice(support, 5.0, query, 3.0, z, pull=0.0) - want) <= 0.5
        # the pull towards the same fraction of each scan (z / 60 * 100, 17-58 slices off
        # here) trades a few mm for safety on flat profiles; it stays far nearer the truth
        guess = z / 60 * 100
        assert abs(map_slice(support, 5.0, query, 3.0, z) - want) < abs(guess - want) / 3


def test_scans_too_short_to_overlap_are_not_matched():
    short = _signal(5.0 * np.arange(10))  # 45 mm: never overlaps 100 mm
    query = _signal(3.0 * np.arange(40))
    assert map_slice(short, 5.0, query, 3.0, 9) is None


def test_profiles_measure_body_bone_and_fat():
    # a 20 x 10 cm body of 40 HU with a 2 x 2 cm bone and a 4 x 5 cm fat block, in air
    ct = np.full((3, 200, 200), -1000.0, np.float32)
    ct[:, 50:150, 0:200] = 40.0  # at 1 mm pixels: 100 x 200 px
    ct[:, 60:80, 60:80] = 700.0
    ct[:, 100:140, 100:150] = -100.0
    prof = ct_profiles(ct, (5.0, 1.0, 1.0), axis=0)
    assert prof.shape == (3, 4)
    np.testing.assert_allclose(prof[:, 0], 200.0, rtol=0.01)  # body, cm²
    np.testing.assert_allclose(prof[:, 2], 4.0, rtol=0.01)  # bone
    np.testing.assert_allclose(prof[:, 3], 20.0, rtol=0.01)  # fat


def test_a_windowed_ct_has_the_profiles_of_the_full_range_one():
    ct = make_phantom((24, 64, 64), seed=3).image
    windowed = np.clip(ct, -125, 275)
    np.testing.assert_allclose(
        ct_profiles(ct, (5.0, 1.5, 1.5), 0), ct_profiles(windowed, (5.0, 1.5, 1.5), 0)
    )


def test_profiles_along_another_axis_are_the_transposed_volumes():
    ct = make_phantom((24, 48, 40), seed=1).image
    along_x = ct_profiles(ct, (5.0, 1.5, 2.0), axis=2)
    np.testing.assert_allclose(along_x, slice_profiles_of(np.moveaxis(ct, 2, 0), (2.0, 5.0, 1.5)))


def slice_profiles_of(ct: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    from napari_tpm.preprocess import normalise_intensity

    return slice_profiles(normalise_intensity(ct, modality="ct", method="robust"), spacing)


def test_phantom_crops_are_matched():
    # one phantom seen through two fields of view 16 slices apart
    ct = make_phantom((64, 96, 96), seed=2).image
    spacing = (5.0, 1.5, 1.5)
    upper, lower = ct[:48], ct[16:]
    a, b = ct_profiles(upper, spacing, 0), ct_profiles(lower, spacing, 0)
    for z in (24, 30, 40):
        assert abs(map_slice(a, 5.0, b, 5.0, z) - (z - 16)) <= 2


def test_a_matched_slice_is_compared_with_the_regions_span():
    paint = Footprint(1000.0, (0.0, 0.5), 0.5)
    matched = Footprint(1000.0, (0.0, 0.5), 0.5, matched=True)
    # a region whose widest slice lies 0.2 from the painted slice, but which covers it
    covering = Footprint(1000.0, (0.0, 0.5), 0.7, span=(0.3, 0.8))
    assert footprint_penalty(matched, covering) == pytest.approx(0.0)
    assert footprint_penalty(paint, covering) == pytest.approx(FIT_WEIGHTS.height * 0.2)
    # one that ends 0.1 short of it
    short = Footprint(1000.0, (0.0, 0.5), 0.7, span=(0.6, 0.8))
    assert footprint_penalty(matched, short) == pytest.approx(FIT_WEIGHTS.matched_height * 0.1)


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_another_ct_paint_is_compared_at_its_matched_slice(modality):
    """Paint on a scan that starts 16 slices higher: the session places its slice by the
    profiles on CT, by the fraction of each scan on MR (whose profiles do not transfer)."""
    liver = 5
    other = make_phantom((64, 96, 96), seed=11, modality=modality)
    query = make_phantom((64, 96, 96), seed=3, modality=modality)
    support_image, support_truth = other.image[:48], other.labels[:48] == liver
    z = int(np.flatnonzero(support_truth.any(axis=(1, 2))).mean())
    paint = np.zeros(support_image.shape, np.uint8)
    paint[z][support_truth[z]] = liver
    for match in (True, False):
        options = SegmentOptions(match_slices=match, bootstrap=False)
        session = SegmentationSession("filterbank", device="cpu", options=options)
        session.set_image(np.ascontiguousarray(query.image[16:]), query.spacing)
        for _ in session.segment(paint, support_image=support_image):
            pass
        painted = session._paint_footprints[liver]
        assert painted.matched == (match and modality == "ct")
        where = painted.height * 47
        if painted.matched:  # two phantoms' anatomies differ a little: within 25 mm
            assert abs(where - (z - 16)) <= 5, (where, z)
        else:
            assert where == pytest.approx(z)


def test_a_result_footprint_carries_its_regions_span():
    labels = np.zeros((10, 32, 32), np.uint8)
    labels[3:7, 10:20, 10:20] = 1
    labels[5, 8:22, 8:22] = 1  # the widest slice
    found = footprints(labels, np.ones(labels.shape, np.float32), [1], 1.0)[1]
    assert found.height == pytest.approx(5 / 9) and found.span == pytest.approx((3 / 9, 6 / 9))
    every = footprints(labels, np.ones(labels.shape, np.float32), [1], 1.0, every_slice=True)[1]
    assert len(every) == 4 and all(f.span == found.span for f in every)


def _paint_footprint(query, paint: np.ndarray, support_image: np.ndarray, value: int):
    """The session's footprint of ``value`` painted on another volume (no second pass)."""
    session = SegmentationSession(
        "filterbank", device="cpu", options=SegmentOptions(bootstrap=False)
    )
    session.set_image(query.image, query.spacing)
    for _ in session.segment(paint, support_image=support_image):
        pass
    return session._paint_footprints[value]


def test_a_slab_too_short_to_match_keeps_the_fraction():
    """Two 6 cm slabs (AMOS-like): no 10 cm of overlap, so the paint's height stays its
    fraction of the scan, as on MR."""
    liver = 5
    other = make_phantom((12, 64, 64), seed=11)
    query = make_phantom((12, 64, 64), seed=3)
    z = int(np.flatnonzero((other.labels == liver).any(axis=(1, 2))).mean())
    paint = np.zeros(other.image.shape, np.uint8)
    paint[z][other.labels[z] == liver] = liver
    painted = _paint_footprint(query, paint, other.image, liver)
    assert not painted.matched and painted.height * 11 == pytest.approx(z)


def test_central_slices_keep_each_class_on_its_middle_painted_slice():
    paint = np.zeros((12, 8, 8), np.uint8)
    for z, size in ((2, 3), (5, 2), (9, 6)):  # the widest painted slice is an outer one
        paint[z, :size, :size] = 1
    for z, size in ((4, 2), (6, 3)):  # two slices as near the middle: the wider
        paint[z, 4 : 4 + size, 4 : 4 + size] = 2
    kept = central_slices(paint, [1, 2, 3])
    assert np.flatnonzero((kept == 1).any(axis=(1, 2))).tolist() == [5]
    assert np.flatnonzero((kept == 2).any(axis=(1, 2))).tolist() == [6]
    np.testing.assert_array_equal(kept[5], paint[5] * (paint[5] == 1))
    np.testing.assert_array_equal(kept[6], paint[6])


def test_another_volumes_paint_on_several_slices_is_placed_by_its_central_slice():
    """Three slices painted on another MR, the widest at an end: the paint's footprint is its
    middle slice's (the height a result must reach), not the widest one's."""
    liver = 5
    other = make_phantom((48, 96, 96), seed=11, modality="mr")
    query = make_phantom((48, 96, 96), seed=3, modality="mr")
    truth = other.labels == liver
    zs = np.flatnonzero(truth.any(axis=(1, 2)))
    middle = int(zs[len(zs) // 2])
    low, high = middle - 4, middle + 4
    paint = np.zeros(other.image.shape, np.uint8)
    for z in (low, middle, high):
        paint[z][truth[z]] = liver
    paint[high][truth[middle] | truth[high]] = liver  # now the widest painted slice
    assert (paint[high] == liver).sum() > (paint[middle] == liver).sum()
    painted = _paint_footprint(query, paint, other.image, liver)
    assert not painted.matched and painted.height * 47 == pytest.approx(middle)
