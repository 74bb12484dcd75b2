"""Paint near an organ's end: the side balance of the first result and the boundary's shift."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm import _session_contrast as session_contrast
from napari_tpm.paint_position import (
    END_PASS_AGREEMENT,
    END_PASS_NEW_SCORE,
    TIP_BALANCE,
    TIP_SLOPE,
    side_balance,
    tip_logit_shift,
)
from napari_tpm.phantom import make_phantom
from napari_tpm.session import SegmentationSession
from napari_tpm.tpm.posterior import logit

SHAPE = (32, 96, 96)
LIVER = 5


def _result(rows: list[int], n: int = 20) -> np.ndarray:
    out = np.zeros((n, 4, 4), np.uint8)
    out[rows, 1:3, 1:3] = 1
    return out


def test_side_balance_measures_where_the_result_lies_about_the_paint():
    assert side_balance(_result(list(range(5, 16))), [10]) == pytest.approx(0.5)  # centred
    assert side_balance(_result(list(range(10, 16))), [10]) == 0.0  # all above the paint
    assert side_balance(_result(list(range(4, 11))), [10]) == 0.0  # all below it
    assert side_balance(_result([10]), [10]) == 0.0  # only the painted slice
    assert side_balance(_result(list(range(8, 18))), [10]) == pytest.approx(2 / 9)
    # several painted slices: the sides are counted from the outermost ones
    assert side_balance(_result(list(range(2, 18))), [6, 12]) == pytest.approx(4 / 15)
    assert side_balance(np.zeros((5, 3, 3), np.uint8), [2]) is None
    assert side_balance(_result([3]), []) is None


def test_the_shift_grows_as_the_paint_nears_an_end_and_is_capped():
    assert tip_logit_shift(0.5, 1.0) == 0.0
    assert tip_logit_shift(TIP_BALANCE, 1.0) == 0.0
    assert tip_logit_shift(0.35, 1.0) == pytest.approx(TIP_SLOPE * (TIP_BALANCE - 0.35))
    assert tip_logit_shift(0.0, 1.0) == 1.0  # capped at the option's maximum
    assert tip_logit_shift(0.0, 0.0) == 0.0  # off
    assert tip_logit_shift(None, 1.0) == 0.0  # nothing found: nothing to say


def _liver_at(ph, fraction: float) -> np.ndarray:
    liver = ph.labels == LIVER
    zs = np.flatnonzero(liver.any(axis=(1, 2)))
    z = int(zs[round(fraction * (zs.size - 1))])
    paint = np.zeros(liver.shape, np.uint8)
    paint[z][liver[z]] = 1
    return paint


def _segmented(fraction: float, **options) -> SegmentationSession:
    """A session over the phantom with its liver painted at ``fraction`` of its slices; the
    tip shift on the first result, so without ``end_second_pass`` unless asked."""
    ph = make_phantom(shape=SHAPE, seed=4)
    session = _session(ph, **{"end_second_pass": False, **options})
    for _ in session.segment(_liver_at(ph, fraction)):
        pass
    return session


def _session(ph, **options) -> SegmentationSession:
    session = SegmentationSession("filterbank", device="cpu", **options)
    session.set_image(ph.image, ph.spacing)
    return session


def test_paint_at_the_organs_end_moves_the_auto_boundary_out_and_the_middle_does_not():
    ph = make_phantom(shape=SHAPE, seed=4)
    truth = ph.labels == LIVER
    session = _session(ph, end_second_pass=False)  # the shift alone, on the first result
    for _ in session.segment(_liver_at(ph, 0.5)):
        pass
    assert session.auto_prior() == pytest.approx(session._calibrated_prior())

    for _ in session.segment(_liver_at(ph, 0.15)):
        pass
    calibrated = session._calibrated_prior()
    first = session.labels(calibrated) > 0
    balance = side_balance(first, session.support_slices)
    assert balance is not None and balance < TIP_BALANCE  # the result lies on one side
    shift = float(logit(session.auto_prior()) - logit(calibrated))
    assert shift == pytest.approx(tip_logit_shift(balance, 1.0), abs=1e-5) and shift > 0
    # the wider boundary finds more of the organ (on the phantom the first result is nearly
    # whole already, so only a little more) without losing Dice
    shifted = session.labels(None) > 0
    assert (shifted & truth).sum() > (first & truth).sum()

    assert _dice(shifted, truth) >= _dice(first, truth) - 0.01

    off = _session(ph, tip_shift=0.0, end_second_pass=False)
    for _ in off.segment(_liver_at(ph, 0.15)):
        pass
    assert off.auto_prior() == pytest.approx(off._calibrated_prior())


def test_the_shift_is_measured_once_per_result_and_again_after_new_scores():
    session = _segmented(0.15)
    calls = []
    labels = session.labels

    def counting(*args, **kwargs):
        calls.append(args)
        return labels(*args, **kwargs)

    session.labels = counting  # type: ignore[method-assign]
    first = session.auto_prior()
    assert session.auto_prior() == first and len(calls) == 1  # the slider's "Auto" stays cheap
    session.set_prototypes(1)  # new scores: measured again
    session.auto_prior()
    assert len(calls) == 2


def test_the_preview_of_the_auto_prior_labels_nothing_and_is_exact_once_measured():
    """A dock draws the displayed slice at the preview while the worker measures the tip."""
    for fraction in (0.5, 0.15):
        session = _segmented(fraction)
        calls = []
        labels = session.labels

        def counting(*args, labels=labels, calls=calls, **kwargs):
            calls.append(args)
            return labels(*args, **kwargs)

        session.labels = counting  # type: ignore[method-assign]
        calibrated = session._calibrated_prior()
        assert session.auto_prior_preview() == calibrated and calls == []  # not measured yet
        exact = session.auto_prior()
        assert session.auto_prior_preview() == exact  # measured: the preview is exact
        assert (exact == calibrated) == (fraction == 0.5)  # the middle needs no shift


def test_two_painted_slices_get_no_shift_and_two_classes_keep_the_auto_prior():
    ph = make_phantom(shape=SHAPE, seed=4)
    two = _liver_at(ph, 0.15) | _liver_at(ph, 0.4)
    session = _session(ph)
    for _ in session.segment(two):
        pass
    assert session.auto_prior() == pytest.approx(session._calibrated_prior())
    liver, kidney = ph.labels == LIVER, ph.labels == 2
    z = int(np.flatnonzero((liver.any(axis=(1, 2))) & kidney.any(axis=(1, 2)))[0])
    both = np.zeros(liver.shape, np.uint8)
    both[z][liver[z]] = 1
    both[z][kidney[z]] = 2
    for _ in session.segment(both):
        pass
    assert session.auto_prior() == pytest.approx(session._calibrated_prior())


def test_a_mid_organ_paint_labels_the_volume_once_for_the_auto_prior(monkeypatch):
    """Measuring the tip costs no second labelling when it finds no shift (the usual case)."""
    from napari_tpm import _session_output

    session = _segmented(0.5)
    calls = []
    write = _session_output.write_labels
    monkeypatch.setattr(
        _session_output, "write_labels", lambda *a, **k: calls.append(1) or write(*a, **k)
    )
    auto = session.labels(None)
    assert len(calls) == 1  # the measurement's labels are the auto labels
    again = session.labels(None)
    assert len(calls) == 1 and np.array_equal(auto, again) and again is not auto
    # a dock's relabel: its own buffer, the whole slice range, the same prior: reused too
    out = np.zeros(SHAPE, np.int32)
    session.labels(session.auto_prior(), out=out, z_range=(0, SHAPE[0] - 1))
    assert len(calls) == 1 and np.array_equal(auto, out)
    fresh = session.labels(session.auto_prior(), z_range=(1, SHAPE[0] - 1))  # labelled again
    assert len(calls) == 2 and not fresh[0].any()
    # the measurement's labels are what a fresh labelling gives (slice 0 holds none of them)
    assert not auto[0].any() and np.array_equal(auto, fresh)


def _two_organs(z: int, other: int, **options) -> tuple[SegmentationSession, np.ndarray]:
    """A phantom session with the liver (1) and organ ``other`` (2) painted on slice ``z``,
    segmented; and that paint."""
    ph = make_phantom(shape=SHAPE, seed=4)
    paint = np.zeros(SHAPE, np.uint8)
    paint[z][ph.labels[z] == LIVER] = 1
    paint[z][ph.labels[z] == other] = 2
    session = _session(ph, **options)
    for _ in session.segment(paint):
        pass
    return session, paint


def test_several_classes_on_one_slice_each_get_their_own_shift(monkeypatch):
    """Slice 14 is near the liver's lower end (slices 12-31) and through organ 3's middle
    (9-19): the liver's boundary moves out, organ 3's stays; the auto prior stays calibrated."""
    from napari_tpm import _session_output

    # organ 3's painted section is narrow: its walk (track_ends) would label the volume
    # inside segment() and so measure the shifts there; this test follows the measurement
    session, _ = _two_organs(14, 3, track_ends=False)
    calls = []
    write = _session_output.write_labels
    monkeypatch.setattr(
        _session_output, "write_labels", lambda *a, **k: calls.append(1) or write(*a, **k)
    )
    calibrated = session._calibrated_prior()
    session.labels(calibrated, slices=(14, 14))  # the live slider measures nothing
    assert session._class_tips is None and len(calls) == 1
    shifted = session.labels(None)
    tips = session._class_tips
    assert tips is not None and tips[0] > 0.5 and tips[1] == 0.0
    assert session.auto_prior() == pytest.approx(calibrated)
    unshifted = session.labels(calibrated)  # the same prior: the shifts hold at any prior
    assert np.array_equal(shifted, unshifted)
    plain = _two_organs(14, 3, tip_shift=0.0, track_ends=False)[0].labels(None)
    assert (shifted == 1).sum() > (plain == 1).sum()  # the liver reaches further


def test_several_classes_painted_mid_organ_label_the_volume_once(monkeypatch):
    from napari_tpm import _session_output

    session, _ = _two_organs(23, 6, track_ends=False)  # as above: no walk inside segment()
    calls = []
    write = _session_output.write_labels
    monkeypatch.setattr(
        _session_output, "write_labels", lambda *a, **k: calls.append(1) or write(*a, **k)
    )
    auto = session.labels(None)
    assert session._class_tips is not None and not session._class_tips.any()
    assert len(calls) == 1  # the measurement's labels are the auto labels
    assert np.array_equal(session.labels(None), auto) and len(calls) == 1


def test_with_a_narrow_structures_walk_the_volume_is_still_labelled_once(monkeypatch):
    """The walk (track_ends) labels the volume inside segment(), measuring the shifts there;
    the first labels(None) afterwards reuses that labelling."""
    from napari_tpm import _session_output

    calls = []
    write = _session_output.write_labels
    monkeypatch.setattr(
        _session_output, "write_labels", lambda *a, **k: calls.append(1) or write(*a, **k)
    )
    session, _ = _two_organs(23, 6)
    assert session._tracked is not None  # organ 6's section is narrow: it walked
    assert len(calls) == 1
    session.labels(None)
    assert len(calls) == 1


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_paint_at_the_organs_end_gets_a_second_pass_that_must_match_the_outline(monkeypatch):
    """end_second_pass: paint at the liver's end segments again from the first result's most
    confident slice; the result is kept only if it still matches the outline (and then keeps
    the outline on its slice), else the first result comes back exactly."""
    ph = make_phantom(shape=SHAPE, seed=4)
    truth = ph.labels == LIVER
    paint = _liver_at(ph, 0.15)
    z = int(np.flatnonzero(paint.any(axis=(1, 2)))[0])
    off = _session(ph, end_second_pass=False)
    for _ in off.segment(paint):
        pass
    first = off.labels(None)
    assert not off.bootstrapped

    on = _session(ph)
    for _ in on.segment(paint):
        pass
    assert on.bootstrapped and on.support_slices != (z,)  # from a slice further in
    kept = on.labels(None)
    own = on.labels(None, keep_paint=False)  # the pass's own result, from its pseudo-paint
    assert _dice(own[z] == 1, paint[z] == 1) >= END_PASS_AGREEMENT
    assert not np.array_equal(own[z] == 1, paint[z] == 1)
    # ... but the user's outline stays on the slice it was drawn on, the slider's too
    np.testing.assert_array_equal(kept[z] == 1, paint[z] == 1)
    np.testing.assert_array_equal(on.labels(0.3, slices=(z, z))[z] == 1, paint[z] == 1)
    assert _dice(kept == 1, truth) >= _dice(first == 1, truth) - 0.01

    # an outline the second result cannot match: the first result stays, voxel for voxel,
    # put back without segmenting again, and the viewer is told to show every slice anew
    monkeypatch.setattr(session_contrast, "END_PASS_AGREEMENT", 1.01)
    reverted = _session(ph)
    runs: list[bool] = []
    run = reverted._run
    monkeypatch.setattr(reverted, "_run", lambda job, **kw: runs.append(True) or run(job, **kw))
    steps = list(reverted.segment(paint))
    assert len(runs) == 2  # the first pass and the second, not the first again
    assert steps[-1].slices == (0, SHAPE[0])
    assert not reverted.bootstrapped and reverted.support_slices == (z,)
    np.testing.assert_array_equal(reverted.labels(None), first)
    np.testing.assert_array_equal(reverted.probabilities(0.5), off.probabilities(0.5))


def test_an_end_pass_adding_what_the_first_pass_scored_as_the_organ_is_refused(monkeypatch):
    """END_PASS_NEW_SCORE: the pass is kept for voxels the tip's prototypes scored low (the
    phantom liver's body); one whose added voxels the first pass scored higher on average
    than the gate is refused, and the first result comes back exactly."""
    ph = make_phantom(shape=SHAPE, seed=4)
    paint = _liver_at(ph, 0.15)
    off = _session(ph, end_second_pass=False)
    for _ in off.segment(paint):
        pass
    first, scored = off.labels(None), off.probabilities(None)
    on = _session(ph)
    for _ in on.segment(paint):
        pass
    assert on.bootstrapped
    added = (on.labels(None) == 1) & (first != 1)
    assert added.any()
    assert float(scored[added].mean()) < END_PASS_NEW_SCORE  # what the first pass missed

    monkeypatch.setattr(session_contrast, "END_PASS_NEW_SCORE", 0.5 * float(scored[added].mean()))
    refused = _session(ph)
    for _ in refused.segment(paint):
        pass
    assert not refused.bootstrapped
    np.testing.assert_array_equal(refused.labels(None), first)


def test_after_an_end_pass_the_auto_labels_are_the_ones_it_took(monkeypatch):
    """The end pass labels the volume to judge itself, kept or refused; the caller's
    labels(None) afterwards reuses that labelling (with the user's outline on its slice)
    instead of labelling the volume again, and it is what a fresh labelling gives."""
    from napari_tpm import _session_output

    ph = make_phantom(shape=SHAPE, seed=4)
    paint = _liver_at(ph, 0.15)
    z = int(np.flatnonzero(paint.any(axis=(1, 2)))[0])
    calls: list[int] = []
    write = _session_output.write_labels
    monkeypatch.setattr(
        _session_output, "write_labels", lambda *a, **k: calls.append(1) or write(*a, **k)
    )
    for gate, kept in ((END_PASS_AGREEMENT, True), (1.01, False)):
        monkeypatch.setattr(session_contrast, "END_PASS_AGREEMENT", gate)
        session = _session(ph)
        for _ in session.segment(paint):
            pass
        assert session.bootstrapped == kept
        done = len(calls)
        auto = session.labels(None)
        assert len(calls) == done  # no labelling of its own
        np.testing.assert_array_equal(auto[z] == 1, paint[z] == 1)
        session._tip_labels = None  # forget it: label the volume afresh
        np.testing.assert_array_equal(session.labels(None), auto)
        assert len(calls) == done + 1


def test_the_prototype_selector_after_an_end_pass_refits_without_running_it_again(monkeypatch):
    """set_prototypes after paint at the organ's end refits the support the result came
    from (the second pass's pseudo-paint when kept, the user's paint when refused) instead
    of segmenting the paint again, and a refit to the first K gives the first result back."""
    ph = make_phantom(shape=SHAPE, seed=4)
    paint = _liver_at(ph, 0.15)
    kept = _session(ph)
    for _ in kept.segment(paint):
        pass
    assert kept.bootstrapped
    first, slices = kept.labels(None), kept.support_slices
    runs: list[int] = []
    monkeypatch.setattr(kept, "_end_second_pass", lambda job: runs.append(1) or iter(()))
    calls = kept.encoder_calls
    kept.set_prototypes(1)
    assert kept.bootstrapped and kept.support_slices == slices and kept.n_prototypes == 1
    assert _dice(kept.labels(None) == 1, ph.labels == LIVER) > 0.8
    kept.set_prototypes(3)
    np.testing.assert_array_equal(kept.labels(None), first)
    assert runs == [] and kept.encoder_calls == calls

    # refused: the refit is the first pass's, as with the second pass switched off
    monkeypatch.setattr(session_contrast, "END_PASS_AGREEMENT", 1.01)
    results = []
    for options in ({}, {"end_second_pass": False}):
        session = _session(ph, **options)
        for _ in session.segment(paint):
            pass
        session.set_prototypes(1)
        assert not session.bootstrapped
        results.append(session.labels(None))
    np.testing.assert_array_equal(*results)


def test_paint_mid_organ_or_on_two_slices_gets_no_second_pass():
    ph = make_phantom(shape=SHAPE, seed=4)
    mid = _session(ph)
    for _ in mid.segment(_liver_at(ph, 0.5)):
        pass
    assert not mid.bootstrapped
    two = _liver_at(ph, 0.15) | _liver_at(ph, 0.5)
    both = _session(ph)
    for _ in both.segment(two):
        pass
    assert not both.bootstrapped
