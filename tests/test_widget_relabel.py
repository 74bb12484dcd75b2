"""The full relabel (3D clean-up) runs in a worker thread, and only a current result lands.

On a 3 M-voxel liver the relabel with the 3D steps takes 0.7-1.3 s; on the GUI thread it froze
napari whenever the class-prior slider came to rest and at the end of each run. These tests
record on which thread ``SegmentationSession.labels`` runs with the 3D steps, hold that call
behind a gate to create the races a user causes (moving the slider again, segmenting again,
closing napari, pressing Apply) and check what ends up in the preview layer.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest
from gui_helpers import SEGMENT_TIMEOUT_MS, settle

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # Xvfb gives GL; no xcb libraries needed

pytestmark = pytest.mark.gui

SHAPE = (24, 96, 96)
LIVER = 5


@dataclass
class Calls:
    """``labels(connected=True)`` calls: on the main thread or not, and how many at once."""

    main_thread: list[bool] = field(default_factory=list)
    recording: bool = True
    gate: threading.Event = field(default_factory=threading.Event)
    entered: int = 0
    active: int = 0
    most_at_once: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def calls(monkeypatch):
    """Record full relabels; those off the main thread wait for ``calls.gate`` (open at first)."""
    from napari_tpm.session import SegmentationSession

    original = SegmentationSession.labels
    seen = Calls()
    seen.gate.set()

    def labels(self, prior=None, **kwargs):
        full = kwargs.get("connected") is True and kwargs.get("slices") is None
        if not full or not seen.recording:
            return original(self, prior, **kwargs)
        main = threading.current_thread() is threading.main_thread()
        seen.main_thread.append(main)
        if main:
            return original(self, prior, **kwargs)
        with seen.lock:
            seen.entered += 1
            seen.active += 1
            seen.most_at_once = max(seen.most_at_once, seen.active)
        try:
            assert seen.gate.wait(30), "the test never opened the gate"
            return original(self, prior, **kwargs)
        finally:
            with seen.lock:
                seen.active -= 1

    monkeypatch.setattr(SegmentationSession, "labels", labels)
    yield seen
    seen.gate.set()  # never leave a worker waiting


@pytest.fixture(scope="module")
def phantom():
    from napari_tpm.phantom import make_phantom

    return make_phantom(shape=SHAPE, seed=3)


@pytest.fixture
def dock(open_dock, phantom, qtbot):
    """A viewer with the phantom and the dock, segmented once (the relabel has landed)."""
    viewer, widget, _ = open_dock(phantom)
    viewer.dims.set_current_step(0, int(np.argmax((phantom.labels == LIVER).sum(axis=(1, 2)))))
    widget.segment()
    settle(qtbot, widget)
    assert widget.session is not None and widget.state.complete
    return viewer, widget


def expected(widget, calls: Calls, prior: float) -> np.ndarray:
    """The final preview at ``prior``: the session's labels with the 3D steps (not recorded)."""
    out = np.zeros_like(widget.result_layer.data)
    calls.recording = False
    try:
        widget.session.labels(prior, out=out, z_range=widget.controller.z_range(), connected=True)
    finally:
        calls.recording = True
    return out


def landed_priors(widget) -> list[float | None]:
    """Wrap the dock's landing hook: the prior of every relabel written into the layer."""
    relabels = widget.controller.adjust.relabels
    seen: list[float | None] = []
    land = relabels._land

    def record(result):
        seen.append(result.job.prior)
        land(result)

    relabels._land = record
    return seen


def start_gated_relabel(qtbot, widget, calls: Calls, prior: float) -> object:
    """Move the slider to ``prior`` and wait until its rest relabel holds at the gate."""
    calls.gate.clear()
    before = calls.entered
    widget.prior_slider.value = prior
    qtbot.waitUntil(lambda: calls.entered > before, timeout=5_000)
    worker = widget.controller.adjust.relabels.worker
    assert worker is not None and widget.running
    return worker


def test_end_of_run_and_rest_relabels_run_in_a_worker(qtbot, dock, calls):
    viewer, widget = dock
    widget.segment()  # again, now with the recorder in place
    settle(qtbot, widget)
    assert calls.main_thread == [False], "the end-of-run 3D relabel ran on the GUI thread"
    np.testing.assert_array_equal(widget.result_layer.data, expected(widget, calls, 0.5))
    assert widget.status_label.value.startswith("Segmented in"), widget.status_label.value
    assert "label 5:" in widget.status_label.value

    z = viewer.dims.current_step[0]
    shown = widget.result_layer.data[z].copy()
    widget.prior_slider.value = 0.8  # the live preview: the displayed slice, at once
    assert not np.array_equal(widget.result_layer.data[z], shown)
    assert calls.main_thread == [False]  # nothing with the 3D steps yet
    settle(qtbot, widget)  # the slider rests: the 3D relabel runs in the worker
    assert calls.main_thread == [False, False]
    np.testing.assert_array_equal(widget.result_layer.data, expected(widget, calls, 0.8))
    assert widget.status_label.value.startswith("Prior 0.800"), widget.status_label.value


def test_a_slider_move_drops_the_relabel_in_flight(qtbot, dock, calls):
    _viewer, widget = dock
    landed = landed_priors(widget)
    worker = start_gated_relabel(qtbot, widget, calls, 0.3)
    widget.prior_slider.value = 0.7  # before the 0.3 relabel has finished
    qtbot.wait(2 * widget.controller.adjust.full_timer.interval())  # its rest relabel waits
    assert widget.running and calls.active == 1
    calls.gate.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=SEGMENT_TIMEOUT_MS)
    settle(qtbot, widget)
    assert landed == [pytest.approx(0.7)], "the stale 0.3 result was written"
    assert calls.most_at_once == 1, "two relabels ran at once"
    np.testing.assert_array_equal(widget.result_layer.data, expected(widget, calls, 0.7))


