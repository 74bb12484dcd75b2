"""Adjusting a finished result: the class prior, the slice range, connectivity, relabels.

Why a module of its own: the slider's live preview (the displayed slice, a few ms) runs on the
GUI thread, while the full relabel (3D clean-up and volumes per label, up to a second on a CT)
runs in a worker through :class:`._relabel.Relabeler` and lands in :meth:`Adjuster._land` only
while still current. Keeping both here keeps the rule "who writes the preview when" in one place.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from napari.layers import Labels
from qtpy.QtCore import QTimer

from napari_tpm._widget._layout import DEFAULT_PRIOR
from napari_tpm._widget._relabel import Relabeler, RelabelJob, RelabelResult, snapshot
from napari_tpm._widget._worker import describe

if TYPE_CHECKING:
    from napari_tpm._widget._controller import Controller
    from napari_tpm.session import SegmentationSession

#: the slider redraws at once without connectivity; the full relabel follows this long after
#: the last move (connectivity and the per-label volumes take longer than a slider step)
FULL_RELABEL_DELAY_MS = 250


class Adjuster:
    """The prior, range and connectivity controls of a finished result, and its relabels."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.ui = controller.ui
        self.state = controller.state
        self.full_timer = QTimer(self.ui.status_label.native)
        self.full_timer.setSingleShot(True)
        self.full_timer.setInterval(FULL_RELABEL_DELAY_MS)
        self.full_timer.timeout.connect(self.relabel)
        self.relabels = Relabeler(self.state, self._land)

    def stop(self) -> None:
        """A run starts, the result is forgotten or the dock closes: drop what is pending."""
        with contextlib.suppress(RuntimeError):  # closing: Qt may have deleted the timer
            self.full_timer.stop()
        self.relabels.invalidate()

    def relabel(
        self, *_args: Any, quick: bool = False, done_text: str = "", slice_first: bool = False
    ) -> None:
        """Re-threshold the cached scores into the preview layer (no encoder call).

        ``quick`` (slider drags): only the displayed slice, without the 3D steps, here on the
        GUI thread (a few ms); the full relabel is scheduled for when the slider rests. The
        full relabel (3D steps, volumes per label: up to a second on a CT) runs in a worker
        (:mod:`._relabel`) and lands in :meth:`_land` if nothing newer came meanwhile.
        ``slice_first`` (a refit of the prototypes): the displayed slice at once as ``quick``
        does, then the full relabel without waiting, so the user sees the new prototypes'
        result where they look about a second sooner.
        """
        session, state = self.state.session, self.state
        if state.closed or state.running or session is None or not state.complete:
            return
        layer, image = self.c.result_layer, self.c.image_layer
        if layer is None or image is None or image.data is not state.segmented_data:
            return  # the preview belongs to another image; the next Segment rebuilds it
        if self.ui.auto_prior_checkbox.value:
            self._show_prior(round(session.auto_prior(), 3))
        if not quick:
            self.full_timer.stop()
            if slice_first and self.displayed_slice(image, session.axis) is not None:
                self.relabels.next_generation()  # a full relabel still running is stale
                if not self._write_displayed(session, layer, image, self.c.prior()):
                    return
            self.relabels.submit(self._job(session, layer, done_text))
            return
        generation = self.relabels.next_generation()  # a full relabel still running is stale
        if not self._write_displayed(session, layer, image, self.c.prior()):
            return
        if generation == state.generation:  # refresh() may process events
            self.full_timer.start()
            self.c.status(f"Prior {self.ui.prior_slider.value:.3f}...")

    def show_refitted(self) -> None:
        """A refit's scores are in place while its worker measures the auto prior: show the
        displayed slice now, at the manual prior or, with Auto on, at the auto prior as far as
        it is known without that measurement (exact unless the paint lies near the organ's
        end). A 3D view waits for the full relabel."""
        session, state = self.state.session, self.state
        if state.closed or session is None or not state.complete:
            return
        layer, image = self.c.result_layer, self.c.image_layer
        if layer is None or image is None or image.data is not state.segmented_data:
            return
        if self.displayed_slice(image, session.axis) is not None:
            prior = self.c.prior()
            if prior is None:  # Auto: not measured yet, so its preview
                prior = session.auto_prior_preview()
            self._write_displayed(session, layer, image, prior)

    def _write_displayed(
        self, session: SegmentationSession, layer: Labels, image: Any, prior: float | None
    ) -> bool:
        """The displayed slice (all slices in a 3D view) at ``prior`` (None: Auto), without the
        3D steps, into the layer on the GUI thread. False after an error shown to the user."""
        shown = self.displayed_slice(image, session.axis)
        try:
            session.labels(
                prior,
                out=layer.data,
                z_range=self.c.z_range(),
                connected=False,
                slices=None if shown is None else (shown, shown),
            )
        except ValueError as exc:
            self.c.error(str(exc))
            return False
        layer.refresh()
        return True

    def _job(self, session: SegmentationSession, layer: Labels, done_text: str) -> RelabelJob:
        """Freeze what the full relabel needs, on the GUI thread (see :mod:`._relabel`)."""
        return RelabelJob(
            generation=self.relabels.next_generation(),
            snapshot=snapshot(session),
            prior=self.c.prior(),
            z_range=self.c.z_range(),
            connected=bool(self.ui.connected_checkbox.value),
            shape=tuple(layer.data.shape),
            dtype=layer.data.dtype,
            spacing=self.state.spacing,
            done_text=done_text,
        )

    def _land(self, result: RelabelResult) -> None:
        """A current full relabel finished: copy it into the preview layer (GUI thread)."""
        if result.failure is not None:
            self.c.error(result.failure)
            return
        layer = self.c.result_layer
        if layer is None or result.labels is None or layer.data.shape != result.labels.shape:
            return  # the layer was removed or rebuilt meanwhile
        layer.data[...] = result.labels
        layer.refresh()
        summary = self.summary(result.volumes)
        done = result.job.done_text
        self.c.status(f"{done}. {summary}" if done else summary)

    def displayed_slice(self, image: Any, axis: int) -> int | None:
        """Index along ``axis`` of the image slice the viewer shows (None in 3D view)."""
        if self.c.viewer.dims.ndisplay != 2 or axis not in self.c.viewer.dims.not_displayed:
            return None
        try:
            return round(float(image.world_to_data(self.c.viewer.dims.point)[axis]))
        except (IndexError, ValueError, TypeError):
            return None

    def summary(self, volumes: str | None = None) -> str:
        """The status line's prior, its source and ``volumes`` (None: counted from the layer)."""
        layer, session = self.c.result_layer, self.state.session
        if layer is None or session is None:
            return ""
        prior = self.ui.prior_slider.value
        if self.ui.auto_prior_checkbox.value:
            model = session.model
            source = (
                "model's estimate"
                if model.estimators
                else "learned threshold"
                if model.calibrated
                else "calibrated on your paint"
            )
            mode = f"auto: {source}"
        else:
            mode = "manual"
        if volumes is None:
            volumes = describe(layer.data, self.state.spacing, tuple(session.label_values))
        return f"Prior {prior:.3f} ({mode}): {volumes}"

    def start_prior(self, session: SegmentationSession) -> None:
        """Where the manual prior slider stands after a finished run.

        After a second pass from another volume's paint the session's boundary is not the
        calibrated 0.5: its support is a core of the first result, so the boundary sits
        further out (:data:`napari_tpm.bootstrap.CORE_LOGIT_SHIFT`), as the CLI's default
        ``--prior auto`` has it. One slice painted near the organ's end moves it out too
        (:mod:`napari_tpm.paint_position`). The slider moves there when it stands at its
        default (or where the dock last put it), and goes back once a run needs no such move.
        A value the user chose stays.
        """
        if self.ui.auto_prior_checkbox.value:
            return
        value, placed = float(self.ui.prior_slider.value), self.state.placed_prior
        if placed is not None and abs(value - placed[0]) > 1e-9:
            placed = None  # the user moved it since
        self.state.placed_prior = None
        if session.auto_prior_moved and (placed is not None or abs(value - DEFAULT_PRIOR) < 1e-9):
            target = round(session.auto_prior(), 3)
            self.state.placed_prior = (target, value if placed is None else placed[1])
        elif placed is not None:
            target = placed[1]  # no move this time: back to where it stood
        else:
            return
        self._show_prior(target)

    def _show_prior(self, value: float) -> None:
        """Put ``value`` on the slider and its box without relabelling (the caller does)."""
        with self.ui.prior_slider.changed.blocked(), self.ui.prior_spinbox.changed.blocked():
            self.ui.prior_slider.value = value
            self.ui.prior_spinbox.value = value

    def on_prior_slider(self, value: float) -> None:
        if abs(self.ui.prior_spinbox.value - value) > 1e-9:
            with self.ui.prior_spinbox.changed.blocked():
                self.ui.prior_spinbox.value = value
        if not self.ui.auto_prior_checkbox.value:
            self.relabel(quick=True)

    def on_prior_typed(self, value: float) -> None:
        self.ui.prior_slider.value = value

    def on_auto_prior(self, auto: bool) -> None:
        self.ui.prior_slider.enabled = not auto
        self.ui.prior_spinbox.enabled = not auto
        self.relabel()

    def on_z_min(self, value: int) -> None:
        if value > self.ui.z_max_spinbox.value:
            with self.ui.z_max_spinbox.changed.blocked():
                self.ui.z_max_spinbox.value = value
        self.relabel()

    def on_z_max(self, value: int) -> None:
        if value < self.ui.z_min_spinbox.value:
            with self.ui.z_min_spinbox.changed.blocked():
                self.ui.z_min_spinbox.value = value
        self.relabel()
