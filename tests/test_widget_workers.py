"""The dock's thread workers let go of their job once done (``napari_tpm._widget._thread``).

napari's ``create_worker`` keeps every worker it makes for the viewer's lifetime, and a worker
holds its job: a refit its session (the run's scores and features, ~200 MB on a CT), a cancelled
segmentation or adaptation its suspended generator and with it the request's snapshots. Memory
then grew with every run of a long session. These tests check that once a run, a refit or a
cancelled run has finished, nothing of its job is reachable through its worker.

They check the job, not the worker object: PySide6 (6.11) now and then keeps the Python wrapper
of a finished worker whose C++ object Qt has already deleted, with no Python referrer; the box
the worker got its job in is empty by then, so such a wrapper holds nothing large.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref

import pytest
from gui_helpers import SEGMENT_TIMEOUT_MS, settle

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # Xvfb gives GL; no xcb libraries needed

pytestmark = pytest.mark.gui

SHAPE = (24, 96, 96)


class Sentinel:
    """Stands in for a job's large arrays: weakly referenceable, found by the garbage collector."""


def alive(kind: type) -> list[object]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, kind)]


def collected(ref: weakref.ref) -> bool:
    gc.collect()
    return ref() is None


def wait_gone(qtbot, ref: weakref.ref) -> None:
    """Qt delivers a finished worker's last queued signals a moment after ``finished``."""
    qtbot.waitUntil(lambda: collected(ref), timeout=2_000)


# ------------------------------------------------------------------ the helper on its own
def test_a_finished_worker_holds_nothing_of_its_job(qtbot):
    from napari_tpm._widget._thread import job_worker

    def steps(sentinel: Sentinel, n: int):
        yield from range(n)
        return n

    def call(sentinel: Sentinel, k: int) -> int:
        return k

    for func, expected in ((steps, 3), (call, 2)):
        sentinel = Sentinel()
        ref = weakref.ref(sentinel)
        worker = job_worker(func, sentinel, expected)
        del sentinel
        got: list[object] = []
        worker.returned.connect(got.append)
        with qtbot.waitSignal(worker.finished, timeout=5_000):
            worker.start()
        assert got == [expected]
        assert collected(ref), f"the {func.__name__} worker still holds its job"
        assert worker.is_running is False


def test_a_cancelled_generator_is_closed_in_its_thread(qtbot):
    """Quit stops resuming the generator: it is closed (GeneratorExit at its ``yield``) in the
    worker's thread before ``finished``, and so frees what its frame held."""
    from napari_tpm._widget._thread import job_worker

    closed_in: list[threading.Thread] = []
    first = threading.Event()

    def steps(sentinel: Sentinel):
        try:
            for i in range(1000):
                first.set()
                time.sleep(0.01)
                yield i
        finally:
            closed_in.append(threading.current_thread())

    sentinel = Sentinel()
    ref = weakref.ref(sentinel)
    worker = job_worker(steps, sentinel)
    del sentinel
    aborted: list[bool] = []
    worker.aborted.connect(lambda: aborted.append(True))
    with qtbot.waitSignal(worker.finished, timeout=5_000):
        worker.start()
        assert first.wait(5)
        worker.quit()
    assert aborted == [True]
    assert closed_in and closed_in[0] is not threading.main_thread()
    assert collected(ref)


# ------------------------------------------------------------------ the dock
@pytest.fixture(scope="module")
def phantom():
    from napari_tpm.phantom import make_phantom

    return make_phantom(shape=SHAPE, seed=3)


@pytest.fixture
def widget(open_dock, phantom):
    return open_dock(phantom)[1]


def let_go_of_the_session(qtbot, widget) -> None:
    """Drop the dock's session, as choosing another model does before the next run: it must
    then be freed, with its scores and features (a refit's worker held it)."""
    session = weakref.ref(widget.session)
    widget.controller.state.session = None
    wait_gone(qtbot, session)


def test_runs_and_refits_keep_no_job(qtbot, widget, errors):
    from napari_tpm._widget._worker import SegmentRequest

    widget.segment()
    settle(qtbot, widget)
    assert widget.state.complete and errors == []
    widget.prototypes_spinbox.value = 2  # refits from the cached features
    assert widget.running
    settle(qtbot, widget)
    assert widget.session.n_prototypes == 2 and errors == []
    assert alive(SegmentRequest) == []
    let_go_of_the_session(qtbot, widget)


def test_a_cancelled_run_keeps_no_job(qtbot, widget, slow_segment, errors):
    from napari_tpm._widget._worker import SegmentRequest

    yielded = slow_segment.steps
    widget.segment()
    qtbot.waitUntil(lambda: len(yielded) >= 2, timeout=SEGMENT_TIMEOUT_MS)
    widget.cancel()
    settle(qtbot, widget)
    assert yielded[-1].done < yielded[-1].total, "cancel came too late to stop anything"
    assert widget.state.partial and errors == []
    assert alive(SegmentRequest) == []  # the suspended generator held it
    let_go_of_the_session(qtbot, widget)