def test_a_new_run_drops_the_relabel_in_flight(qtbot, dock, calls):
    _viewer, widget = dock
    landed = landed_priors(widget)
    start_gated_relabel(qtbot, widget, calls, 0.2)
    widget.prior_slider.value = 0.5
    widget.segment()  # a run while the rest relabel of 0.2 holds: it must never land
    assert widget.state.running
    calls.gate.set()
    settle(qtbot, widget)
    assert landed == [pytest.approx(0.5)], landed  # only the new run's own relabel
    assert widget.status_label.value.startswith("Segmented in")
    np.testing.assert_array_equal(widget.result_layer.data, expected(widget, calls, 0.5))


def test_apply_during_a_relabel_copies_the_final_result(qtbot, dock, calls, errors):
    viewer, widget = dock
    start_gated_relabel(qtbot, widget, calls, 0.8)
    assert widget.apply() == 0  # not now: the preview has no 3D clean-up yet
    assert "TPM labels" not in [layer.name for layer in viewer.layers]
    widget.apply_button.native.click()  # pressed twice: still one edit
    calls.gate.set()
    settle(qtbot, widget)
    target = viewer.layers["TPM labels"]
    np.testing.assert_array_equal(target.data, expected(widget, calls, 0.8))
    assert errors == []
    target.undo()
    assert not target.data.any()


def test_closing_napari_during_a_relabel_is_clean(qtbot, dock, calls):
    viewer, widget = dock
    landed = landed_priors(widget)
    worker = start_gated_relabel(qtbot, widget, calls, 0.8)
    viewer.close()
    assert widget.state.closed
    calls.gate.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=SEGMENT_TIMEOUT_MS)
    qtbot.wait(50)  # the worker's signals arrive after it ends: they must find nothing to do
    assert landed == []
    assert not widget.controller.relabelling


def test_finished_relabels_do_not_keep_their_run_alive(qtbot, dock):
    """napari's create_worker keeps every worker for the viewer's lifetime; a relabel job holds
    its run's scores (200 MB on a CT), so the jobs must not be reachable once they are done."""
    import gc

    from napari_tpm._widget._relabel import RelabelJob

    _viewer, widget = dock
    for prior in (0.3, 0.6):
        widget.prior_slider.value = prior
        settle(qtbot, widget)
    qtbot.wait(20)
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, RelabelJob)]


def test_a_refit_shows_the_displayed_slice_before_its_full_relabel(qtbot, dock, calls):
    """A prototype change writes the displayed slice at once; the 3D relabel follows."""
    viewer, widget = dock
    z = viewer.dims.current_step[0]
    session = widget.session
    before = widget.result_layer.data[z].copy()
    calls.gate.clear()
    entered = calls.entered
    widget.prototypes_spinbox.value = 1  # the default is 3
    qtbot.waitUntil(lambda: calls.entered > entered, timeout=SEGMENT_TIMEOUT_MS)  # held at the gate
    assert session.n_prototypes == 1
    quick = np.zeros_like(widget.result_layer.data)
    session.labels(0.5, out=quick, z_range=widget.controller.z_range(), slices=(z, z))
    assert not np.array_equal(quick[z], before), "one and three prototypes agree on this slice"
    np.testing.assert_array_equal(widget.result_layer.data[z], quick[z])
    calls.gate.set()
    settle(qtbot, widget)
    np.testing.assert_array_equal(widget.result_layer.data, expected(widget, calls, 0.5))
    status = widget.status_label.value
    assert status.startswith("Refitted 1 prototype(s)"), status


def test_with_auto_on_a_refit_shows_the_slice_while_the_prior_is_measured(
    qtbot, dock, calls, monkeypatch
):
    """With "Auto" ticked the displayed slice does not wait for the auto prior's measurement
    (a labelling of the whole volume): it is drawn at the preview of that prior."""
    from napari_tpm.session import SegmentationSession

    viewer, widget = dock
    widget.auto_prior_checkbox.value = True
    settle(qtbot, widget)
    z = viewer.dims.current_step[0]
    session = widget.session
    before = widget.result_layer.data[z].copy()
    measuring, gate = threading.Event(), threading.Event()
    measure = SegmentationSession.auto_prior

    def held(self):
        if threading.current_thread() is not threading.main_thread():
            measuring.set()
            assert gate.wait(30), "the test never opened the gate"
        return measure(self)

    monkeypatch.setattr(SegmentationSession, "auto_prior", held)
    try:
        widget.prototypes_spinbox.value = 1  # the default is 3
        qtbot.waitUntil(measuring.is_set, timeout=SEGMENT_TIMEOUT_MS)
        qtbot.waitUntil(lambda: not np.array_equal(widget.result_layer.data[z], before))
        quick = np.zeros_like(widget.result_layer.data)
        prior = session.auto_prior_preview()
        session.labels(prior, out=quick, z_range=widget.controller.z_range(), slices=(z, z))
        np.testing.assert_array_equal(widget.result_layer.data[z], quick[z])
    finally:
        gate.set()
    settle(qtbot, widget)
    final = expected(widget, calls, measure(session))
    np.testing.assert_array_equal(widget.result_layer.data, final)
