"""Painting and applying: the support layer, background strokes, Auto-update and Apply.

Corrections are ordinary paint: strokes of the structure's label on any slice add evidence, and
strokes of :data:`napari_tpm.session.BACKGROUND_LABEL` (the "Background stroke" button) mark
what is not the structure. Segmenting again reuses the session's cached features, so a
correction costs a prototype fit and a rescore, not an encoder pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_info
from qtpy.QtCore import QTimer

from napari_tpm._widget._controller import APPLY_NAME, SUPPORT_NAME
from napari_tpm._widget._layers import (
    adopt_geometry,
    apply_preview,
    data_index,
    grid_kwargs,
    new_labels_data,
    same_grid,
)

if TYPE_CHECKING:
    from napari_tpm._widget._controller import Controller

AUTO_UPDATE_DELAY_MS = 1000


class PaintControls:
    """The support layer and its strokes, Auto-update's debounce, and Apply."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.ui = controller.ui
        self.state = controller.state
        self._watched: Labels | None = None
        self._label_before_background = 1
        self.auto_timer = QTimer(self.ui.status_label.native)
        self.auto_timer.setSingleShot(True)
        self.auto_timer.setInterval(AUTO_UPDATE_DELAY_MS)
        self.auto_timer.timeout.connect(self._on_auto_update_timeout)

    def new_support_layer(self) -> Labels | None:
        """Add an empty ``support`` Labels layer on the (support) image's grid, ready to paint."""
        base = self.c.support_image_layer or self.c.image_layer
        if base is None:
            self.c.error("open an image first, then add a support layer to paint on.")
            return None
        shape = np.shape(base.data)
        if len(shape) != 3 or base.rgb:
            self.c.error(f"'{base.name}' is not a 3D volume (shape {shape}).")
            return None
        layer = self.c.viewer.add_labels(
            new_labels_data(shape), name=SUPPORT_NAME, **grid_kwargs(base)
        )
        layer.mode = "paint"
        layer.selected_label = 1
        self.ui.support_combo.reset_choices()
        self.ui.support_combo.value = layer
        self.c.viewer.layers.selection.active = layer
        z = data_index(layer, tuple(self.c.viewer.dims.point))
        self.c.status(
            f"Paint the whole structure (or a stroke inside it) on slice {z} of '{layer.name}' "
            "(or any slice; label 255 or 'Background stroke' marks what is not the structure), "
            "then press Segment volume."
        )
        return layer

    def background_stroke(self) -> None:
        """Toggle the support layer's brush between background (255) and the structure."""
        from napari_tpm.session import BACKGROUND_LABEL

        support = self.c.support_layer
        if support is None:
            self.c.error("no support layer. Press 'New support layer' first.")
            return
        if support.selected_label == BACKGROUND_LABEL:
            support.selected_label = self._label_before_background
            text = f"Painting label {support.selected_label} (the structure)."
        else:
            self._label_before_background = int(support.selected_label) or 1
            support.selected_label = BACKGROUND_LABEL
            text = (
                f"Painting background (label {BACKGROUND_LABEL}): strokes on any slice that are "
                "NOT the structure. Segment again (or tick Auto-update) to correct the result."
            )
        support.mode = "paint"
        self.c.viewer.layers.selection.active = support
        self.c.status(text)

    def adopt_geometry(self, layer: Any) -> None:
        """A Labels layer made by napari's button takes the chosen image's geometry."""
        image = self.c.image_layer
        if isinstance(layer, Labels) and image is not None and adopt_geometry(layer, image):
            self.c.status(f"'{layer.name}' placed on the grid of '{image.name}' (ready to paint).")

    def watch(self, layer: Labels | None) -> None:
        """Listen to ``layer``'s paint strokes (only one layer at a time)."""
        if self._watched is not None:
            self._watched.events.paint.disconnect(self.on_paint)
        self._watched = layer
        if layer is not None:
            layer.events.paint.connect(self.on_paint)

    def on_paint(self, _event: Any = None) -> None:
        """Debounce: each stroke restarts a single-shot timer; segment when painting pauses."""
        if self.ui.auto_update_checkbox.value and not self.state.closed:
            self.auto_timer.start()

    def _on_auto_update_timeout(self) -> None:
        if self.state.closed or not self.ui.auto_update_checkbox.value:
            return
        if self.state.running:
            self.state.rerun_pending = True
        else:
            self.c.segment()

    def apply(self) -> int:
        """Copy the preview into the target Labels layer as one undoable edit.

        While the background relabel (3D clean-up) runs, the copy waits for it: applying the
        preview before would copy the result without the clean-up (returns 0 then).
        """
        preview = self.c.result_layer
        if self.state.running:
            self.c.error("wait for the segmentation to finish before applying.")
            return 0
        if self.c.relabelling:  # the preview is not final until the 3D clean-up lands
            self.c.adjust.relabels.after_current(self.apply)
            self.c.status("Applying once the 3D clean-up of the preview has finished...")
            return 0
        if self.state.partial:
            self.c.error(
                f"the preview is partial ({self.state.partial}): press Segment volume to finish "
                "it before applying."
            )
            return 0
        if preview is None or not self.state.complete or not np.any(preview.data):
            self.c.error("nothing to apply yet; segment first.")
            return 0
        target = self.c.target_layer or self.c.find_layer(APPLY_NAME, Labels)
        if target is None:
            with self.c.keeping_selection():
                target = self.c.viewer.add_labels(
                    new_labels_data(preview.data.shape, preview.data.dtype),
                    name=APPLY_NAME,
                    **grid_kwargs(preview),
                )
            self.ui.target_combo.reset_choices()
            self.ui.target_combo.value = target
        if not same_grid(target, preview):
            self.c.error(
                f"the target layer '{target.name}' {tuple(target.data.shape)} is not on the "
                f"image's grid {tuple(preview.data.shape)}."
            )
            return 0
        if target.data.dtype.itemsize < preview.data.dtype.itemsize:
            show_info(f"TPM: '{target.name}' ({target.data.dtype}) may not hold these labels.")
        changed = apply_preview(target, preview.data)
        self.c.status(f"Applied {changed:,} voxels to '{target.name}' (Ctrl+Z to undo).")
        return changed
