"""Concavities filled like the paint (``napari_tpm.concavity``, ``SegmentOptions.fill_concave``)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.morphology import convex_hull_image

from napari_tpm.concavity import (
    MIN_SOLIDITY,
    asks_for_fill,
    convex_hull,
    fill_like_paint,
    fill_target,
    paint_solidity,
    solidity,
)
from napari_tpm.options import SegmentOptions


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _kidney(shape=(64, 64)) -> np.ndarray:
    """A disc with a notch cut in from one side (a kidney's section around its sinus)."""
    disc = _disc(shape, (32, 32), 20)
    notch = np.zeros(shape, bool)
    notch[26:38, 32:] = True
    return disc & ~notch


def test_the_hull_is_scikit_images_pixel_for_pixel():
    rng = np.random.default_rng(0)
    shapes = [_kidney(), _disc((64, 64), (32, 32), 20), np.ones((1, 1), bool)]
    shapes.append(np.eye(9, dtype=bool))
    shapes += [rng.random(tuple(rng.integers(1, 30, 2))) < 0.3 for _ in range(40)]
    for mask in shapes:
        if mask.any():
            assert np.array_equal(convex_hull(mask), convex_hull_image(mask))


def test_solidity_of_a_disc_a_notched_disc_and_nothing():
    assert solidity(_disc((64, 64), (32, 32), 20)) > 0.95  # the hull takes in edge pixels
    assert 0.6 < solidity(_kidney()) < 0.9
    assert solidity(np.zeros((8, 8), bool)) == 0.0
    with pytest.raises(ValueError, match="2D"):
        solidity(np.zeros((2, 8, 8), bool))


def test_the_notch_is_filled_up_to_the_target_inside_the_hull_only():
    plane = _kidney()
    mask = np.stack([plane, plane, plane])
    out = fill_like_paint(mask, 1.0, skip=[1])
    assert (out >= mask).all()  # a superset
    assert np.array_equal(out[1], plane)  # a painted slice stays as painted
    for z in (0, 2):
        assert solidity(out[z]) > 0.94 and out[z][28:36, 33:48].all()  # the notch is filled
        assert not (out[z] & ~convex_hull_image(plane)).any()  # never beyond the hull
    # the pixels nearest the piece come first: at a lower target, the notch's middle stays open
    from scipy import ndimage

    part = fill_like_paint(mask, 0.9)[0]
    notch = np.zeros_like(plane)
    notch[26:38, 32:] = True  # the deep pocket; the hull's one-pixel rim elsewhere is no pocket
    added, left = part & ~plane, convex_hull_image(plane) & notch & ~part
    assert not (added & ~notch).any()
    assert added.any() and left.any()
    distance = ndimage.distance_transform_edt(~plane)
    assert distance[added].max() <= distance[left].min()


def test_a_shallow_dent_is_no_pocket():
    """A neighbour pressing into a convex organ leaves a dent, not a pocket like a sinus."""
    disc = _disc((64, 64), (32, 32), 20)
    dent = disc & ~_disc((64, 64), (2, 32), 14)  # a cap 4 pixels deep cut off the top
    out = fill_like_paint(dent[None], 1.0)[0]
    assert solidity(dent) < 0.97 and np.array_equal(out, dent)


def test_the_fill_stays_where_it_is_free_and_validates_its_input():
    plane = _kidney()
    mask = plane[None].copy()
    free = np.ones_like(mask)
    free[0, 26:38, 40:] = False  # another structure in the notch's outer half
    out = fill_like_paint(mask, 0.97, free=free)
    assert not (out & ~mask & ~free).any()
    assert (out & ~mask).any()  # the inner half is still filled
    with pytest.raises(ValueError, match="target"):
        fill_like_paint(mask, 0.0)
    with pytest.raises(ValueError, match="3-D"):
        fill_like_paint(plane, 0.9)
    with pytest.raises(ValueError, match="one shape"):
        fill_like_paint(mask, 0.9, free=free[:, :10])


def test_the_paint_solidity_is_its_least_solid_section_and_a_stroke_gives_none():
    round_ = np.where(_disc((64, 64), (32, 32), 15), 2, 0)
    notched = np.where(_kidney(), 2, 0)
    assert paint_solidity([round_], 2) > MIN_SOLIDITY
    assert paint_solidity([round_, notched], 2) == pytest.approx(solidity(notched > 0))
    assert paint_solidity([round_], 1) == 0.0  # not painted
    stroke = np.zeros((64, 64), int)
    stroke[32, 5:60] = 2  # a thin line is convex, but it outlines nothing
    assert paint_solidity([round_, stroke], 2) == 0.0
    # the fill is asked for by solid paint only, whatever the result
    assert asks_for_fill([round_], 2) == pytest.approx(paint_solidity([round_], 2))
    notched_solidity = solidity(notched > 0)
    want = notched_solidity if notched_solidity >= MIN_SOLIDITY else None
    assert asks_for_fill([round_, notched], 2) == (pytest.approx(want) if want else None)
    assert asks_for_fill([round_, stroke], 2) is None
    assert asks_for_fill([round_], 1) is None


def test_only_a_section_about_as_wide_as_the_result_sets_the_convention():
    """A kidney's pole is convex whatever the outline convention: paint there fills nothing."""
    result = np.stack([_kidney()] * 3)
    wide = np.where(_disc((64, 64), (32, 32), 19), 1, 0)
    pole = np.where(_disc((64, 64), (32, 32), 12), 1, 0)
    assert fill_target([wide], 1, result) == pytest.approx(solidity(wide > 0))
    assert fill_target([pole], 1, result) is None
    assert fill_target([wide, pole], 1, result) is not None  # the widest painted one counts
    assert fill_target([np.where(_kidney(), 1, 0)], 1, result) is None  # painted C-shaped
    assert fill_target([wide], 1, np.zeros_like(result)) is None


def test_real_mr_kidney_outlined_with_its_sinus_is_filled_around_it(shared_data):
    """CHAOS 33 (tuning volume), the left kidney painted on its middle slice: CHAOS outlines
    take in the dark renal sinus, the scores leave each section C-shaped around it (Dice 0.85;
    0.89 filled like the paint)."""
    from session_helpers import read_case, section_paint, segment_labels

    image, labels = read_case(shared_data / "chaos_t2spir", "chaos_t2_33", "mr")
    kidney = labels == 3
    paint = section_paint(kidney, 1)
    dice = {}
    for on in (True, False):
        found = segment_labels(image, paint, SegmentOptions(fill_concave=on)) == 1
        dice[on] = 2 * (found & kidney).sum() / (found.sum() + kidney.sum())
    assert dice[True] > 0.87 and dice[True] > dice[False] + 0.02, dice


def test_a_pocket_two_structures_share_goes_to_the_first_that_fills_it():
    """Two structures interlocked like a frame's halves: the square between them lies in both
    hulls; what the first fills is taken, never relabelled by the second."""
    from types import SimpleNamespace

    from napari_tpm._session_labels import _fill_concave

    first = np.zeros((64, 64), bool)  # a "Γ": left and top bars
    first[10:50, 10:20] = first[10:20, 10:50] = True
    second = np.zeros((64, 64), bool)  # the other half: right and bottom bars
    second[10:50, 40:50] = second[40:50, 10:40] = True
    second &= ~first
    paint = np.zeros((64, 64), np.uint8)  # solid squares as wide as the bars' sections
    paint[0:28, 0:28], paint[36:64, 36:64] = 1, 2
    view = np.zeros((3, 64, 64), np.uint8)
    view[1:][:, first], view[1:][:, second] = 1, 2
    view[0] = paint
    seeds = np.zeros_like(view)
    seeds[0] = paint
    alone = view.copy()
    _fill_concave(alone, seeds, SimpleNamespace(label_values=(1,), masks_native={0: paint}), None)
    by_first = (alone == 1) & (view == 0)
    support = SimpleNamespace(label_values=(1, 2), masks_native={0: paint})
    _fill_concave(view, seeds, support, None)
    assert by_first.any() and (view[by_first] == 1).all()
    assert ((view == 2) & (alone == 0)).any()  # the second still fills its own side


def test_the_fill_is_taken_at_the_auto_prior_and_the_slider_only_adds():
    """Filled anew at each prior, a section fills up to the paint's solidity of its own hull,
    so a prior that grew the result could end with fewer voxels (the CLI's phantom liver:
    8281 voxels at 0.7, 8252 at 0.9). The fill is taken once, on the auto prior's labelling,
    and put back at every other prior: there the result grows with the prior (as far as the
    other 3D steps let it: they drop a few voxels between priors with the fill off too), it
    only adds to the unfilled result, and the auto labels are the same whichever prior was
    labelled first."""
    from napari_tpm.phantom import make_phantom
    from napari_tpm.session import SegmentationSession

    ph = make_phantom(shape=(20, 80, 80), seed=5)
    zs = np.flatnonzero((ph.labels == 5).any(axis=(1, 2)))
    z = int(zs[len(zs) // 2])
    paint = np.zeros(ph.labels.shape, np.uint8)
    paint[z][ph.labels[z] == 5] = 5
    assert paint_solidity([paint[z]], 5) >= MIN_SOLIDITY  # this paint asks for the fill

    def segmented(**options) -> SegmentationSession:
        session = SegmentationSession("filterbank", device="cpu", **options)
        session.set_image(ph.image, ph.spacing)
        for _ in session.segment(paint, n_prototypes=3):
            pass
        return session

    session = segmented()
    auto = session.labels(None)
    assert any(c.size for c in session._fill_memo.values())  # the fill added pixels
    unfilled = segmented(fill_concave=False)
    sizes = []
    for prior in (0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95):
        labelled = session.labels(prior) > 0
        assert (labelled >= (unfilled.labels(prior) > 0)).all()  # the fill only adds
        sizes.append(int(labelled.sum()))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    other = segmented()
    other.labels(0.9)  # a prior first: the auto labelling is taken for the fill, then this
    np.testing.assert_array_equal(other.labels(None), auto)
