"""The dock's controls and their arrangement: no behaviour, no state, no maths.

Kept apart so that what a user sees (labels, tooltips, order, sizes) can be read and changed in
one place, and so that the controller can be tested against the same object names the GUI tests
click. Choices that depend on the viewer are given as callables by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
from qtpy.QtWidgets import QSizePolicy

from napari_tpm.options import SegmentOptions
from napari_tpm.support import DEFAULT_PROTOTYPES

CPU_NOTICE = (
    "Running on CPU: the first segmentation of a large volume takes a while. "
    "Later adjustments reuse the cached features and are fast."
)
#: where the manual prior slider starts: the boundary calibrated on the user's paint
DEFAULT_PRIOR = 0.5
IDLE_TEXT = (
    "Paint the whole structure (or just a stroke or a dab inside it) on a slice of the support "
    "layer, then press Segment volume."
)
MAX_ADAPT_STEPS = 5000


def _wrapping_label(value: str = "", color: str | None = None) -> Label:
    """A label that wraps and never widens the dock, whatever it is told to show."""
    label = Label(value=value)
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
    label.native.setMinimumWidth(0)
    if color:
        label.native.setStyleSheet(f"color: {color};")
    return label


class Layout:
    """Every control of the dock, created and placed into ``container``.

    Args:
        container: the dock's magicgui Container; the controls go into a scroll area in it.
        choices: callables for the viewer-dependent combo boxes: "image", "support",
            "support_image", "target", "model".
        devices: the devices this machine has (first = default).
        default_steps: the adaptation steps to show first.
    """

    def __init__(
        self,
        container: Container,
        choices: dict[str, Callable[..., list[tuple[str, Any]]]],
        devices: list[str],
        default_steps: int,
    ) -> None:
        self.image_combo = ComboBox(label="Image", choices=choices["image"])
        self.support_combo = ComboBox(label="Support labels", choices=choices["support"])
        self.support_combo.tooltip = (
            "Paint each structure whole, or a stroke inside it, on one or more slices of this "
            "Labels layer (it is never modified): a slice painted whole keeps exactly that "
            "paint in the result; label 255 marks background strokes"
        )
        self.new_support_button = PushButton(text="New support layer")
        self.new_support_button.tooltip = (
            "Add an empty Labels layer 'support' on the image's grid and start painting"
        )
        self.background_button = PushButton(text="Background stroke")
        self.background_button.tooltip = (
            "Paint with label 255 on the support layer: 'not this structure'. Press again, or "
            "pick another label, to paint the structure"
        )
        support_row = Container(
            widgets=[self.new_support_button, self.background_button],
            layout="horizontal",
            labels=False,
        )
        support_row.margins = (0, 0, 0, 0)
        self.support_image_combo = ComboBox(label="Support image", choices=choices["support_image"])
        self.support_image_combo.tooltip = (
            "The image the support was painted on: the query image itself, or another scan "
            "(atlas use)"
        )
        self.model_combo = ComboBox(label="Model", choices=choices["model"])
        self.model_combo.tooltip = (
            "The registry's default for the image's modality is chosen when an image is picked"
        )
        self.device_combo = ComboBox(label="Device", choices=devices, value=devices[0])
        self.model_label = _wrapping_label()
        self.cpu_notice = _wrapping_label(CPU_NOTICE, "#e8a33d")

        self.segment_button = PushButton(text="Segment volume")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        run_row = Container(
            widgets=[self.segment_button, self.cancel_button], layout="horizontal", labels=False
        )
        run_row.margins = (0, 0, 0, 0)

        self.adapt_steps_spinbox = SpinBox(
            label="Adapt steps", min=1, max=MAX_ADAPT_STEPS, value=default_steps
        )
        self.adapt_steps_spinbox.tooltip = (
            "Optimisation steps of test-time adaptation: more adapt further and take longer"
        )
        self.adapt_button = PushButton(text="Adapt to this volume")
        self.adapt_estimate_label = _wrapping_label()

        self.prior_slider = FloatSlider(
            min=0.001, max=0.999, step=0.001, value=DEFAULT_PRIOR, readout=False
        )
        self.prior_slider.tooltip = (
            "Prior probability of the structure: higher gives a larger segmentation. Moving it "
            "only re-thresholds cached scores."
        )
        # the number beside the slider, typed into: valueChanged fires on Enter or when the box
        # loses focus, never half-way through "0.42" (which the slider would round to 0.4)
        self.prior_spinbox = FloatSpinBox(min=0.001, max=0.999, step=0.001, value=0.5)
        self.prior_spinbox.native.setDecimals(3)
        self.prior_spinbox.native.setKeyboardTracking(False)
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
        self.auto_prior_checkbox.tooltip = (
            "Trained models: their AvgEst/LinEst estimate. The filter bank: 0.5, the prior "
            "calibrated to reproduce your paint (after a second pass from another scan's "
            "paint, a little higher: that pass starts from a core of the first result)"
        )
        self.prototypes_spinbox = SpinBox(
            label="Prototypes", min=1, max=10, value=DEFAULT_PROTOTYPES
        )
        self.prototypes_spinbox.tooltip = (
            "Prototypes per structure; more can capture inhomogeneous organs (no re-encoding)"
        )
        self.z_min_spinbox = SpinBox(label="First slice", min=0, max=0, value=0)
        self.z_max_spinbox = SpinBox(label="Last slice", min=0, max=0, value=0)
        self.connected_checkbox = CheckBox(
            text="Keep only regions connected to the paint",
            value=SegmentOptions().connected,
        )
        self.auto_update_checkbox = CheckBox(
            text="Auto-update after painting (1 s delay)", value=False
        )

        self.target_combo = ComboBox(label="Apply to", choices=choices["target"])
        self.apply_button = PushButton(text="Apply")
        self.apply_button.tooltip = "Copy the preview into the target layer (undo with Ctrl+Z)"
        self.status_label = _wrapping_label(IDLE_TEXT)

        self.form = Container(labels=True)
        self.form.extend(
            [
                self.image_combo,
                self.support_combo,
                support_row,
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
        # napari docks ``container.native``: the scroll area must live inside it (magicgui's
        # own ``scrollable`` wraps the outside, which napari never shows)
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QFrame, QScrollArea

        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.form.native)
        container.native.layout().addWidget(self.scroll)
        container.native.layout().setContentsMargins(0, 0, 0, 0)
        for widget, name in (
            (self.segment_button, "tpm_segment_button"),
            (self.cancel_button, "tpm_cancel_button"),
            (self.prior_slider, "tpm_prior_slider"),
            (self.prior_spinbox, "tpm_prior_spinbox"),
            (self.prototypes_spinbox, "tpm_prototypes_spinbox"),
            (self.connected_checkbox, "tpm_connected_checkbox"),
            (self.apply_button, "tpm_apply_button"),
            (self.adapt_button, "tpm_adapt_button"),
            (self.adapt_steps_spinbox, "tpm_adapt_steps_spinbox"),
            (self.adapt_estimate_label, "tpm_adapt_estimate_label"),
            (self.model_label, "tpm_model_label"),
            (self.background_button, "tpm_background_button"),
            (self.status_label, "tpm_status_label"),
        ):
            widget.native.setObjectName(name)

    def fit_width(self) -> None:
        """Make the dock exactly as wide as its controls need, with a vertical scroll bar only.

        Combo boxes keep a fixed minimum (a long layer or file name must not widen the dock)
        and the text labels wrap, so this width holds whatever is chosen or reported later.
        """
        from qtpy.QtWidgets import QComboBox

        inner = self.form.native
        for combo in inner.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(14)
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        self.scroll.setMinimumWidth(inner.minimumSizeHint().width() + bar + 2)

    def set_busy(self, busy: bool, adapt_possible: bool) -> None:
        """Enable what may be pressed while a worker runs (only Cancel) or while idle."""
        self.segment_button.enabled = not busy
        self.apply_button.enabled = not busy
        self.cancel_button.enabled = busy
        self.adapt_button.enabled = adapt_possible and not busy
