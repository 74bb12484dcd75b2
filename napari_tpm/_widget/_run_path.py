"""The ordered result path: every worker signal is handled in arrival order, one at a time.

Every worker signal (a yielded batch, the return, an abort, a failure, the end) is appended to
a queue and handled strictly in arrival order by :meth:`RunPath._post`. A handler that processes
Qt events (napari's progress bar does, when it updates) can therefore never run the "finished"
logic in the middle of a batch: a nested signal is queued and handled after the current one.
This is what made "connected" and the status line come out wrong (issue 12).

Kept apart from :mod:`._controller` (what the dock's buttons ask for) so that this path, which
every run of the dock takes, reads in one place; :class:`._controller.Controller` inherits it.
"""

from __future__ import annotations

import time
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from napari_tpm._widget._state import Run, WidgetState
from napari_tpm._widget._worker import Adapted, Failure, SessionReady

if TYPE_CHECKING:
    from napari_tpm._widget._adjust import Adjuster
    from napari_tpm._widget._layout import Layout

#: during a run the preview is rewritten at most once per this many times its own cost
PREVIEW_BUSY_FACTOR = 4.0


class RunPath:
    """Starting a worker and handling its signals in order; a mixin of ``Controller``.

    It uses the controller's feedback (``status``, ``error``), its preview inputs
    (``result_layer``, ``prior``, ``z_range``) and its conclusions (``_conclude_segmentation``,
    ``segment``), and holds no state beyond the attributes below, which the controller sets up.
    """

    # set by Controller.__init__
    ui: Layout
    state: WidgetState
    adapt: Any  # the AdaptController, attached by the widget
    adjust: Adjuster
    _queue: deque[tuple[Run, str, Any]]
    _draining: bool
    _pbar: Any
    _worker: Any

    def start(self, worker: Any, run: Run, text: str, total: int = 0) -> Any:
        """Wire ``worker``'s signals into the queue, mark the dock busy and start it."""
        for signal in ("yielded", "returned", "errored", "aborted", "finished"):
            if hasattr(worker, signal):  # a FunctionWorker (the refit) does not yield
                getattr(worker, signal).connect(partial(self._post, run, signal))
        self.adjust.stop()  # the run rewrites the preview: any relabel result is stale
        self.state.run = run
        self._worker = worker
        self.ui.set_busy(True, self.adapt.possible() if self.adapt else False)
        self.status(text)
        from napari.utils import progress

        self._pbar = progress(total=total, desc=f"TPM {run.kind}")
        worker.start()
        return worker

    def _post(self, run: Run, signal: str, payload: Any = None) -> None:
        self._queue.append((run, signal, payload))
        if self._draining:
            return  # a handler below us processed events: handled in order after it
        self._draining = True
        try:
            while self._queue:
                self._handle(*self._queue.popleft())
        finally:
            self._draining = False

    def _handle(self, run: Run, signal: str, payload: Any) -> None:
        if signal == "finished":
            self._finish(run)
        elif self.state.closed:
            return
        elif signal == "aborted":
            run.cancelled = True
        elif signal == "errored":
            run.failure = f"{type(payload).__name__}: {payload}"
            self.error(run.failure)
        elif signal == "returned":
            if isinstance(payload, Failure):
                run.failure = payload.message
                self.error(payload.message)
            elif run.failure is None:
                run.returned = True
        elif isinstance(payload, Failure):
            run.failure = payload.message
            self.error(payload.message)
        elif isinstance(payload, SessionReady):
            self.state.session = payload.session
            if self.adapt is not None:
                self.adapt.update_info()
        elif isinstance(payload, Adapted):
            run.adapted = payload.name
        else:
            self._progress(run, payload)

    def _progress(self, run: Run, item: Any) -> None:
        run.done, run.total = int(item.done), int(item.total)
        pbar = self._pbar
        if pbar is not None:
            pbar.total = item.total
            pbar.update(max(item.done - pbar.n, 0))  # may process events: fine, see _post
        if run.kind == "adapt":
            self.adapt.on_progress(run, item)
            return
        if run.kind == "refit":  # the new prototypes' scores are in place
            self.adjust.show_refitted()
            return
        if item.slices is None:
            return
        lo, hi = int(item.slices[0]), int(item.slices[1]) - 1  # inclusive from here on
        if run.unshown is not None:
            lo, hi = min(lo, run.unshown[0]), max(hi, run.unshown[1])
        run.unshown = (lo, hi)
        # only the slices computed since the last write are rewritten (a whole CT-sized preview
        # cost 0.1-0.4 s of GUI time), and at most once per PREVIEW_BUSY_FACTOR times that cost
        # (the first batch always shows; the relabel at the end writes the whole result)
        now = time.perf_counter()
        if run.shown_at and now - run.shown_at < PREVIEW_BUSY_FACTOR * run.show_cost:
            return
        if self.write_preview(run.unshown):
            run.unshown = None
            run.shown_at, run.show_cost = time.perf_counter(), time.perf_counter() - now
            self.status(f"Segmenting... {item.done}/{item.total} slices")

    def write_preview(self, slices: tuple[int, int] | None = None) -> bool:
        """The slices computed so far into the preview layer (no connectivity: not final).

        ``slices`` (lo, hi, inclusive, along the slice axis) limits the rewrite to those.
        """
        session, layer = self.state.session, self.result_layer
        if session is None or layer is None:
            return False
        try:
            session.labels(
                self.prior(),
                out=layer.data,
                z_range=self.z_range(),
                connected=False,
                slices=slices,
            )
        except ValueError:
            return False  # the scores of this run are not allocated yet
        layer.refresh()
        return True

    def _finish(self, run: Run) -> None:
        """The worker has ended, whatever happened: conclude it, then free the dock."""
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._worker = None
        self.state.run = None
        if self.state.closed:
            return
        self.ui.set_busy(False, self.adapt.possible() if self.adapt else False)
        if run.kind == "adapt":
            self.adapt.conclude(run)
        elif run.failure is None:
            self._conclude_segmentation(run)
        if self.state.rerun_pending and not self.state.running:
            self.state.rerun_pending = False
            self.segment()

    def cancel(self) -> None:
        """Ask the worker to stop after the current batch."""
        if self._worker is not None and self.state.run is not None:
            # the run counts as cancelled only when the worker says so ("aborted"): a quit that
            # arrives after the last batch leaves a complete result, and a refit cannot stop
            self._worker.quit()
            self.status("Cancelling after the current batch...")

    def close(self) -> None:
        """The dock is going: stop the timers, drop any relabel, ask the run to stop."""
        self.state.closed = True
        self.adjust.stop()
        if self._worker is not None:
            self._worker.quit()
