"""The segmentation session: caching, streaming, priors, prototypes, multi-class, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm._session_data import _outward_batches
from napari_tpm.phantom import make_phantom
from napari_tpm.session import (
    SegmentationSession,
    SupportError,
    VolumeTooLargeError,
    find_support_slice,
)

SHAPE = (24, 96, 96)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=SHAPE, seed=3)


def paint_middle(labels: np.ndarray, value: int) -> tuple[np.ndarray, int]:
    zs = np.nonzero((labels == value).any(axis=(1, 2)))[0]
    z = int(zs[len(zs) // 2])
    paint = np.zeros(labels.shape, np.uint8)
    paint[z][labels[z] == value] = value
    return paint, z


@pytest.fixture(scope="module")
def liver_session(phantom):
    session = SegmentationSession("filterbank", device="cpu", batch_size=4)
    session.set_image(phantom.image, phantom.spacing)
    paint, _ = paint_middle(phantom.labels, 5)
    progress = list(session.segment(paint))
    return session, progress


def test_segment_streams_every_slice_once_per_pass(liver_session, phantom):
    """The first pass streams each slice once; the refinement (on by default) rewrites each
    slice once more, without calling the encoder again."""
    session, progress = liver_session
    assert session.encoder_calls == SHAPE[0]
    stages = [p.stage for p in progress]
    assert stages.count("refine") == 1
    cut = stages.index("refine")
    for part in (progress[:cut], progress[cut:]):
        covered = np.zeros(SHAPE[0], int)
        for lo, hi in [p.slices for p in part if p.slices is not None]:
            covered[lo:hi] += 1
        assert (covered == 1).all()
    assert progress[-1].done == progress[-1].total == SHAPE[0]


def test_liver_dice_on_phantom(liver_session, phantom):
    session, _ = liver_session
    result = session.labels(0.5, connected=True)
    assert set(np.unique(result)) <= {0, 5}
    assert dice(result == 5, phantom.labels == 5) > 0.7


def test_prior_and_prototypes_never_call_the_encoder(liver_session):
    session, _ = liver_session
    calls = session.encoder_calls
    small = (session.labels(0.05) > 0).sum()
    large = (session.labels(0.95) > 0).sum()
    assert small < large
    session.set_prototypes(3)
    assert session.n_prototypes == 3
    assert (session.labels(0.5) > 0).any()
    session.set_prototypes(1)
    assert session.encoder_calls == calls


def test_new_paint_reuses_cached_features(liver_session, phantom):
    session, _ = liver_session
    calls = session.encoder_calls
    paint, _ = paint_middle(phantom.labels, 1)
    for _ in session.segment(paint):
        pass
    assert session.encoder_calls == calls
    assert session.label_values == (1,)
    # restore the liver for the other tests sharing the fixture
    paint, _ = paint_middle(phantom.labels, 5)
    for _ in session.segment(paint):
        pass


def test_a_run_reuses_its_own_score_arrays_only(phantom):
    """The refinement's pass writes into its run's first-pass arrays (fresh pages cost a tenth
    of the CLI); a finished run's arrays, which the widget's relabel may read, stay as left."""
    session = SegmentationSession("filterbank", device="cpu")
    session.set_image(phantom.image, phantom.spacing)
    paint, _ = paint_middle(phantom.labels, 5)
    passes = []
    for progress in session.segment(paint):
        if progress.stage == "segment" and progress.done == progress.total:
            passes.append(session.scores())
    assert len(passes) == 2  # the first pass and the refinement's, one array
    assert np.shares_memory(passes[0], passes[1])
    finished, kept = session.scores(), session.scores().copy()
    for _ in session.segment(paint):
        pass
    assert not np.shares_memory(session.scores(), finished)
    np.testing.assert_array_equal(finished, kept)
    session.set_prototypes(1)
    assert not np.shares_memory(session.scores(), finished)
    np.testing.assert_array_equal(finished, kept)


def test_probabilities_agree_with_labels(liver_session):
    session, _ = liver_session
    for prior in (0.2, 0.5, 0.8):
        p = session.probabilities(prior)
        assert p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1
        lab = session.labels(prior, connected=False, keep_paint=False) > 0
        agree = ((p > 0.5) == lab).mean()
        assert agree > 0.999


def test_labels_write_into_a_buffer_and_limit_range(liver_session, phantom):
    session, _ = liver_session
    buf = np.full(SHAPE, 9, np.int32)
    out = session.labels(0.5, out=buf, z_range=(5, 10))
    assert out is buf
    assert not buf[:5].any() and not buf[11:].any()
    assert set(np.unique(buf)) <= {0, 5}


def paint_all_organs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(organ labels, paint, slice): every organ painted on the slice that shows the most."""
    organs = np.where(np.isin(labels, [1, 2, 3, 5]), labels, 0)
    z = int(np.argmax([len(np.unique(organs[i])) for i in range(organs.shape[0])]))
    paint = np.zeros_like(organs)
    paint[z] = organs[z]
    return organs, paint, z


