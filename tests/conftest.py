"""Shared fixtures: the real development data under ../shared/data, skipped cleanly when absent."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for modules of tiny tensors: extra threads only add contention there."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _none_refcount_guard(request: pytest.FixtureRequest) -> None:
    """Skip a GUI test instead of aborting the whole run on a known Qt-binding bug.

    PySide6 6.12.0 under Python < 3.12 drops a reference to ``None`` on many Qt calls that
    napari itself makes (about 900 per layer added and removed). ``None`` is not immortal before
    3.12, so after a few dozen viewers the interpreter aborts ("none_dealloc"), killing every
    test after it. PySide6 6.9.3 and PyQt6 6.11 do not have the bug.
    """
    if "gui" not in request.node.keywords:
        return
    if sys.version_info < (3, 12) and sys.getrefcount(None) < 40_000:
        pytest.skip(
            "Python's reference count of None is nearly exhausted by the Qt binding's "
            "refcount bug (PySide6 6.12 on Python < 3.12): use PySide6<6.12 or PyQt6"
        )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the small real CT/MR volumes; the test is skipped when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real development data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def open_dock(make_napari_viewer):
    """Factory for GUI tests: ``open_dock(phantom, paint=True) -> (viewer, widget, support)``.

    A viewer showing the phantom with the TPM dock opened through the manifest (filter bank,
    CPU) and a new support layer, with the liver (label 5) painted on its largest slice.
    """
    import numpy as np

    def _open(phantom, paint: bool = True):
        viewer = make_napari_viewer()
        viewer.add_image(phantom.image, name="phantom", scale=phantom.spacing)
        _, widget = viewer.window.add_plugin_dock_widget("napari-tpm", "TPM Segmentation")
        widget.model_combo.value = "filterbank"
        widget.device_combo.value = "cpu"
        support = widget.new_support_layer()
        if paint:
            liver = phantom.labels == 5
            z = int(np.argmax(liver.sum(axis=(1, 2))))
            support.data[z][liver[z]] = 5
            support.refresh()
        return viewer, widget, support

    return _open


class SlowRuns:
    """What ``slow_segment`` gives a test: the steps yielded so far, and the sleep per step."""

    def __init__(self) -> None:
        self.steps: list[object] = []
        self.delay = 0.2  # set to 0 to let the next run go at full speed


@pytest.fixture
def slow_segment(monkeypatch: pytest.MonkeyPatch) -> SlowRuns:
    """Every segmentation step sleeps ``delay`` s, so a GUI test can cancel or close mid-run."""
    import time

    from napari_tpm.session import SegmentationSession

    original = SegmentationSession.segment
    runs = SlowRuns()

    def slow(self, *args, **kwargs):
        for step in original(self, *args, **kwargs):
            runs.steps.append(step)
            time.sleep(runs.delay)
            yield step

    monkeypatch.setattr(SegmentationSession, "segment", slow)
    return runs


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every message the dock widget shows with show_error, in order (GUI tests)."""
    from napari_tpm._widget import _controller

    seen: list[str] = []
    monkeypatch.setattr(_controller, "show_error", seen.append)
    return seen


def _have_display() -> bool:
    """True when Qt can open windows: a DISPLAY, or an Xvfb binary for pytest-xvfb to start."""
    return bool(os.environ.get("DISPLAY")) or shutil.which("Xvfb") is not None


if not _have_display():
    # Without any X server Qt's xcb plugin aborts the whole run; offscreen keeps the non-GL tests
    # alive and the napari viewer tests are skipped below with the reason.
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _have_display():
        return
    skip = pytest.mark.skip(reason="napari viewers need an X server: install xvfb (see README)")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)
