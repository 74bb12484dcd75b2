"""The pseudo-paint of a first result, and the session's second pass from it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm.bootstrap import pseudo_paint
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


def test_classes_share_the_slice_that_shows_most_of_them():
    labels = np.zeros((6, 20, 20), np.uint8)
    labels[0:4, 2:8, 2:8] = 1
    labels[1, 2:12, 2:12] = 1  # class 1 alone is widest on slice 1
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