def test_multiclass_keeps_label_values(phantom):
    organs, paint, z = paint_all_organs(phantom.labels)
    session = SegmentationSession("filterbank", device="cpu")
    session.set_image(phantom.image, phantom.spacing)
    for _ in session.segment(paint):
        pass
    values = tuple(int(v) for v in np.unique(organs[z]) if v)
    assert session.label_values == values
    result = session.labels(0.5)
    assert set(np.unique(result)) <= {0, *values}
    assert dice(result == 5, phantom.labels == 5) > 0.6


def test_relaxed_class_boundaries_only_add_and_keep_the_shared_class_choice(phantom):
    _, paint, _ = paint_all_organs(phantom.labels)
    results = {}
    for relax in (False, True):
        mode = "relax" if relax else "shared"
        # refine=0: the refinement learns from each mode's own first result, so the two
        # sessions would differ in their prototypes too, not only in the boundary tested here
        session = SegmentationSession("filterbank", device="cpu", class_boundaries=mode, refine=0)
        session.set_image(phantom.image, phantom.spacing)
        for _ in session.segment(paint):
            pass
        results[relax] = session.labels(0.5, connected=False)
        if relax:
            offsets = session._class_offsets
    assert offsets is not None and (offsets >= 0).all() and (offsets > 0).any()
    shared, relaxed = results[False], results[True]
    kept = shared > 0
    assert (relaxed[kept] == shared[kept]).all()  # a voxel the shared boundary labels keeps it
    assert (relaxed > 0).sum() > kept.sum()  # and a class that asked for it got a looser one


def test_support_from_another_volume(phantom):
    other = make_phantom(shape=SHAPE, seed=11)
    paint, _ = paint_middle(other.labels, 5)
    session = SegmentationSession("filterbank", device="cpu")
    session.set_image(phantom.image, phantom.spacing)
    for _ in session.segment(paint, support_image=other.image, support_spacing=other.spacing):
        pass
    result = session.labels(0.5, connected=True)
    assert dice(result == 5, phantom.labels == 5) > 0.5
    # the second pass starts from a core of the first result: it outlines nothing, so its
    # slice is not cut back to it (``options.exact_paint``)
    assert session.bootstrapped and session._require_support().outlined == {}


def test_the_walks_drift_and_the_outrunning_parts_follow_the_users_paint_only(phantom, monkeypatch):
    """Past the widest slice the slice walk's footprint follows the organ's drift, and the 3D
    parts that run on past the painted one go, from paint on this volume only; from another
    volume's paint (second pass, searches) neither applies."""
    import napari_tpm._session_output as session_output

    seen: list[bool] = []

    def spy(*args, own_paint: bool = True, **kwargs):
        seen.append(own_paint)
        return clean_3d(*args, own_paint=own_paint, **kwargs)

    clean_3d = session_output.clean_3d
    monkeypatch.setattr(session_output, "clean_3d", spy)
    paint, _ = paint_middle(phantom.labels, 5)
    own = SegmentationSession("filterbank", device="cpu")
    own.set_image(phantom.image, phantom.spacing)
    for _ in own.segment(paint):
        pass
    own.labels(None)
    assert seen and all(seen)
    seen.clear()
    other = make_phantom(shape=SHAPE, seed=11)
    atlas = SegmentationSession("filterbank", device="cpu")
    atlas.set_image(phantom.image, phantom.spacing)
    for _ in atlas.segment(
        paint_middle(other.labels, 5)[0],
        support_image=other.image,
        support_spacing=other.spacing,
    ):
        pass
    atlas.labels(None)
    assert seen and not any(seen)


def test_paint_on_another_axis(phantom):
    x = SHAPE[2] // 3
    paint = np.zeros(SHAPE, np.uint8)
    paint[:, :, x][phantom.labels[:, :, x] == 5] = 5
    assert find_support_slice(paint) == (2, x)
    session = SegmentationSession("filterbank", device="cpu")
    session.set_image(phantom.image, phantom.spacing)
    for _ in session.segment(paint):
        pass
    assert session.axis == 2
    assert session.encoder_calls == SHAPE[2]
    assert session.labels(0.5).shape == SHAPE


@pytest.mark.parametrize(
    ("make_paint", "message"),
    [
        (lambda: np.zeros(SHAPE, np.uint8), "empty"),
        (lambda: np.ones((4, 8, 8), np.uint8), "grid"),
        (lambda: -np.ones(SHAPE, np.int16), "negative"),
    ],
)
def test_bad_support(phantom, make_paint, message):
    session = SegmentationSession("filterbank", device="cpu")
    session.set_image(phantom.image, phantom.spacing)
    with pytest.raises(SupportError, match=message):
        list(session.segment(make_paint()))
    assert session.encoder_calls == 0


def test_bad_images_and_arguments(phantom):
    session = SegmentationSession("filterbank", device="cpu")
    with pytest.raises(ValueError, match="3D"):
        session.set_image(np.zeros((8, 8)))
    bad = phantom.image.astype(np.float32).copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        session.set_image(bad)
    with pytest.raises(VolumeTooLargeError, match="GiB"):
        session.set_image(phantom.image, max_bytes=1000)
    session.set_image(phantom.image, phantom.spacing)
    paint, _ = paint_middle(phantom.labels, 5)
    with pytest.raises(ValueError, match="prototypes"):
        list(session.segment(paint, n_prototypes=0))
    for _ in session.segment(paint):
        pass
    for prior in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="prior"):
            session.labels(prior)
    with pytest.raises(ValueError, match="device"):
        SegmentationSession("filterbank", device="quantum")


