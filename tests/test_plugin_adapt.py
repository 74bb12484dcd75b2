"""The widget's "Adapt to this volume" action in a real (Xvfb) napari viewer.

A tiny untrained ResNet model stands in for a zoo model: the widget's model list is replaced by
``["tiny", "filterbank"]`` and the session's ``load_model`` returns the tiny model for "tiny",
so no checkpoint is read. Adaptation runs 3 steps on a 12 x 64 x 64 phantom with the tiny-volume
settings of tests/test_adapt.py.
"""

from __future__ import annotations

import gc
import os
import weakref

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

SHAPE = (12, 64, 64)
TIMEOUT_MS = 60_000
#: a 64 x 64 grid needs smaller supervoxels and supports than the 256 x 256 default
TINY = {"size": 64, "min_size": 60, "config": {"min_support_px": 25}, "analysis_episodes": 2}


@pytest.fixture(scope="module")
def phantom():
    from napari_tpm.phantom import make_phantom

    return make_phantom(shape=SHAPE, seed=3)


@pytest.fixture
def messages(monkeypatch):
    """Errors and infos the widget shows, in order, as ("error"|"info", text)."""
    from napari_tpm._widget import _controller, _models

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(_controller, "show_error", lambda m: seen.append(("error", m)))
    for module in (_controller, _models):
        monkeypatch.setattr(module, "show_info", lambda m: seen.append(("info", m)))
    return seen


@pytest.fixture
def widget(make_napari_viewer, phantom, monkeypatch, messages):
    """A viewer with the phantom and the widget offering the tiny model (chosen) on the CPU."""
    import napari_tpm.session as session_module
    from napari_tpm._widget import _models
    from napari_tpm.checkpoints import TPMModel, load_model
    from napari_tpm.encoders import build_encoder

    def tiny_or_zoo(name, device="cpu"):
        if name == "tiny":
            model = TPMModel(build_encoder("resnet18-l3"), calibrated=True, name="tiny")
            return model
        return load_model(name, device=device)

    monkeypatch.setattr(_models, "available_models", lambda: ["tiny", "filterbank"])
    monkeypatch.setattr(session_module, "load_model", tiny_or_zoo)
    viewer = make_napari_viewer()
    viewer.add_image(phantom.image, name="phantom", scale=phantom.spacing)
    _, w = viewer.window.add_plugin_dock_widget("napari-tpm", "TPM Segmentation")
    w.model_combo.value = "tiny"
    w.device_combo.value = "cpu"
    w.adapt_options = dict(TINY)
    return w


def test_adapt_swaps_in_the_adapted_model_and_keeps_it(qtbot, widget, phantom, messages):
    from qtpy.QtWidgets import QWidget

    from napari_tpm.adapt import default_steps

    for name in ("tpm_adapt_button", "tpm_adapt_steps_spinbox"):
        assert widget.native.findChild(QWidget, name) is not None, name
    assert widget.adapt_steps_spinbox.max == 5000 and widget.adapt_steps_spinbox.min == 1
    assert widget.adapt_steps_spinbox.value == default_steps("cpu")
    assert widget.model_label.value == "Model: tiny"
    assert widget.adapt_button.enabled
    short = widget.adapt_estimate_label.value
    widget.adapt_steps_spinbox.value = 3000
    assert widget.adapt_estimate_label.value != short  # the estimate follows the steps
    widget.adapt_steps_spinbox.value = 3

    worker = widget.adapt()
    assert worker is not None and widget.running
    assert not widget.adapt_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert [m for m in messages if m[0] == "error"] == []
    infos = [text for kind, text in messages if kind == "info"]
    assert any(t.startswith("TPM: Adapted in") and "tiny+adapted" in t for t in infos), infos
    assert widget.status_label.value.startswith("Adapted in")  # not "Adapting: ..." any more
    session = widget.session
    assert session.model.name == "tiny+adapted"
    assert session.model.card["adaptation"]["steps"] == 3
    assert "(adapted)" in widget.model_label.value
    assert widget.adapt_button.enabled and widget.segment_button.enabled
    assert not widget.cancel_button.enabled

    # Segment reuses the adapted session (no reload of the original "tiny")
    support = widget.new_support_layer()
    z = SHAPE[0] // 2
    support.data[z][phantom.labels[z] == 5] = 5
    widget.segment()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.session is session and session.model.name == "tiny+adapted"
    assert widget.result_layer is not None

    # picking another model drops the adapted one; picking "tiny" again is the original
    widget.model_combo.value = "filterbank"
    widget.model_combo.value = "tiny"
    assert widget.model_label.value == "Model: tiny"
    assert widget.session is None


def test_adapt_button_disabled_for_the_filterbank(widget, messages):
    widget.model_combo.value = "filterbank"
    assert not widget.adapt_button.enabled
    assert "no trainable encoder" in widget.adapt_button.tooltip
    assert widget.model_label.value == "Model: filterbank"
    assert widget.adapt() is None and not widget.running
    assert len(messages) == 1 and messages[0][0] == "error", messages
    widget.model_combo.value = "tiny"
    assert widget.adapt_button.enabled


def test_cancel_leaves_the_original_model(qtbot, widget, messages):
    widget.adapt_steps_spinbox.value = 2000  # far more than can run before the cancel
    seen: list[object] = []
    worker = widget.adapt()
    worker.yielded.connect(seen.append)
    del worker
    qtbot.waitUntil(
        lambda: any(getattr(p, "stage", "") == "adapt" for p in seen), timeout=TIMEOUT_MS
    )
    widget.cancel_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    steps = [p.done for p in seen if getattr(p, "stage", "") == "adapt"]
    assert steps and max(steps) < 2000
    assert [m for m in messages if m[0] == "error"] == []
    assert widget.session.model.name == "tiny"
    assert widget.model_label.value == "Model: tiny"
    assert widget.adapt_button.enabled and not widget.cancel_button.enabled
    # the cancelled worker's suspended generator held the session (and the image): once the
    # dock lets go of its session, as choosing another model does, nothing keeps it
    seen.clear()  # SessionReady holds it
    session = weakref.ref(widget.session)
    widget.controller.state.session = None
    qtbot.waitUntil(lambda: gc.collect() >= 0 and session() is None, timeout=2_000)
