"""The TPM Segmentation dock widget: paint one slice, segment the volume, adjust, apply.

The widget is a thin shell over :class:`napari_tpm.session.SegmentationSession`:

* "Segment volume" runs ``session.segment`` in a napari generator worker; every yielded
  ``Progress.slices`` range is written into the ``TPM segmentation`` preview layer, so the
  volume fills in while it is computed, and a bar shows in the activity dock.
* The class-prior slider, the slice range and the connectivity switch only re-threshold the
  session's cached scores (``session.labels``); the prototypes spin box refits from cached
  features. None of them calls the encoder.
* "Apply" copies the preview into a Labels layer as one undoable edit (Ctrl+Z reverts it).
* "Adapt to this volume" fine-tunes a copy of the model on the image itself (no labels needed)
  in a worker; the session switches to the adapted model only when it finishes, and keeps it
  until another model or device is chosen. The user then presses Segment volume again.

One session per widget and no module-level state, so two viewers never share anything. Torch
and the session are imported lazily: opening napari must not pay for them.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy

from napari_tpm._widget._layers import (
    apply_preview,
    grid_kwargs,
    label_dtype,
    new_labels_data,
    same_grid,
)
from napari_tpm._widget._worker import (
    Adapted,
    Failure,
    SegmentRequest,
    SessionReady,
    adaptation_steps,
    describe,
    encoder_name,
    refit_prototypes,
    segmentation_steps,
)

if TYPE_CHECKING:
    import napari

    from napari_tpm.progress import Progress
    from napari_tpm.session import SegmentationSession

SUPPORT_NAME = "support"
RESULT_NAME = "TPM segmentation"
APPLY_NAME = "TPM labels"
LOAD_CHECKPOINT = "Load checkpoint file..."
# Placeholder choices are strings, never None: with PySide6 6.12 on Python 3.11 every QComboBox
# item whose data is None drops a reference to None on each refresh, until the interpreter
# aborts ("none_dealloc"). Strings are safe.
NO_LAYER = "<no support layer>"
SAME_IMAGE = "<same as image>"
NEW_LAYER = "<new layer>"
FILTERBANK = "filterbank"
AUTO_UPDATE_DELAY_MS = 1000
ADAPTED_SUFFIX = "+adapted"
MAX_ADAPT_STEPS = 5000
ADAPTED_NOTICE = "TPM: Adapted model active: press Segment volume."
CPU_NOTICE = (
    "Running on CPU: the first segmentation of a large volume can take minutes. "
    "Later adjustments reuse the cached features and are fast."
)


def _available_models() -> list[str]:
    """Zoo models, then the training-free filter bank (always there, needs no checkpoint)."""
    names: list[str] = []
    try:
        from napari_tpm.zoo import list_models

        for item in list_models():
            name = item if isinstance(item, str) else getattr(item, "name", str(item))
            if name not in names:
                names.append(name)
    except Exception as exc:  # a broken zoo must not stop the widget from opening
        show_warning(f"TPM: could not list the model zoo ({exc}); only the filter bank is offered")
    if not names:
        names.append("default")
    if FILTERBANK not in names:
        names.append(FILTERBANK)
    return names


def _available_devices() -> list[str]:
    """Only devices this machine has; MPS is opt-in (listed, never the default)."""
    import torch

    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    devices.append("cpu")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


class TPMWidget(Container):
    """Few-shot 3D segmentation from one painted slice (Tied Prototype Model).

    Args:
        viewer: the napari viewer; napari injects it because of the annotation.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._session: SegmentationSession | None = None
        self._session_key: tuple[str, str] | None = None
        self._worker: Any = None
        self._pbar: Any = None
        self._complete = False  # the session holds a finished segmentation
        self._closed = False
        self._rerun_pending = False
        self._started_at = 0.0
        self._done_text = ""  # what the finished worker did, for the status line
        self._failed = False  # the current worker reported a Failure
        self._extra_checkpoints: list[str] = []
        self._model_value = ""
        self._watched: Labels | None = None
        self._spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
        self._segmented_data: Any = None  # the image array the session's scores belong to
        #: extra keyword arguments for ``adapt_session`` (``lr``, ``trainable``, tiny-volume
        #: settings); empty means the library's defaults for the session's device
        self.adapt_options: dict[str, Any] = {}

        self._build()
        self._connect()
        self.reset_choices()
        self._on_device_changed(self.device_combo.value)
        self._on_image_changed(self.image_combo.value)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.image_combo = ComboBox(label="Image", choices=self._image_choices)
        self.support_combo = ComboBox(label="Support labels", choices=self._support_choices)
        self.support_combo.tooltip = (
            "Paint the structure on ONE slice of this Labels layer (it is never modified)"
        )
        self.new_support_button = PushButton(text="New support layer")
        self.new_support_button.tooltip = (
            f"Add an empty Labels layer '{SUPPORT_NAME}' on the image's grid and start painting"
        )
        self.support_image_combo = ComboBox(
            label="Support image", choices=self._support_image_choices
        )
        self.support_image_combo.tooltip = (
            "The image the support was painted on: the query image itself, or another scan "
            "(atlas use)"
        )
        self._model_choices_cache = _available_models()
        self._model_value = self._model_choices_cache[0]
        self.model_combo = ComboBox(
            label="Model", choices=self._model_choices, value=self._model_value
        )
        devices = _available_devices()
        self.device_combo = ComboBox(label="Device", choices=devices, value=devices[0])
        self.cpu_notice = Label(value=CPU_NOTICE)
        self.cpu_notice.native.setWordWrap(True)
        self.cpu_notice.native.setStyleSheet("color: #e8a33d;")
        self.model_label = Label(value="")

        self.segment_button = PushButton(text="Segment volume")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        run_row = Container(
            widgets=[self.segment_button, self.cancel_button], layout="horizontal", labels=False
        )

        from napari_tpm.adapt import default_steps

        self._default_steps = default_steps(devices[0])
        self.adapt_steps_spinbox = SpinBox(
            label="Adapt steps", min=1, max=MAX_ADAPT_STEPS, value=self._default_steps
        )
        self.adapt_steps_spinbox.tooltip = (
            "Optimisation steps of test-time adaptation: more adapt further and take longer"
        )
        self.adapt_button = PushButton(text="Adapt to this volume")
        self.adapt_estimate_label = Label(value="")

        self.prior_slider = FloatSlider(min=0.001, max=0.999, step=0.001, value=0.5, readout=False)
        self.prior_slider.tooltip = (
            "Prior probability of the structure: higher gives a larger segmentation. Moving it "
            "only re-thresholds cached scores."
        )
        # the number next to the slider, editable; magicgui's own readout renders unreadably
        # narrow under napari's style sheet
        self.prior_spinbox = FloatSpinBox(min=0.001, max=0.999, step=0.001, value=0.5)
        self.prior_spinbox.native.setDecimals(3)
        self.prior_spinbox.native.setMinimumWidth(70)
        self.prior_spinbox.native.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Fixed)
        prior_row = Container(
            widgets=[self.prior_slider, self.prior_spinbox],
            layout="horizontal",
            labels=False,
            label="Class prior",
        )
        prior_row.margins = (0, 0, 0, 0)
        self.auto_prior_checkbox = CheckBox(text="Auto (model's estimate)", value=False)
        self.prototypes_spinbox = SpinBox(label="Prototypes", min=1, max=10, value=1)
        self.prototypes_spinbox.tooltip = (
            "Prototypes per structure; more can capture inhomogeneous organs (no re-encoding)"
        )
        self.z_min_spinbox = SpinBox(label="First slice", min=0, max=0, value=0)
        self.z_max_spinbox = SpinBox(label="Last slice", min=0, max=0, value=0)
        self.connected_checkbox = CheckBox(
            text="Keep only regions connected to the painted slice", value=False
        )
        self.auto_update_checkbox = CheckBox(
            text="Auto-update after painting (1 s delay)", value=False
        )

        self.target_combo = ComboBox(label="Apply to", choices=self._target_choices)
        self.apply_button = PushButton(text="Apply")
        self.apply_button.tooltip = "Copy the preview into the target layer (undo with Ctrl+Z)"
        self.status_label = Label(value="Paint one slice of the support layer, then segment.")
        self.status_label.native.setWordWrap(True)

        self.extend(
            [
                self.image_combo,
                self.support_combo,
                self.new_support_button,
                self.support_image_combo,
                self.model_combo,
                self.device_combo,
                self.model_label,
                self.cpu_notice,
                run_row,
                self.adapt_steps_spinbox,
                self.adapt_button,
                self.adapt_estimate_label,
                prior_row,
                self.auto_prior_checkbox,
                self.prototypes_spinbox,
                self.z_min_spinbox,
                self.z_max_spinbox,
                self.connected_checkbox,
                self.auto_update_checkbox,
                self.target_combo,
                self.apply_button,
                self.status_label,
            ]
        )
        for widget, name in (
            (self.segment_button, "tpm_segment_button"),
            (self.cancel_button, "tpm_cancel_button"),
            (self.prior_slider, "tpm_prior_slider"),
            (self.prototypes_spinbox, "tpm_prototypes_spinbox"),
            (self.apply_button, "tpm_apply_button"),
            (self.adapt_button, "tpm_adapt_button"),
            (self.adapt_steps_spinbox, "tpm_adapt_steps_spinbox"),
            (self.adapt_estimate_label, "tpm_adapt_estimate_label"),
            (self.model_label, "tpm_model_label"),
        ):
            widget.native.setObjectName(name)

        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTO_UPDATE_DELAY_MS)

    def _connect(self) -> None:
        self.image_combo.changed.connect(self._on_image_changed)
        self.support_combo.changed.connect(self._on_support_changed)
        self.new_support_button.clicked.connect(self.new_support_layer)
        self.model_combo.changed.connect(self._on_model_changed)
        self.device_combo.changed.connect(self._on_device_changed)
        self.segment_button.clicked.connect(self.segment)
        self.cancel_button.clicked.connect(self.cancel)
        self.adapt_button.clicked.connect(self.adapt)
        self.adapt_steps_spinbox.changed.connect(self._update_adapt_info)
        self.prior_slider.changed.connect(self._on_prior_changed)
        self.prior_spinbox.changed.connect(self._on_prior_typed)
        self.auto_prior_checkbox.changed.connect(self._on_auto_prior_changed)
        self.prototypes_spinbox.changed.connect(self._on_prototypes_changed)
        self.z_min_spinbox.changed.connect(self._on_z_min_changed)
        self.z_max_spinbox.changed.connect(self._on_z_max_changed)
        self.connected_checkbox.changed.connect(self.relabel)
        self.auto_update_checkbox.changed.connect(self._on_auto_update_changed)
        self.apply_button.clicked.connect(self.apply)
        self._timer.timeout.connect(self._on_auto_update_timeout)
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._on_layers_changed)
        self.native.destroyed.connect(self._on_destroyed)

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

    def _model_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        models = [(name, name) for name in self._model_choices_cache]
        files = [(Path(p).name, p) for p in self._extra_checkpoints]
        return [*models, *files, (LOAD_CHECKPOINT, LOAD_CHECKPOINT)]

    def reset_choices(self, *_args: Any) -> None:
        """Refresh the layer pickers, then pick sensible defaults (the layer named 'support')."""
        if self._closed:
            return
        super().reset_choices()
        if self.support_layer is None:
            named = self._layer(SUPPORT_NAME, Labels)
            if named is not None:
                self.support_combo.value = named
        if self.target_layer is None:
            applied = self._layer(APPLY_NAME, Labels)
            if applied is not None:
                self.target_combo.value = applied

    def _on_layers_changed(self, _event: Any = None) -> None:
        self.reset_choices()

    def _layer(self, name: str, kind: type) -> Any:
        for layer in self._viewer.layers:
            if layer.name == name and isinstance(layer, kind):
                return layer
        return None

    # --------------------------------------------------------------- handlers
    def _on_image_changed(self, image: Image | None) -> None:
        if image is None:
            return
        if image.data is not self._segmented_data:
            self._complete = False  # the cached scores belong to another image
        shape = np.shape(image.data)
        if len(shape) == 3:
            self._set_slice_range(shape[0])

    def _set_slice_range(self, n: int) -> None:
        """Reset the slice range to all ``n`` slices along the slice axis."""
        for box in (self.z_min_spinbox, self.z_max_spinbox):
            with box.changed.blocked():
                box.max = max(n - 1, 0)
        with self.z_min_spinbox.changed.blocked():
            self.z_min_spinbox.value = 0
        with self.z_max_spinbox.changed.blocked():
            self.z_max_spinbox.value = max(n - 1, 0)

    def _on_support_changed(self, _value: Any) -> None:
        self._watch(self.support_layer if self.auto_update_checkbox.value else None)

    def _on_model_changed(self, value: str) -> None:
        if value != LOAD_CHECKPOINT:
            self._model_value = value
            self._drop_adapted_session()
            self._update_adapt_info()
            return
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self.native, "Load a TPM checkpoint", "", "TPM checkpoints (*.pt *.pth);;All files (*)"
        )
        if path and path not in self._extra_checkpoints:
            self._extra_checkpoints.append(path)
            self.model_combo.reset_choices()
        with self.model_combo.changed.blocked():
            self.model_combo.value = path or self._model_value
        self._model_value = self.model_combo.value
        self._drop_adapted_session()
        self._update_adapt_info()

    def _on_device_changed(self, device: str) -> None:
        self.cpu_notice.native.setVisible(device == "cpu")
        from napari_tpm.adapt import default_steps

        default = default_steps(device)
        if self.adapt_steps_spinbox.value == self._default_steps:  # not edited by the user
            with self.adapt_steps_spinbox.changed.blocked():
                self.adapt_steps_spinbox.value = default
        self._default_steps = default
        self._drop_adapted_session()
        self._update_adapt_info()

    def _current_key(self) -> tuple[str, str]:
        return str(self.model_combo.value), str(self.device_combo.value)

    def _drop_adapted_session(self) -> None:
        """Another model or device was chosen: forget an adapted model, said out loud.

        Without this, choosing the original model again would silently bring the adapted one
        back (the session is keyed by model choice and device). An ordinary session is kept:
        it is dropped by the next Segment press, as before.
        """
        session = self._session
        if self.running or session is None or self._current_key() == self._session_key:
            return
        if not str(getattr(session.model, "name", "")).endswith(ADAPTED_SUFFIX):
            return
        self._session, self._session_key, self._complete = None, None, False
        show_info("TPM: the adapted model was discarded; the chosen model is used from now on.")

    def _active_model(self) -> Any:
        """The session's model when the session belongs to the current choice, else None."""
        if self._session is not None and self._session_key == self._current_key():
            return self._session.model
        return None

    def _update_adapt_info(self, *_args: Any) -> None:
        """Refresh the active-model label, the time estimate and the Adapt button's state."""
        if self._closed:
            return
        from napari_tpm.adapt import estimate_seconds

        choice, device = self._current_key()
        model = self._active_model()
        if model is not None:
            name = str(getattr(model, "name", "") or choice)
            encoder = str(getattr(model.encoder, "name", ""))
        else:
            name = Path(choice).name if choice in self._extra_checkpoints else choice
            encoder = encoder_name(choice)
        adapted = " (adapted)" if name.endswith(ADAPTED_SUFFIX) else ""
        self.model_label.value = f"Model: {name}{adapted}"
        trainable = encoder != FILTERBANK and choice != LOAD_CHECKPOINT
        self.adapt_button.enabled = trainable and not self.running
        if not trainable:
            self.adapt_button.tooltip = (
                "The training-free filter bank has no trainable encoder to adapt: choose a "
                "trained model"
            )
            self.adapt_estimate_label.value = "Adaptation: not available for this model"
            return
        self.adapt_button.tooltip = (
            "Fine-tune the model on this image (no labels needed), then press Segment volume"
        )
        stand_in = SimpleNamespace(encoder=SimpleNamespace(name=encoder))
        seconds = estimate_seconds(
            stand_in, int(self.adapt_steps_spinbox.value), device, measure=False
        )
        self.adapt_estimate_label.value = f"Adaptation: about {_duration(seconds)} on {device}"

    def _on_prior_typed(self, value: float) -> None:
        self.prior_slider.value = value

    def _on_prior_changed(self, value: float) -> None:
        with self.prior_spinbox.changed.blocked():
            self.prior_spinbox.value = value
        if not self.auto_prior_checkbox.value:
            self.relabel()

    def _on_auto_prior_changed(self, auto: bool) -> None:
        self.prior_slider.enabled = not auto
        self.prior_spinbox.enabled = not auto
        self.relabel()

    def _on_z_min_changed(self, value: int) -> None:
        if value > self.z_max_spinbox.value:
            with self.z_max_spinbox.changed.blocked():
                self.z_max_spinbox.value = value
        self.relabel()

    def _on_z_max_changed(self, value: int) -> None:
        if value < self.z_min_spinbox.value:
            with self.z_min_spinbox.changed.blocked():
                self.z_min_spinbox.value = value
        self.relabel()

    def _on_prototypes_changed(self, k: int) -> None:
        """Refit prototypes from cached features in a worker, then re-threshold."""
        session = self._session
        if self.running or session is None or not self._complete:
            return  # used by the next segmentation (or after the current one)
        from napari.qt.threading import create_worker

        self._failed = False
        worker = create_worker(refit_prototypes, session, int(k), _ignore_errors=True)
        worker.returned.connect(self._on_refit_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._begin(worker, f"Fitting {k} prototype(s) from the cached features...")
        worker.start()

    def _on_refit_done(self, k: int | Failure) -> None:
        if isinstance(k, Failure):
            self._fail(k.message)
            return
        self._done_text = f"Refitted {k} prototype(s)"

    def _on_auto_update_changed(self, on: bool) -> None:
        self._watch(self.support_layer if on else None)

    def _watch(self, layer: Labels | None) -> None:
        """Listen to ``layer``'s paint strokes (only one layer at a time)."""
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._on_paint)
        self._watched = layer
        if layer is not None:
            layer.events.paint.connect(self._on_paint)

    def _on_paint(self, _event: Any = None) -> None:
        """Debounce: each stroke restarts a single-shot timer; segment when painting pauses."""
        if self.auto_update_checkbox.value and not self._closed:
            self._timer.start()

    def _on_auto_update_timeout(self) -> None:
        if self._closed or not self.auto_update_checkbox.value:
            return
        if self.running:
            self._rerun_pending = True
        else:
            self.segment()

    def _on_destroyed(self, *_args: Any) -> None:
        """The dock (or the viewer) is closing: stop listening and stop the worker."""
        self._closed = True
        if self._worker is not None:
            self._worker.quit()

    # ------------------------------------------------------------------ state
    @property
    def session(self) -> SegmentationSession | None:
        """The widget's session (None before the first segmentation)."""
        return self._session

    @property
    def support_layer(self) -> Labels | None:
        """The chosen support Labels layer (None when the placeholder is chosen)."""
        return _layer_or_none(self.support_combo.value)

    @property
    def support_image_layer(self) -> Image | None:
        """The image the support was painted on, when it is not the query image."""
        return _layer_or_none(self.support_image_combo.value)

    @property
    def target_layer(self) -> Labels | None:
        """Where Apply writes (None: a new layer named 'TPM labels')."""
        return _layer_or_none(self.target_combo.value)

    @property
    def running(self) -> bool:
        """True while a segmentation or a prototype refit runs in a worker."""
        return self._worker is not None

    @property
    def result_layer(self) -> Labels | None:
        """The preview layer ``TPM segmentation`` (None before the first segmentation)."""
        return self._layer(RESULT_NAME, Labels)

    def _prior(self) -> float | None:
        return None if self.auto_prior_checkbox.value else float(self.prior_slider.value)

    def _z_range(self) -> tuple[int, int]:
        return int(self.z_min_spinbox.value), int(self.z_max_spinbox.value)

    def _status(self, text: str) -> None:
        if not self._closed:
            self.status_label.value = text

    # ------------------------------------------------------------- new support
    def new_support_layer(self) -> Labels | None:
        """Add an empty ``support`` Labels layer on the (support) image's grid, ready to paint."""
        base = self.support_image_layer or self.image_combo.value
        if base is None:
            show_error("TPM: open an image first, then add a support layer to paint on.")
            return None
        shape = np.shape(base.data)
        if len(shape) != 3 or base.rgb:
            show_error(f"TPM: '{base.name}' is not a 3D volume (shape {shape}).")
            return None
        layer = self._viewer.add_labels(
            new_labels_data(shape), name=SUPPORT_NAME, **grid_kwargs(base)
        )
        layer.mode = "paint"
        layer.selected_label = 1
        self.reset_choices()
        self.support_combo.value = layer
        self._viewer.layers.selection.active = layer
        self._status(
            f"Paint the structure on one slice of '{layer.name}' (e.g. slice "
            f"{int(self._viewer.dims.current_step[0])}), then press Segment volume."
        )
        return layer

    # ----------------------------------------------------------------- segment
    def _check_image(self) -> Image | None:
        """The chosen image when it is a single-channel 3D volume; else notify and None."""
        image: Image | None = self.image_combo.value
        if image is None:
            show_error("TPM: open a 3D image first (File > Open, or File > Open Sample).")
            return None
        if image.multiscale or image.rgb or np.ndim(image.data) != 3:
            show_error(
                f"TPM: '{image.name}' is not a single-channel 3D volume "
                f"(shape {np.shape(image.data)}); TPM segments 3D scans."
            )
            return None
        return image

    def _validate(self) -> SegmentRequest | None:
        """Check the inputs on the GUI thread; notify and return None when they cannot work."""
        from napari_tpm.session import SupportError, find_support_slice

        image = self._check_image()
        if image is None:
            return None
        support = self.support_layer
        if support is None:
            show_error(
                "TPM: no support layer. Press 'New support layer' and paint the structure on "
                "one slice."
            )
            return None
        support_image = self.support_image_layer
        reference = support_image if support_image is not None else image
        if not same_grid(support, reference):
            show_error(
                f"TPM: the support layer '{support.name}' {tuple(np.shape(support.data))} is not "
                f"on the grid of '{reference.name}' {tuple(np.shape(reference.data))}."
            )
            return None
        if support_image is not None and (
            support_image.multiscale or support_image.rgb or np.ndim(support_image.data) != 3
        ):
            show_error(f"TPM: the support image '{support_image.name}' is not a 3D volume.")
            return None
        paint = np.array(support.data, copy=True)
        try:
            find_support_slice(paint)
        except SupportError as exc:
            show_error(f"TPM: {exc}.")
            return None
        spacing = tuple(float(s) for s in image.scale)
        return SegmentRequest(
            image=np.asarray(image.data),
            spacing=spacing,
            support=paint,
            support_image=None if support_image is None else np.asarray(support_image.data),
            support_spacing=None
            if support_image is None
            else tuple(float(s) for s in support_image.scale),
            n_prototypes=int(self.prototypes_spinbox.value),
        )

    def segment(self) -> Any:
        """Start segmenting the image from the painted support slice (returns the worker)."""
        if self.running or self._closed:
            return None
        request = self._validate()
        if request is None:
            return None
        image: Image = self.image_combo.value
        # max, not unique: a sort of a CT-sized volume would stall the GUI for a second
        self._ensure_result_layer(image, label_dtype((int(request.support.max()),)))
        self._spacing = request.spacing
        self._segmented_data = image.data

        key = self._current_key()
        if key != self._session_key:
            self._session, self._session_key = None, key
        self._complete = False
        self._failed = False
        from napari.qt.threading import create_worker

        worker = create_worker(segmentation_steps, self._get_session, request, _ignore_errors=True)
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_segmented)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._begin(worker, "Segmenting...")
        from napari.utils import progress

        self._pbar = progress(total=0, desc="TPM segmentation")
        self._started_at = time.perf_counter()
        worker.start()
        return worker

    def _get_session(self) -> SegmentationSession:
        """Runs in the worker: reuse the session, or load the chosen model on the chosen device."""
        if self._session is not None:
            return self._session
        from napari_tpm.session import SegmentationSession

        model, device = self._session_key or ("default", "cpu")
        return SegmentationSession(model, device)

    def _begin(self, worker: Any, text: str) -> None:
        self._worker = worker
        self.segment_button.enabled = False
        self.adapt_button.enabled = False
        self.apply_button.enabled = False
        self.cancel_button.enabled = True
        self._status(text)

    def _ensure_result_layer(self, image: Image, dtype: np.dtype) -> Labels:
        """The preview layer on the image's grid, emptied; created when missing."""
        shape = tuple(np.shape(image.data))
        layer = self.result_layer
        if layer is None:
            layer = self._viewer.add_labels(
                new_labels_data(shape, dtype), name=RESULT_NAME, opacity=0.5, **grid_kwargs(image)
            )
        elif layer.data.shape != shape or layer.data.dtype.itemsize < dtype.itemsize:
            layer.data = new_labels_data(shape, dtype)
            for key, value in grid_kwargs(image).items():
                setattr(layer, key, value)
        else:
            layer.data[...] = 0
            for key, value in grid_kwargs(image).items():
                setattr(layer, key, value)
            layer.refresh()
        return layer

    def _on_yielded(self, item: SessionReady | Progress | Failure) -> None:
        if self._closed:
            return
        if isinstance(item, Failure):
            self._fail(item.message)
            return
        if isinstance(item, SessionReady):
            self._session = item.session
            self._update_adapt_info()
            return
        pbar = self._pbar  # a local: updating the bar may process events, even `finished`
        if pbar is not None:
            pbar.set_description(f"TPM {item.stage}")
            pbar.total = item.total
            pbar.update(max(item.done - pbar.n, 0))
        if item.slices is not None and self._session is not None:
            layer = self.result_layer
            if layer is not None:
                try:
                    self._session.labels(self._prior(), out=layer.data, z_range=self._z_range())
                except ValueError:
                    return  # the scores of this run are not allocated yet
                layer.refresh()
            self._status(f"Segmenting... {item.done}/{item.total} slices")

    def _on_segmented(self, _result: Any = None) -> None:
        """The last slice is done; the final relabel (range, connectivity) runs on finish."""
        if self._closed or self._session is None or self._failed:
            return
        self._complete = True
        self._done_text = f"Segmented in {time.perf_counter() - self._started_at:.1f} s"
        image = self.image_combo.value
        n = np.shape(image.data)[self._session.axis] if image is not None else 0
        if n and self.z_max_spinbox.max != n - 1:
            self._set_slice_range(n)

    def _on_aborted(self) -> None:
        if not self._closed:
            self._status("Cancelled; the preview shows the slices done so far.")
            show_info("TPM: segmentation cancelled.")

    def _on_error(self, exc: BaseException) -> None:
        """Safety net: the workers return failures as values, so this should not run."""
        self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> None:
        self._failed = True
        self._done_text = ""
        show_error(f"TPM: {message}")
        self._status(f"Failed: {message}")

    def _on_finished(self) -> None:
        """Runs after every worker, whatever happened: make the widget usable again."""
        self._worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._closed:
            return
        self.segment_button.enabled = True
        self.apply_button.enabled = True
        self.cancel_button.enabled = False
        self._update_adapt_info()
        session = self._session
        if self._complete and session is not None:
            if self.prototypes_spinbox.value != session.n_prototypes:  # changed meanwhile
                self._on_prototypes_changed(self.prototypes_spinbox.value)
                return
            self.relabel()
            if self._done_text:
                self._status(f"{self._done_text}. {self._status_text()}")
        self._done_text = ""
        if self._rerun_pending:
            self._rerun_pending = False
            self.segment()

    # ------------------------------------------------------------------ adapt
    def adapt(self) -> Any:
        """Adapt the chosen model to the chosen image in a worker (returns the worker).

        Nothing changes until the last step: then the session holds the adapted model and its
        cached features are gone, so the next Segment press re-encodes with it.
        """
        if self.running or self._closed:
            return None
        image = self._check_image()
        if image is None:
            return None
        if not self.adapt_button.enabled:
            show_error(f"TPM: {self.adapt_button.tooltip}.")
            return None
        key = self._current_key()
        if key != self._session_key:
            self._session, self._session_key = None, key
        steps = int(self.adapt_steps_spinbox.value)
        self._complete = False  # adaptation drops the session's scores
        self._failed = False
        from napari.qt.threading import create_worker

        worker = create_worker(
            adaptation_steps,
            self._get_session,
            np.asarray(image.data),
            tuple(float(s) for s in image.scale),
            steps,
            dict(self.adapt_options),
            _ignore_errors=True,
        )
        worker.yielded.connect(self._on_adapt_yielded)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_adapt_aborted)
        worker.finished.connect(self._on_finished)
        self._begin(worker, f"Adapting the model to '{image.name}'...")
        from napari.utils import progress

        self._pbar = progress(total=steps, desc="TPM adapt")
        self._started_at = time.perf_counter()
        worker.start()
        return worker

    def _on_adapt_yielded(self, item: SessionReady | Progress | Adapted | Failure) -> None:
        if self._closed:
            return
        if isinstance(item, Failure):
            self._fail(item.message)
        elif isinstance(item, SessionReady):
            self._session = item.session
        elif isinstance(item, Adapted):
            seconds = time.perf_counter() - self._started_at
            show_info(ADAPTED_NOTICE)
            self._status(f"Adapted in {seconds:.1f} s: model '{item.name}'. Press Segment volume.")
        else:
            pbar = self._pbar
            if pbar is not None:
                pbar.set_description(f"TPM adapt: {item.stage}")
                pbar.total = item.total
                pbar.update(max(item.done - pbar.n, 0))
            loss = item.info.get("loss") if item.info else None
            tail = f" (loss {loss:.3f})" if isinstance(loss, float) else ""
            self._status(f"Adapting: {item.stage} {item.done}/{item.total}{tail}")

    def _on_adapt_aborted(self) -> None:
        if not self._closed:
            self._status("Adaptation cancelled; the model is unchanged.")
            show_info("TPM: adaptation cancelled; the model is unchanged.")

    def cancel(self) -> None:
        """Ask the worker to stop after the current batch of slices."""
        if self._worker is not None:
            self._worker.quit()
            self._status("Cancelling after the current batch...")

    # ----------------------------------------------------------------- adjust
    def relabel(self, *_args: Any) -> None:
        """Re-threshold the cached scores into the preview layer (no encoder call)."""
        session = self._session
        if self._closed or self.running or session is None or not self._complete:
            return
        layer = self.result_layer
        image = self.image_combo.value
        if layer is None or image is None:
            return
        if session.image_shape != tuple(layer.data.shape):
            return  # the preview belongs to an older image; the next Segment rebuilds it
        try:
            session.labels(
                self._prior(),
                out=layer.data,
                z_range=self._z_range(),
                connected=bool(self.connected_checkbox.value),
            )
        except ValueError as exc:
            show_error(f"TPM: {exc}")
            return
        if self.auto_prior_checkbox.value:
            auto = round(session.auto_prior(), 3)
            with self.prior_slider.changed.blocked(), self.prior_spinbox.changed.blocked():
                self.prior_slider.value = auto
                self.prior_spinbox.value = auto
        layer.refresh()
        self._status(self._status_text())

    def _status_text(self) -> str:
        layer = self.result_layer
        if layer is None:
            return ""
        prior = self.prior_slider.value
        mode = "auto" if self.auto_prior_checkbox.value else "manual"
        return f"Prior {prior:.3f} ({mode}): {describe(layer.data, self._spacing)}"

    # ------------------------------------------------------------------ apply
    def apply(self) -> int:
        """Copy the preview into the target Labels layer as one undoable edit."""
        preview = self.result_layer
        if preview is None or not np.any(preview.data):
            show_error("TPM: nothing to apply yet; segment first.")
            return 0
        if self.running:
            show_error("TPM: wait for the segmentation to finish before applying.")
            return 0
        target = self.target_layer
        if target is None:
            target = self._layer(APPLY_NAME, Labels)
        if target is None:
            target = self._viewer.add_labels(
                new_labels_data(preview.data.shape, preview.data.dtype),
                name=APPLY_NAME,
                **grid_kwargs(preview),
            )
            self.reset_choices()
            self.target_combo.value = target
        if not same_grid(target, preview):
            show_error(
                f"TPM: the target layer '{target.name}' {tuple(target.data.shape)} is not on the "
                f"image's grid {tuple(preview.data.shape)}."
            )
            return 0
        if target.data.dtype.itemsize < preview.data.dtype.itemsize:
            show_warning(f"TPM: '{target.name}' ({target.data.dtype}) may not hold these labels.")
        changed = apply_preview(target, preview.data)
        self._status(f"Applied {changed:,} voxels to '{target.name}' (Ctrl+Z to undo).")
        return changed


def _duration(seconds: float) -> str:
    """Seconds as a person reads them: "45 s", "3 min", "1.5 h"."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _layer_or_none(value: Any) -> Any:
    """A combo box value without its string placeholder."""
    return None if value is None or isinstance(value, str) else value
