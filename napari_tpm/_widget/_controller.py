"""Events in, session calls out, through ONE ordered result path.

Every worker signal is handled strictly in arrival order by the path the controller inherits
from :mod:`._run_path` (starting a worker, its batches, its end, cancelling); this module holds
what the dock asks for: the chosen layers, the inputs' checks, segmenting, refitting, and what
a finished segmentation tells the user.

The controller owns no maths: thresholds, prototypes and connectivity are the session's. The
layer helpers place layers; the worker functions run the session off the GUI thread.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning

from napari_tpm._widget._adjust import Adjuster
from napari_tpm._widget._inputs import build_request, image_problem
from napari_tpm._widget._layers import (
    grid_kwargs,
    label_dtype,
    new_labels_data,
    place_on_grid,
)
from napari_tpm._widget._run_path import RunPath
from napari_tpm._widget._state import Run, WidgetState
from napari_tpm._widget._worker import (
    SegmentRequest,
    refit_prototypes,
    segmentation_steps,
)

if TYPE_CHECKING:
    import napari

    from napari_tpm._widget._layout import Layout

SUPPORT_NAME = "support"
RESULT_NAME = "TPM segmentation"
APPLY_NAME = "TPM labels"


def layer_or_none(value: Any) -> Any:
    """A combo box value without its string placeholder."""
    return None if value is None or isinstance(value, str) else value


class Controller(RunPath):
    """Turns the dock's events into session calls; the only writer of :class:`WidgetState`."""

    def __init__(self, viewer: napari.viewer.Viewer, ui: Layout, state: WidgetState) -> None:
        self.viewer = viewer
        self.ui = ui
        self.state = state
        self._queue: deque[tuple[Run, str, Any]] = deque()
        self._draining = False
        self._pbar: Any = None
        self._worker: Any = None
        self.adapt: Any = None  # the AdaptController, attached by the widget
        self.adjust = Adjuster(self)

    # ------------------------------------------------------------- layers
    @property
    def image_layer(self) -> Image | None:
        return layer_or_none(self.ui.image_combo.value)

    @property
    def support_layer(self) -> Labels | None:
        return layer_or_none(self.ui.support_combo.value)

    @property
    def support_image_layer(self) -> Image | None:
        return layer_or_none(self.ui.support_image_combo.value)

    @property
    def target_layer(self) -> Labels | None:
        return layer_or_none(self.ui.target_combo.value)

    @property
    def result_layer(self) -> Labels | None:
        return self.find_layer(RESULT_NAME, Labels)

    def find_layer(self, name: str, kind: type) -> Any:
        for layer in self.viewer.layers:
            if layer.name == name and isinstance(layer, kind):
                return layer
        return None

    @contextlib.contextmanager
    def keeping_selection(self) -> Iterator[None]:
        """Adding a layer selects it in pan/zoom mode; give the user back their brush."""
        active = self.viewer.layers.selection.active
        mode = getattr(active, "mode", None)
        try:
            yield
        finally:
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
                if mode is not None and active.mode != mode:
                    active.mode = mode

    # ------------------------------------------------------------- feedback
    def status(self, text: str) -> None:
        if not self.state.closed:
            self.ui.status_label.value = text

    def error(self, text: str) -> None:
        """A user-facing problem: a toast and the status line (the toast fades, the line stays)."""
        show_error(f"TPM: {text}")
        self.status(f"Error: {text}")

    # ------------------------------------------------------- conclusions
    def _conclude_segmentation(self, run: Run) -> None:
        """A segmentation or refit ended (the ordered path's ``_finish``): tell the user."""
        state, session = self.state, self.state.session
        if run.cancelled or not run.returned or session is None:
            state.complete = False
            done = f" after {run.done}/{run.total} slices" if run.total else ""
            state.partial = f"cancelled{done}"
            self.write_preview()  # every slice finished before the cancel
            self.status(
                f"Cancelled{done}: the preview is partial and Apply refuses it. Press Segment "
                "volume to finish (slices already encoded are reused)."
            )
            show_info("TPM: segmentation cancelled; the preview is partial.")
            return
        self.status(f"Finished in {run.seconds:.1f} s.")  # relabel below adds the details
        if run.kind == "segment":
            state.complete, state.partial = True, None
            n = np.shape(state.segmented_data)[session.axis]
            if self.ui.z_max_spinbox.max != n - 1:
                self.set_slice_range(n)
            if self.ui.prototypes_spinbox.value != session.n_prototypes:  # changed meanwhile
                self.refit(self.ui.prototypes_spinbox.value)
                return
            self.adjust.start_prior(session)  # after a second pass: its boundary
            from napari_tpm.contrast import doubt_message
            from napari_tpm.paint_size import small_section_message

            what = "Segmented" + _paint_notes(session, run.reordered)
            for v in getattr(session, "doubtful_labels", ()):
                show_warning(f"TPM: {doubt_message(v)}")
            poles = getattr(session, "pole_slices", {})
            for v, area in getattr(session, "small_sections", {}).items():
                show_warning(f"TPM: {small_section_message(v, area, poles.get(v))}")
            self.relabel(done_text=f"{what} in {run.seconds:.1f} s")
            return
        what = f"Refitted {session.n_prototypes} prototype(s)"
        self.adjust.relabel(done_text=f"{what} in {run.seconds:.1f} s", slice_first=True)

    def forget_result(self) -> None:
        """The cached scores no longer describe the preview: drop pending relabels too."""
        self.state.forget_result()
        self.adjust.stop()

    # ------------------------------------------------------------ segment
    def prior(self) -> float | None:
        return None if self.ui.auto_prior_checkbox.value else float(self.ui.prior_slider.value)

    def z_range(self) -> tuple[int, int]:
        return int(self.ui.z_min_spinbox.value), int(self.ui.z_max_spinbox.value)

    def set_slice_range(self, n: int) -> None:
        """Reset the slice range to all ``n`` slices along the slice axis."""
        for box in (self.ui.z_min_spinbox, self.ui.z_max_spinbox):
            with box.changed.blocked():
                box.max = max(n - 1, 0)
        with self.ui.z_min_spinbox.changed.blocked():
            self.ui.z_min_spinbox.value = 0
        with self.ui.z_max_spinbox.changed.blocked():
            self.ui.z_max_spinbox.value = max(n - 1, 0)

    def check_image(self) -> Image | None:
        """The chosen image when it is a single-channel 3D volume; else say why and None."""
        problem = image_problem(self.image_layer)
        if problem:
            self.error(problem)
            return None
        return self.image_layer

    def validate(self) -> SegmentRequest | None:
        """Check the inputs on the GUI thread; say what is wrong and return None if they fail."""
        request = build_request(
            self.image_layer,
            self.support_layer,
            self.support_image_layer,
            int(self.ui.prototypes_spinbox.value),
        )
        if isinstance(request, str):
            self.error(request)
            return None
        return request

    def current_key(self) -> tuple[str, str]:
        return str(self.ui.model_combo.value), str(self.ui.device_combo.value)

    def use_session_for_current_choice(self) -> None:
        key = self.current_key()
        if key != self.state.session_key:
            self.state.session, self.state.session_key = None, key

    def get_session(self) -> Any:
        """Runs in the worker: reuse the session, or load the chosen model on the chosen device."""
        if self.state.session is not None:
            return self.state.session
        from napari_tpm.session import SegmentationSession

        model, device = self.state.session_key or ("default", "cpu")
        return SegmentationSession(model, device)

    def segment(self) -> Any:
        """Start segmenting the image from the painted support (returns the worker)."""
        if self.state.running or self.state.closed:
            return None
        request = self.validate()
        if request is None:
            return None
        image = self.image_layer
        self.ensure_result_layer(image, label_dtype((int(request.support.max()),)))
        self.state.spacing = request.spacing
        self.state.segmented_data = image.data
        self.use_session_for_current_choice()
        self.forget_result()
        from napari_tpm._widget._thread import job_worker

        worker = job_worker(segmentation_steps, self.get_session, request)
        run = Run("segment", reordered=request.reordered)
        return self.start(worker, run, "Segmenting...", np.shape(request.image)[0])

    def ensure_result_layer(self, image: Image, dtype: np.dtype) -> Labels:
        """The preview layer on the image's grid, emptied; created when missing.

        The layer the user paints on stays selected, in its mode (issue 12: the preview used to
        take the selection, so the next brush stroke panned the view).
        """
        shape = tuple(np.shape(image.data))
        layer = self.result_layer
        with self.keeping_selection():
            if layer is None:
                layer = self.viewer.add_labels(
                    new_labels_data(shape, dtype),
                    name=RESULT_NAME,
                    opacity=0.5,
                    **grid_kwargs(image),
                )
                return layer
            if layer.data.shape != shape or layer.data.dtype.itemsize < dtype.itemsize:
                layer.data = new_labels_data(shape, dtype)
            else:
                layer.data[...] = 0
            place_on_grid(layer, image)
            layer.refresh()
        return layer

    def refit(self, k: int) -> Any:
        """Refit prototypes from cached features in a worker, then re-threshold."""
        session = self.state.session
        if self.state.running or session is None or not self.state.complete:
            return None  # used by the next segmentation (or after the current one)
        from napari_tpm._widget._thread import job_worker

        worker = job_worker(refit_prototypes, session, int(k))
        return self.start(worker, Run("refit"), f"Fitting {k} prototype(s) from cached features...")

    # ------------------------------------------------------------- adjust
    def relabel(self, *_args: Any, done_text: str = "") -> None:
        """The full relabel of the finished result, in the background (see :mod:`._adjust`)."""
        self.adjust.relabel(done_text=done_text)

    @property
    def relabelling(self) -> bool:
        """A full relabel is scheduled (the slider is settling), running or waiting to run."""
        if self.state.closed:  # the timer is gone with the dock's widgets
            return self.adjust.relabels.busy
        return self.adjust.full_timer.isActive() or self.adjust.relabels.busy


def _paint_notes(session: Any, reordered: str = "") -> str:
    """What the session did with the paint besides segmenting from it (another volume's paint
    reordered or its intensities changed, a second pass, paint completed), for the status
    line ("" if none).

    ``reordered``: how that volume's voxels were put in the image's order (``Run.reordered``).
    """
    from napari_tpm.contrast import describe_step, is_unchanged

    notes = [f"support image reordered {reordered}"] if reordered else []
    steps = getattr(session, "contrast_steps", {})
    changed = {v: s for v, s in steps.items() if not is_unchanged(s)}
    if changed:
        what = ", ".join(f"{describe_step(s)} (label {v})" for v, s in changed.items())
        notes.append(f"painted intensities {what}")
    if getattr(session, "bootstrapped", False):
        slices = ", ".join(str(i) for i in session.support_slices)
        notes.append(f"second pass from slice {slices}")
    for v, where in getattr(session, "completed", {}).items():
        slices = ", ".join(str(i) for i in where)
        notes.append(f"label {v}'s paint completed to its section on slice {slices}")
    for v in getattr(session, "doubtful_labels", ()):
        notes.append(f"label {v} fits the paint poorly: it may be a look-alike, check it")
    return f" ({'; '.join(notes)})" if notes else ""
