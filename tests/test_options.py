"""Session options: one set of names for the session, the CLIs and the benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm.options import SegmentOptions
from napari_tpm.phantom import make_phantom
from napari_tpm.session import SegmentationSession


def test_pairs_are_typed_and_checked():
    opts = SegmentOptions.from_pairs(["refine=2", "connected=false", "smooth_mm=1.5"])
    assert opts.refine == 2 and opts.connected is False and opts.smooth_mm == 1.5
    base = SegmentOptions.from_pairs([], {"refine_atlas": "0"})
    assert base.refine_atlas == 0 and base.connected is True
    for bad, message in [
        (["nope=1"], "unknown option"),
        (["refine=two"], "takes a int"),
        (["connected=maybe"], "true/false"),
        (["refine"], "KEY=VALUE"),
        (["refine=-1"], ">= 0"),
        (["smooth_mm=nan"], "finite"),
        (["continuity=1.5"], "fraction"),
        (["class_boundaries=loose"], "class_boundaries"),
    ]:
        with pytest.raises(ValueError, match=message):
            SegmentOptions.from_pairs(bad)
    # in Python, a switch given as a string would silently count as on
    with pytest.raises(ValueError, match="bootstrap must be True or False"):
        SegmentOptions(bootstrap="false")


def test_calibration_modes_are_checked():
    from napari_tpm._session_scoring import calibrate

    with pytest.raises(ValueError, match="per_class"):
        calibrate(None, None, "loose")  # type: ignore[arg-type]


def test_session_defaults_and_overrides():
    s = SegmentationSession("filterbank", device="cpu", refine=1, connected=False)
    assert s.options.refine == 1 and s.options.connected is False
    with pytest.raises(TypeError):
        SegmentationSession("filterbank", device="cpu", not_an_option=1)


def test_connected_default_drops_a_detached_blob_and_smoothing_keeps_the_organ():
    ph = make_phantom(shape=(24, 96, 96), seed=3)
    truth = ph.labels == 5
    z = 12
    paint = np.zeros(truth.shape, np.uint8)
    paint[z][truth[z]] = 5
    plain = SegmentationSession("filterbank", device="cpu", connected=False)
    plain.set_image(ph.image, ph.spacing)
    list(plain.segment(paint))
    loose = plain.labels(0.5) > 0
    # connectivity and neck cutting only remove (outline snapping may add: tests/test_boundary)
    default = SegmentationSession("filterbank", device="cpu", snap_mm=0.0)
    default.set_image(ph.image, ph.spacing)
    list(default.segment(paint))
    kept = default.labels(0.5) > 0
    assert (kept <= loose).all()
    smooth = SegmentationSession("filterbank", device="cpu", smooth_mm=3.0)
    smooth.set_image(ph.image, ph.spacing)
    list(smooth.segment(paint))
    result = smooth.labels(0.5) > 0
    dice = 2 * (result & truth).sum() / (result.sum() + truth.sum())
    assert dice > 0.8


def test_labels_of_a_few_slices_match_the_full_result_there():
    ph = make_phantom(shape=(24, 96, 96), seed=3)
    paint = np.zeros(ph.labels.shape, np.uint8)
    paint[12][ph.labels[12] == 5] = 5
    s = SegmentationSession("filterbank", device="cpu", connected=False)
    s.set_image(ph.image, ph.spacing)
    list(s.segment(paint))
    full = s.labels(0.3)
    buf = np.full(full.shape, 7, np.uint8)
    s.labels(0.3, out=buf, slices=(10, 12))
    assert (buf[10:13] == full[10:13]).all()
    assert (buf[:10] == 7).all() and (buf[13:] == 7).all()  # nothing else is touched


def test_session_refuses_constant_and_overflowing_images():
    s = SegmentationSession("filterbank", device="cpu")
    with pytest.raises(ValueError, match="constant"):
        s.set_image(np.full((4, 16, 16), 7.0, np.float32))
    huge = np.zeros((4, 16, 16), np.float64)
    huge[0, 0, 0] = 1e300
    with pytest.raises(ValueError, match="too large"):
        s.set_image(huge)


def _look_alike_scene(
    a_radius: float, b_radius: float, b_y: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A CT-like volume with two blobs of one intensity close together, ``a`` painted on a
    slice that shows both: ``b`` is a look-alike the prototype confuses."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:20, :96, :96]
    img = np.full((20, 96, 96), -900.0)
    img[:, ((yy[0] - 48) / 40) ** 2 + ((xx[0] - 48) / 44) ** 2 <= 1] = 0.0
    a = ((zz - 10) / 6) ** 2 + ((yy - 44) / a_radius) ** 2 + ((xx - 30) / a_radius) ** 2 <= 1
    b = ((zz - 10) / 6) ** 2 + ((yy - b_y) / b_radius) ** 2 + ((xx - 34) / b_radius) ** 2 <= 1
    img[a | b] = 60.0
    img = (img + rng.normal(0, 5, img.shape)).astype(np.float32)
    paint = np.zeros(img.shape, np.uint8)
    paint[10][a[10]] = 1
    return img, paint, a, b


def _with_and_without_mining(img, paint) -> dict[bool, np.ndarray]:
    found = {}
    for mine in (False, True):
        s = SegmentationSession("filterbank", device="cpu", hard_negatives=mine, connected=False)
        s.set_image(img, (3.0, 1.0, 1.0))
        list(s.segment(paint, n_prototypes=1))  # one prototype: the look-alike is confused
        found[mine] = s.labels(0.5)
    return found


def test_hard_negatives_mine_the_painted_slices_look_alikes():
    # what scores as the organ off the paint is a few percent of the paint: a pocket of tissue
    img, paint, a, b = _look_alike_scene(18, 6, 72)
    found = {k: v > 0 for k, v in _with_and_without_mining(img, paint).items()}
    assert found[False][b].sum() > 50  # the look-alike is taken without mining
    assert found[True][b].sum() < found[False][b].sum() / 4
    assert found[True][a].sum() >= found[False][a].sum()


def test_hard_negatives_leave_look_alikes_that_cover_much_of_the_slice(monkeypatch):
    # what scores as the organ off the paint is over a tenth of the paint's count: the
    # look-alikes overlap the organ's features, and mining them would push the organ out too
    img, paint, _, b = _look_alike_scene(9, 14, 72)
    found = _with_and_without_mining(img, paint)
    assert (found[False][b] > 0).sum() > 100
    np.testing.assert_array_equal(found[True], found[False])
    # the share is what held it back: without that limit it is mined and pushed out
    import napari_tpm._session_scoring as scoring

    monkeypatch.setattr(scoring, "MINE_MAX_SHARE", 10.0)
    unlimited = _with_and_without_mining(img, paint)[True]
    assert (unlimited[b] > 0).sum() < (found[False][b] > 0).sum() / 4
