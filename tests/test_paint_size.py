"""Painted sections too small to stand for their organ (napari_tpm.paint_size): the rule, the
session's record of it, and what the CLI says."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm.options import SegmentOptions
from napari_tpm.paint_size import (
    SMALL_SECTION_MM2,
    pole_side,
    section_areas,
    small_section_message,
    small_sections,
)
from napari_tpm.phantom import make_phantom
from napari_tpm.session import SegmentationSession
from napari_tpm.support import parse_support


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_small_filled_sections_are_reported_with_their_area():
    paint = np.zeros((6, 128, 128), np.uint8)
    paint[2][_disc((128, 128), (40, 40), 6)] = 1  # ~113 px of 1 mm: a kidney's cap
    paint[2][_disc((128, 128), (80, 80), 20)] = 2  # ~1257 mm²: an organ's section
    paint[3][_disc((128, 128), (40, 40), 4)] = 1  # the same structure smaller one slice on
    spacing = (3.0, 1.0, 1.0)
    areas = section_areas(paint, parse_support(paint), spacing)
    assert areas[1] == pytest.approx((paint[2] == 1).sum())  # its largest section counts
    assert areas[2] > SMALL_SECTION_MM2
    assert small_sections(paint, parse_support(paint), spacing) == {1: areas[1]}
    # the same pixels at 2 mm are four times the area: no longer small
    assert small_sections(paint, parse_support(paint), (3.0, 2.0, 2.0)) == {}


def test_a_stroke_says_nothing_about_the_organs_size():
    """A thin, long stroke is grown to the organ's region before use: never reported."""
    paint = np.zeros((4, 256, 256), np.uint8)
    paint[1, 100:102, 60:160] = 1  # 2 px x 100 px at 0.5 mm: 50 mm², a scribble
    paint[1][_disc((256, 256), (200, 200), 5)] = 2  # a small filled disc: reported
    areas = section_areas(paint, parse_support(paint), (2.0, 0.5, 0.5))
    assert areas[1] is None and areas[2] < SMALL_SECTION_MM2
    assert list(small_sections(paint, parse_support(paint), (2.0, 0.5, 0.5))) == [2]


def test_sections_are_measured_across_the_paints_own_axis():
    paint = np.zeros((64, 64, 8), np.uint8)
    paint[:, :, 5][_disc((64, 64), (30, 30), 5)] = 3  # painted on a sagittal slice
    areas = section_areas(paint, parse_support(paint), (2.0, 2.0, 1.0))  # 4 mm² per pixel
    assert areas[3] == pytest.approx(4.0 * (paint[:, :, 5] == 3).sum())


def test_the_message_says_the_area_what_was_done_and_what_to_do():
    said = small_section_message(2, 123.4)
    assert said.startswith("label 2 is painted on 123 mm² only (< 200)")
    assert "paint it on a slice where it is wider." in said and "slice 7" not in said
    # a dab left as drawn (not recognised as partial) gets this warning too: say what helps
    assert said.endswith("outline the organ there or paint a longer stroke along it.")
    moved = small_section_message(2, 123.4, beyond=7)
    assert "its prototypes came from slice 7, next to it towards the organ" in moved


def test_the_session_records_small_sections_for_each_segmentation():
    ph = make_phantom((24, 96, 96), seed=3)
    liver = ph.labels == 5
    z = int(np.argmax(liver.sum(axis=(1, 2))))
    session = SegmentationSession("filterbank", device="cpu")
    session.set_image(ph.image, ph.spacing)
    whole = np.zeros(ph.image.shape, np.uint8)
    whole[z][liver[z]] = 5
    for _ in session.segment(whole):
        pass
    assert session.small_sections == {}
    tip = np.zeros(ph.image.shape, np.uint8)
    ys, xs = np.nonzero(liver[z])
    tip[z][_disc(liver[z].shape, (int(ys.mean()), int(xs.mean())), 3) & liver[z]] = 5
    for _ in session.segment(tip):
        pass
    pixel_mm2 = ph.spacing[1] * ph.spacing[2]
    assert session.small_sections == {5: pytest.approx((tip == 5).sum() * pixel_mm2)}


def test_small_sections_name_the_users_paint_on_another_volume():
    """Another volume's paint runs a second pass from pseudo-paint on this one: the warning
    still names the user's small section, not the pseudo-paint's."""
    support = make_phantom((24, 96, 96), seed=3)
    query = make_phantom((24, 96, 96), seed=4)
    liver = support.labels == 5
    z = int(np.argmax(liver.sum(axis=(1, 2))))
    tip = np.zeros(support.image.shape, np.uint8)
    ys, xs = np.nonzero(liver[z])
    tip[z][_disc(liver[z].shape, (int(ys.mean()), int(xs.mean())), 3) & liver[z]] = 5
    session = SegmentationSession("filterbank", device="cpu")
    session.set_image(query.image, query.spacing)
    for _ in session.segment(tip, support_image=support.image, support_spacing=support.spacing):
        pass
    assert session.bootstrapped  # a second pass ran
    pixel_mm2 = support.spacing[1] * support.spacing[2]
    assert session.small_sections == {5: pytest.approx((tip == 5).sum() * pixel_mm2)}


def _pole_volume(sign: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """An organ filling slices 5-9 (a disc), its pole on slice 4 at half contrast."""
    image = np.zeros((12, 40, 40), np.float32)
    disc = _disc((40, 40), (20, 20), 8)
    image[5:10][:, disc] = 100.0 * sign
    cap = _disc((40, 40), (20, 20), 4)
    image[4][cap] = 50.0 * sign  # partial volume: half organ, half surroundings
    return image, cap


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_poles_fuller_side_is_the_next_slice_into_the_organ(sign):
    image, cap = _pole_volume(sign)
    assert pole_side(image, 4, cap, 0, cap) == 5
    moved = np.moveaxis(image, 0, 2)  # the same along the last axis
    assert pole_side(moved, 4, cap, 2, cap) == 5
    # mid-organ: neither neighbour stands further from the surroundings
    assert pole_side(image, 7, _disc((40, 40), (20, 20), 5), 0, cap) is None


def test_a_pole_takes_its_prototypes_from_the_slice_beyond_it():
    """The left kidney painted where only its cap shows: prototypes from the next slice in,
    and a fuller kidney than from the cap's own partial-volume features."""
    ph = make_phantom(seed=7)
    kidney = ph.labels == 3
    pixel_mm2 = ph.spacing[1] * ph.spacing[2]
    areas = kidney.sum(axis=(1, 2)) * pixel_mm2
    z = int(np.flatnonzero((areas > 100) & (areas < SMALL_SECTION_MM2))[0])
    image = ph.image.copy()  # the phantom has no partial volume: give its pole some
    image[z][kidney[z]] = 0.5 * (image[z][kidney[z]] + image[z - 1][kidney[z]])
    paint = np.zeros(ph.labels.shape, np.uint8)
    paint[z][kidney[z]] = 1
    scores = {}
    for on in (True, False):
        session = SegmentationSession(  # the pole's own prototypes: no second pass
            "filterbank",
            device="cpu",
            options=SegmentOptions(pole_features=on, end_second_pass=False),
        )
        session.set_image(image, ph.spacing)
        for _ in session.segment(paint):
            pass
        assert session.small_sections == {1: pytest.approx(areas[z])}
        assert session.pole_slices == ({1: z + 1} if on else {})
        pred = session.labels(None) == 1
        scores[on] = 2 * (pred & kidney).sum() / (pred.sum() + kidney.sum())
    assert scores[True] > scores[False] + 0.1, scores
