"""Model, device and adaptation controls: which model runs, checked when chosen, and Adapt.

The default model comes from the one registry (:mod:`napari_tpm.zoo`) for the chosen image's
modality, exactly as the CLI resolves ``--checkpoint default``. A checkpoint file is loaded once
when chosen, so a bad file is refused at once with one short line instead of failing later at
Segment with a torch traceback. Adaptation runs in a worker through the controller's ordered
result path; its time is reported from what this machine actually did.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info, show_warning

from napari_tpm._widget._state import Run
from napari_tpm._widget._worker import adaptation_steps, encoder_name, short_reason

if TYPE_CHECKING:
    from napari_tpm._widget._controller import Controller

FILTERBANK = "filterbank"
LOAD_CHECKPOINT = "Load checkpoint file..."
ADAPTED_SUFFIX = "+adapted"


def available_models() -> list[str]:
    """The registry's models, its default first; the filter bank is always offered."""
    try:
        from napari_tpm.zoo import list_models

        names = list(dict.fromkeys(list_models()))
    except Exception as exc:  # a broken zoo must not stop the widget from opening
        show_warning(f"TPM: could not list the model zoo ({exc}); only the filter bank is offered")
        names = []
    return names if FILTERBANK in names else [*names, FILTERBANK]


def available_devices() -> list[str]:
    """Only devices this machine has; MPS is opt-in (listed, never the default)."""
    import torch

    devices = ["cuda"] if torch.cuda.is_available() else []
    devices.append("cpu")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def _duration(seconds: float) -> str:
    """Seconds as a person reads them: "45 s", "3 min", "1.5 h"."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ModelControls:
    """The Model and Device boxes, the model line, and Adapt (attached as ``controller.adapt``)."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.ui = controller.ui
        self.state = controller.state
        self.names = available_models()
        self.user_chose = False  # once the user picks a model, images no longer change it
        #: seconds per adaptation step measured by the last run on this device
        self.measured_step_s: dict[str, float] = {}

    def choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        files = [(Path(p).name, p) for p in self.state.extra_checkpoints]
        return [*((n, n) for n in self.names), *files, (LOAD_CHECKPOINT, LOAD_CHECKPOINT)]

    # ---------------------------------------------------------------- model
    def default_for_image(self) -> None:
        """Select the registry's default for the chosen image's modality (unless user-chosen)."""
        image = self.c.image_layer
        if self.user_chose or image is None or np.ndim(image.data) != 3:
            return
        from napari_tpm.zoo import default_for_image

        try:
            name = default_for_image(np.asarray(image.data))
        except ValueError as exc:
            self.c.error(f"models/default.json: {exc}")
            return
        if name in self.names and self.ui.model_combo.value != name:
            with self.ui.model_combo.changed.blocked():
                self.ui.model_combo.value = name
            self.after_model_change()

    def on_model_changed(self, value: str) -> None:
        if value == LOAD_CHECKPOINT:
            from qtpy.QtWidgets import QFileDialog

            path, _ = QFileDialog.getOpenFileName(
                self.ui.model_combo.native,
                "Load a TPM checkpoint",
                "",
                "TPM checkpoints (*.pt *.pth);;All files (*)",
            )
            if not path or not self.choose_checkpoint(path):
                with self.ui.model_combo.changed.blocked():
                    self.ui.model_combo.value = self.state.model_value
            return
        self.user_chose = True
        self.after_model_change()

    def choose_checkpoint(self, path: str) -> bool:
        """Load ``path`` once to check it; offer it when it works, else say why in one line."""
        from napari_tpm.checkpoints import load_model

        self.c.status(f"Checking '{Path(path).name}'...")
        try:
            load_model(path, device="cpu")
        except Exception as exc:  # any failure means "not usable": say so, keep the old choice
            reason = short_reason(exc, path)
            self.c.error(f"'{Path(path).name}' is not a usable TPM checkpoint: {reason}")
            return False
        if path not in self.state.extra_checkpoints:
            self.state.extra_checkpoints.append(path)
            self.ui.model_combo.reset_choices()
        with self.ui.model_combo.changed.blocked():
            self.ui.model_combo.value = path
        self.user_chose = True
        self.after_model_change()
        self.c.status(f"Model '{Path(path).name}' loaded and checked: press Segment volume.")
        return True

    def after_model_change(self) -> None:
        self.state.model_value = str(self.ui.model_combo.value)
        self.drop_adapted_session()
        self.update_info()

    def on_device_changed(self, device: str) -> None:
        self.ui.cpu_notice.native.setVisible(device == "cpu")
        from napari_tpm.adapt import default_steps

        self.ui.adapt_steps_spinbox.value = default_steps(device)
        self.drop_adapted_session()
        self.update_info()

    def drop_adapted_session(self) -> None:
        """Another model or device was chosen: forget an adapted model, said out loud."""
        session = self.state.session
        if self.state.running or session is None or self.c.current_key() == self.state.session_key:
            return
        if not str(getattr(session.model, "name", "")).endswith(ADAPTED_SUFFIX):
            return
        self.state.session, self.state.session_key = None, None
        self.c.forget_result()
        show_info("TPM: the adapted model was discarded; the chosen model is used from now on.")

    # ---------------------------------------------------------------- adapt
    def _encoder(self) -> tuple[str, str]:
        """(display name, encoder name) of the active model, or of the choice."""
        choice, _ = self.c.current_key()
        session = self.state.session
        if session is not None and self.state.session_key == self.c.current_key():
            encoder = str(getattr(session.model.encoder, "name", ""))
            return str(session.model.name or choice), encoder
        name = Path(choice).name if choice in self.state.extra_checkpoints else choice
        return name, encoder_name(choice)

    def possible(self) -> bool:
        return self._encoder()[1] != FILTERBANK and self.c.current_key()[0] != LOAD_CHECKPOINT

    def update_info(self, *_args: Any) -> None:
        """Refresh the model line, the Adapt estimate and the Adapt button."""
        if self.state.closed:
            return
        name, encoder = self._encoder()
        adapted = " (adapted)" if name.endswith(ADAPTED_SUFFIX) else ""
        self.ui.model_label.value = f"Model: {name}{adapted}"
        possible = self.possible()
        self.ui.adapt_button.enabled = possible and not self.state.running
        if not possible:
            self.ui.adapt_button.tooltip = (
                "The training-free filter bank has no trainable encoder to adapt: choose a "
                "trained model"
            )
            self.ui.adapt_estimate_label.value = "Adaptation: not available for this model"
            return
        self.ui.adapt_button.tooltip = (
            "Fine-tune the model on this image (no labels needed); the preview is refreshed"
        )
        device = self.c.current_key()[1]
        steps = int(self.ui.adapt_steps_spinbox.value)
        if device in self.measured_step_s:
            seconds = self.measured_step_s[device] * steps
            self.ui.adapt_estimate_label.value = (
                f"Adaptation: about {_duration(seconds)} on {device} (from the last run)"
            )
            return
        from napari_tpm.adapt import estimate_seconds

        stand_in = SimpleNamespace(encoder=SimpleNamespace(name=encoder))
        seconds = estimate_seconds(stand_in, steps, device, measure=False)
        self.ui.adapt_estimate_label.value = (
            f"Adaptation: the {steps} steps alone take about {_duration(seconds)} on {device}; "
            "preparing the volume comes on top (the time left is shown while it runs)"
        )

    def run(self) -> Any:
        """Adapt the chosen model to the chosen image in a worker (returns the worker)."""
        if self.state.running or self.state.closed:
            return None
        image = self.c.check_image()
        if image is None:
            return None
        if not self.possible():
            self.c.error(f"{self.ui.adapt_button.tooltip}.")
            return None
        self.c.use_session_for_current_choice()
        steps = int(self.ui.adapt_steps_spinbox.value)
        from napari_tpm._widget._thread import job_worker

        worker = job_worker(
            adaptation_steps,
            self.c.get_session,
            np.asarray(image.data),
            tuple(float(s) for s in image.scale),
            steps,
            dict(self.state.adapt_options),
        )
        text = f"Adapting the model to '{image.name}'..."
        return self.c.start(worker, Run("adapt"), text, steps)

    def on_progress(self, run: Run, item: Any) -> None:
        loss = item.info.get("loss") if item.info else None
        tail = f", loss {loss:.3f}" if isinstance(loss, float) else ""
        left = ""
        if item.done and item.total and item.stage == "adapt":
            rate = run.seconds / item.done
            left = f", about {_duration(rate * (item.total - item.done))} left"
        self.c.status(f"Adapting: {item.stage} {item.done}/{item.total}{tail}{left}")

    def conclude(self, run: Run) -> None:
        """After the worker: report, remember the real speed, refresh the preview."""
        if run.failure is not None:
            return
        if run.adapted is None:
            self.c.status("Adaptation cancelled; the model is unchanged.")
            show_info("TPM: adaptation cancelled; the model is unchanged.")
            return
        steps = max(int(self.ui.adapt_steps_spinbox.value), 1)
        self.measured_step_s[self.c.current_key()[1]] = run.seconds / steps
        self.c.forget_result()
        self.update_info()
        text = f"Adapted in {_duration(run.seconds)}: model '{run.adapted}'."
        show_info(f"TPM: {text}")
        self.c.status(text)
        support = self.c.support_layer
        stale = self.c.result_layer is not None and support is not None and np.any(support.data)
        if stale and self.c.segment() is not None:  # the preview showed the old model's result
            self.c.status(f"{text} Refreshing the preview with it...")