@pytest.mark.parametrize(("n", "start", "size"), [(10, 0, 3), (10, 9, 4), (7, 3, 2), (1, 0, 8)])
def test_outward_batches_cover_range_once(n, start, size):
    batches = list(_outward_batches(n, start, size))
    seen = [i for lo, hi in batches for i in range(lo, hi)]
    assert sorted(seen) == list(range(n))
    assert batches[0][0] <= start < batches[0][1]


@pytest.mark.parametrize("refine", [0, 2])
def test_set_prototypes_gives_what_segment_gives_with_that_k(phantom, refine):
    """The selector's refit (which skips the unseen first pass's upsampling and reuses its
    scores in the refinement) lands on the same result as segmenting with that K."""
    zs = np.flatnonzero((phantom.labels == 5).any(axis=(1, 2)))
    paint = np.zeros(SHAPE, np.uint8)
    z = int(zs[len(zs) // 4])  # off the middle, where the refinement moves the prototypes
    paint[z][phantom.labels[z] == 5] = 5
    results = []
    for via_selector in (False, True):
        # paint this far off the middle takes the second pass from the organ's body, after
        # which the selector refits that pass's support (test_paint_position): not this path
        session = SegmentationSession(
            "filterbank", device="cpu", refine=refine, end_second_pass=False
        )
        session.set_image(phantom.image, phantom.spacing)
        for _ in session.segment(paint, n_prototypes=1 if via_selector else 3):
            pass
        if via_selector:
            session.set_prototypes(3)
        assert bool(session.refine_trace) is (refine > 0)
        results.append((session.labels(None), session.probabilities(0.5)))
    assert np.array_equal(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-5)


def test_a_refit_leaves_the_previous_score_arrays_untouched(phantom):
    """The widget's background relabel reads the last result's arrays while a refit may run
    (napari_tpm/_widget/_relabel.py): a rescore must write new arrays, not refill the old."""
    session = SegmentationSession("filterbank", device="cpu", batch_size=8)
    session.set_image(phantom.image, phantom.spacing)
    paint, _ = paint_middle(phantom.labels, 5)
    for _ in session.segment(paint, n_prototypes=1):
        pass
    before = session.scores()
    kept = before.copy()
    session.set_prototypes(3)
    assert not np.shares_memory(before, session.scores())
    np.testing.assert_array_equal(before, kept)


def test_labels_into_a_buffer_reuse_the_auto_priors_measurement(liver_session, monkeypatch):
    """A dock's relabel (its own buffer, the whole slice range) at the prior the auto prior
    just measured copies that labelling instead of running the 3D clean-up again."""
    session, _ = liver_session
    session.set_prototypes(session.n_prototypes)  # fresh scores: nothing measured yet
    shape = session.scores().shape
    n = shape[session.axis]
    fresh = np.zeros(shape, np.int32)
    session.labels(0.5, out=fresh, z_range=(0, n - 1), connected=True)  # labelled in full
    assert session.auto_prior() == 0.5  # calibrated, mid-organ paint: no tip shift
    monkeypatch.setattr(session, "_clean_3d", lambda view, **_: pytest.fail("labelled twice"))
    out = np.zeros(shape, np.int32)
    assert session.labels(0.5, out=out, z_range=(0, n - 1), connected=True) is out
    np.testing.assert_array_equal(out, fresh)
    with pytest.raises(pytest.fail.Exception, match="labelled twice"):
        session.labels(0.5, out=out, z_range=(1, n - 1))  # a narrower range labels again


def test_the_outlined_slice_keeps_the_paint_and_a_stroke_is_still_grown(liver_session, phantom):
    """``options.exact_paint``: where the liver was outlined, the result on that slice is the
    paint; a thin stroke outlines nothing, so its slice shows the organ it was grown into."""
    session, _ = liver_session
    paint, z = paint_middle(phantom.labels, 5)
    assert session._require_support().outlined == {z: 5}
    assert ((session.labels(None)[z] == 5) == (paint[z] == 5)).all()
    liver = phantom.labels[z] == 5
    rows = np.flatnonzero(liver.any(axis=1))
    stroke = np.zeros(phantom.labels.shape, np.uint8)
    row = int(rows[len(rows) // 2])
    cols = np.flatnonzero(liver[row])
    stroke[z, row, cols[2] : cols[-2]] = 5  # one pixel thick, inside the liver
    stroked = SegmentationSession("filterbank", device="cpu", batch_size=8)
    stroked.set_image(phantom.image, phantom.spacing)
    for _ in stroked.segment(stroke):
        pass
    found = stroked.labels(None)[z] == 5
    assert found.sum() > 5 * (stroke[z] == 5).sum()
    assert dice(found, liver) > 0.6
