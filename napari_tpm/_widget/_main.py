"""The TPM Segmentation dock widget: paint, segment the volume, correct, adjust, apply.

The dock is assembled from three parts, each with one job:

* :mod:`._layout` creates and places the controls (what the user sees);
* :mod:`._state` is the dock's memory (which session, is the preview complete or partial...);
* :mod:`._controller` turns events into session calls through one ordered result path
  (:mod:`._run_path`, a mixin the controller inherits);
  :mod:`._models` handles the model, device and Adapt controls, :mod:`._paint` the support
  layer, corrections, Auto-update and Apply, :mod:`._adjust` the class prior, slice range and
  connectivity of a finished result (its full relabel runs in a worker: :mod:`._relabel`).

The session (:class:`napari_tpm.session.SegmentationSession`) does all the maths; workers run it
off the GUI thread (:mod:`._worker`). One session per dock and no module-level state, so two
viewers never share anything. Torch and the session are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container
from napari.layers import Image, Labels

from napari_tpm._widget._controller import (
    APPLY_NAME,
    RESULT_NAME,
    SUPPORT_NAME,
    Controller,
)
from napari_tpm._widget._layout import Layout
from napari_tpm._widget._models import (
    LOAD_CHECKPOINT,
    ModelControls,
    available_devices,
)
from napari_tpm._widget._paint import PaintControls
from napari_tpm._widget._state import WidgetState

if TYPE_CHECKING:
    import napari

    from napari_tpm.session import SegmentationSession

__all__ = ["APPLY_NAME", "LOAD_CHECKPOINT", "NEW_LAYER", "RESULT_NAME", "TPMWidget"]

# Placeholder choices are strings, never None: with PySide6 6.12 on Python 3.11 every QComboBox
# item whose data is None drops a reference to None on each refresh, until the interpreter
# aborts ("none_dealloc"). Strings are safe.
NO_LAYER = "<no support layer>"
SAME_IMAGE = "<same as image>"
NEW_LAYER = "<new layer>"
_CONTROLS = (  # noqa: SIM905 - a word list reads better than 25 quoted names
    "image_combo support_combo new_support_button background_button support_image_combo "
    "model_combo device_combo model_label cpu_notice segment_button cancel_button "
    "adapt_steps_spinbox adapt_button adapt_estimate_label prior_slider prior_spinbox "
    "auto_prior_checkbox prototypes_spinbox z_min_spinbox z_max_spinbox connected_checkbox "
    "auto_update_checkbox target_combo apply_button status_label"
).split()


class TPMWidget(Container):
    """Few-shot 3D segmentation from painted slices (Tied Prototype Model).

    Args:
        viewer: the napari viewer; napari injects it because of the annotation.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self._viewer = viewer
        self.state = WidgetState()
        from napari_tpm.adapt import default_steps

        devices = available_devices()
        self._models: ModelControls | None = None
        choices = {
            "image": self._image_choices,
            "support": self._support_choices,
            "support_image": self._support_image_choices,
            "target": self._target_choices,
            "model": lambda _w=None: self._models.choices() if self._models else [],
        }
        self.ui = Layout(self, choices, devices, default_steps(devices[0]))
        for name in _CONTROLS:  # the controls as attributes, as tests and scripts reach them
            setattr(self, name, getattr(self.ui, name))
        self.controller = Controller(viewer, self.ui, self.state)
        self._models = ModelControls(self.controller)
        self.controller.adapt = self._models
        self.paint = PaintControls(self.controller)
        self.ui.model_combo.reset_choices()
        self.ui.model_combo.value = self._models.names[0]
        self.state.model_value = self._models.names[0]
        self._connect()
        self.reset_choices()
        self._models.on_device_changed(self.ui.device_combo.value)
        self._on_image_changed(self.ui.image_combo.value)
        for layer in list(viewer.layers):
            self.paint.adopt_geometry(layer)
        self._prefer_reader()
        self.ui.fit_width()
        from qtpy.QtCore import QTimer

        # again once napari has styled and shown the dock (its fonts change the sizes)
        QTimer.singleShot(0, lambda: None if self.state.closed else self.ui.fit_width())

    def _connect(self) -> None:
        ui, c, m, p = self.ui, self.controller, self._models, self.paint
        ui.image_combo.changed.connect(self._on_image_changed)
        ui.support_combo.changed.connect(self._on_watch_changed)
        ui.new_support_button.clicked.connect(p.new_support_layer)
        ui.background_button.clicked.connect(p.background_stroke)
        ui.model_combo.changed.connect(m.on_model_changed)
        ui.device_combo.changed.connect(m.on_device_changed)
        ui.segment_button.clicked.connect(c.segment)
        ui.cancel_button.clicked.connect(c.cancel)
        ui.adapt_button.clicked.connect(m.run)
        ui.adapt_steps_spinbox.changed.connect(m.update_info)
        ui.prior_slider.changed.connect(c.adjust.on_prior_slider)
        ui.prior_spinbox.changed.connect(c.adjust.on_prior_typed)
        ui.auto_prior_checkbox.changed.connect(c.adjust.on_auto_prior)
        ui.prototypes_spinbox.changed.connect(lambda k: c.refit(int(k)))
        ui.z_min_spinbox.changed.connect(c.adjust.on_z_min)
        ui.z_max_spinbox.changed.connect(c.adjust.on_z_max)
        ui.connected_checkbox.changed.connect(lambda _v: c.adjust.relabel())
        ui.auto_update_checkbox.changed.connect(self._on_watch_changed)
        ui.apply_button.clicked.connect(p.apply)
        events = self._viewer.layers.events
        events.inserted.connect(self._on_layer_inserted)
        events.removed.connect(self.reset_choices)
        events.reordered.connect(self.reset_choices)
        self.native.destroyed.connect(lambda *_: self.controller.close())

    def _prefer_reader(self) -> None:
        """Offer this plugin as napari's reader for its file types (a user's choice wins)."""
        try:
            from napari.settings import get_settings

            from napari_tpm._reader import prefer_this_reader

            prefer_this_reader(get_settings())
        except Exception:  # settings that cannot be written must not stop the dock
            return

    # ----------------------------------------------------------------- choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _labels_choices(self) -> list[tuple[str, Labels]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Labels) and layer.name != RESULT_NAME
        ]

    def _support_choices(self, _widget: Any = None) -> list[tuple[str, Labels | str]]:
        return [("(none: press 'New support layer')", NO_LAYER), *self._labels_choices()]

    def _support_image_choices(self, _widget: Any = None) -> list[tuple[str, Image | str]]:
        return [("(same as image)", SAME_IMAGE), *self._image_choices()]

    def _target_choices(self, _widget: Any = None) -> list[tuple[str, Labels | str]]:
        return [(f"(new layer '{APPLY_NAME}')", NEW_LAYER), *self._labels_choices()]

    def reset_choices(self, *_args: Any) -> None:
        """Refresh the layer pickers, then pick sensible defaults (the layer named 'support')."""
        if self.state.closed:
            return
        super().reset_choices()
        self.ui.form.reset_choices()
        c = self.controller
        if c.support_layer is None:
            named = c.find_layer(SUPPORT_NAME, Labels)
            if named is not None:
                self.ui.support_combo.value = named
        if c.target_layer is None:
            applied = c.find_layer(APPLY_NAME, Labels)
            if applied is not None:
                self.ui.target_combo.value = applied

    def _on_layer_inserted(self, event: Any = None) -> None:
        self.reset_choices()
        if event is not None:
            self.paint.adopt_geometry(event.value)

    def _on_image_changed(self, image: Image | None) -> None:
        if image is None or isinstance(image, str):
            return
        if image.data is not self.state.segmented_data:
            self.controller.forget_result()  # the cached scores belong to another image
        shape = np.shape(image.data)
        if len(shape) == 3:
            self.controller.set_slice_range(shape[0])
            self._models.default_for_image()

    def _on_watch_changed(self, *_args: Any) -> None:
        on = self.ui.auto_update_checkbox.value
        self.paint.watch(self.controller.support_layer if on else None)

    # ------------------------------------------------------------ public API
    @property
    def session(self) -> SegmentationSession | None:
        """The dock's session (None before the first segmentation)."""
        return self.state.session

    @property
    def running(self) -> bool:
        """True while a segmentation, a prototype refit, an adaptation or a relabel runs.

        The relabel (3D clean-up after a run or when the slider rests) runs in the background
        too, so "not running" means the preview layer holds the final result.
        """
        return self.state.running or self.controller.relabelling

    @property
    def adapt_options(self) -> dict[str, Any]:
        """Extra keyword arguments for ``adapt_session`` (empty: the library's defaults)."""
        return self.state.adapt_options

    @adapt_options.setter
    def adapt_options(self, options: dict[str, Any]) -> None:
        self.state.adapt_options = dict(options)

    @property
    def support_layer(self) -> Labels | None:
        return self.controller.support_layer

    @property
    def support_image_layer(self) -> Image | None:
        return self.controller.support_image_layer

    @property
    def target_layer(self) -> Labels | None:
        return self.controller.target_layer

    @property
    def result_layer(self) -> Labels | None:
        """The preview layer ``TPM segmentation`` (None before the first segmentation)."""
        return self.controller.result_layer

    def segment(self) -> Any:
        """Start segmenting from the painted support (returns the worker, or None)."""
        return self.controller.segment()

    def cancel(self) -> None:
        self.controller.cancel()

    def adapt(self) -> Any:
        """Adapt the chosen model to the chosen image (returns the worker, or None)."""
        return self._models.run()

    def choose_checkpoint(self, path: str) -> bool:
        """Check and select a checkpoint file, as 'Load checkpoint file...' does."""
        return self._models.choose_checkpoint(path)

    def relabel(self, *_args: Any) -> None:
        self.controller.relabel()

    def new_support_layer(self) -> Labels | None:
        return self.paint.new_support_layer()

    def apply(self) -> int:
        return self.paint.apply()
