"""Atlas use of the dock: the paint lives on another scan, chosen as the support image.

Like test_plugin_widget.py: the training-free "filterbank" model on small phantoms, in a real
(Xvfb) napari viewer.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from gui_helpers import LIVER, dice, paint_slice, run

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # Xvfb gives GL; no xcb libraries needed

pytestmark = pytest.mark.gui

SHAPE = (24, 96, 96)
#: Dice of the liver with the paint on another phantom (seed 11) as support image: measured
#: 0.947 (2-core CPU); the bound leaves room for changes in the encoder or calibration.
MIN_ATLAS_DICE = 0.7


@pytest.fixture(scope="module")
def phantom():
    from napari_tpm.phantom import make_phantom

    return make_phantom(shape=SHAPE, seed=3)


def _dock_painting_an_atlas(
    viewer, phantom, atlas_image, atlas_labels, image_meta=None, atlas_meta=None
) -> tuple:
    """The dock on ``phantom`` with the liver of ``atlas_labels`` painted on the atlas image."""
    viewer.add_image(phantom.image, name="phantom", scale=phantom.spacing, metadata=image_meta)
    viewer.add_image(atlas_image, name="atlas", scale=phantom.spacing, metadata=atlas_meta)
    _, widget = viewer.window.add_plugin_dock_widget("napari-tpm", "TPM Segmentation")
    widget.model_combo.value = "filterbank"
    widget.image_combo.value = viewer.layers["phantom"]
    widget.support_image_combo.value = viewer.layers["atlas"]
    support = widget.new_support_layer()
    z = int(np.argmax((atlas_labels == LIVER).sum(axis=(1, 2))))
    support.data[z][atlas_labels[z] == LIVER] = LIVER
    return widget, support


@pytest.mark.parametrize("mirrored", [False, True])
def test_support_painted_on_another_scan(qtbot, make_napari_viewer, phantom, errors, mirrored):
    """Atlas use: the paint lives on another volume, chosen as the support image.

    ``mirrored``: both were read from files, the atlas's storing its voxels right to left; the
    dock reorders it to the image's axes and says so.
    """
    from napari_tpm._reader import GEOMETRY_KEY
    from napari_tpm.phantom import make_phantom

    atlas = make_phantom(shape=SHAPE, seed=11)
    atlas_image, atlas_labels = atlas.image, atlas.labels
    image_meta, atlas_meta = {}, {}
    if mirrored:
        atlas_image, atlas_labels = atlas_image[:, :, ::-1], atlas_labels[:, :, ::-1]
        image_meta = {GEOMETRY_KEY: {"direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)}}
        atlas_meta = {GEOMETRY_KEY: {"direction": (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)}}
    widget, support = _dock_painting_an_atlas(
        make_napari_viewer(), phantom, atlas_image, atlas_labels, image_meta, atlas_meta
    )
    run(qtbot, widget)
    assert errors == []
    score = dice(widget.result_layer.data == LIVER, phantom.labels == LIVER)
    assert score > MIN_ATLAS_DICE, score
    # the status line says the result came from a second pass on this scan
    status = widget.status_label.value
    assert "second pass from slice" in status, status
    assert ("support image reordered RPS -> LPS" in status) == mirrored, status
    assert "may be a look-alike" not in status, status  # the atlas's liver fits its paint
    # the manual slider starts at the second pass's boundary (the CLI's --prior auto) ...
    session = widget.session
    start = round(session.auto_prior(), 3)
    assert widget.prior_slider.value == pytest.approx(start) and start > 0.5
    assert np.array_equal(widget.result_layer.data > 0, session.labels(start) > 0)
    assert f"Prior {start:.3f}" in status, status
    if not mirrored:
        return
    # ... and goes back to the calibrated 0.5 once the paint is on the image itself
    from napari_tpm._widget._main import SAME_IMAGE

    widget.support_image_combo.value = SAME_IMAGE
    support.data[...] = 0
    zq = paint_slice(phantom)
    support.data[zq][phantom.labels[zq] == LIVER] = LIVER
    run(qtbot, widget)
    assert errors == [] and not session.bootstrapped
    assert widget.prior_slider.value == pytest.approx(0.5)


def test_a_poor_fit_to_another_scans_paint_is_flagged(
    qtbot, make_napari_viewer, phantom, errors, monkeypatch
):
    """Below the doubt threshold the status line and a napari warning say: check it."""
    import napari_tpm._session_contrast as session_contrast
    from napari_tpm._widget import _controller
    from napari_tpm.phantom import make_phantom

    monkeypatch.setattr(session_contrast, "DOUBTFUL_FIT", 10.0)  # no fit reaches this
    warnings: list[str] = []
    monkeypatch.setattr(_controller, "show_warning", warnings.append)
    atlas = make_phantom(shape=SHAPE, seed=11)
    widget, _ = _dock_painting_an_atlas(make_napari_viewer(), phantom, atlas.image, atlas.labels)
    run(qtbot, widget)
    assert errors == []
    assert widget.session.doubtful_labels == (LIVER,)
    status = widget.status_label.value
    assert f"label {LIVER} fits the paint poorly: it may be a look-alike" in status, status
    assert len(warnings) == 1 and "paint one slice of this scan" in warnings[0], warnings
