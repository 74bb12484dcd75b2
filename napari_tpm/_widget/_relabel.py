"""The full relabel (3D clean-up and volumes per label) in a worker thread; the newest wins.

Why: ``session.labels(connected=True)`` (connected components, neck cut, outline snap) takes
0.7-1.3 s on a 3 M-voxel liver. On the GUI thread it froze napari each time the class-prior
slider came to rest and at the end of every run (``benchmarks/RESULTS-widget.md``). The slider's
live preview (one slice, a few ms) stays on the GUI thread; this module runs the rest.

The rules that keep it safe:

* **A snapshot, not the session.** The worker reads a shallow copy of the session taken on the
  GUI thread while no run is going. A run never writes into the score arrays a finished run left:
  ``segment``/``set_prototypes`` allocate new ones for their first pass and reuse only those
  (``_score_all``, ``_run_array``), ``set_image`` replaces the
  image, ``_reset_support`` drops the references. So the arrays the snapshot holds do not change
  while the worker reads them, even when a new run starts meanwhile; that run's result makes
  this one stale anyway.
* **Its own output.** The worker fills a new array; only the GUI thread copies it into the
  Labels layer (:meth:`Relabeler.land` calls back into the controller).
* **Generations.** Every request and every invalidation (a slider move, a run or refit starting,
  a new image or model, the dock closing) bumps ``WidgetState.generation``; a result is written
  only while its generation is still the newest, so a stale one is dropped, never raced.
* **One worker at a time.** A request while one runs waits (replacing any earlier waiting one)
  and starts when the running one ends: on two cores, two relabels would only slow each other.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tpm._widget._worker import describe, user_message

if TYPE_CHECKING:
    from napari_tpm._widget._state import WidgetState
    from napari_tpm.session import SegmentationSession


@dataclass(frozen=True)
class RelabelJob:
    """Everything one full relabel needs, taken on the GUI thread.

    Attributes:
        generation: ``WidgetState.generation`` when it was asked for.
        snapshot: a shallow copy of the session (see the module docstring).
        prior: the class prior (None: the model's estimate).
        z_range: slices kept along the slice axis (inclusive).
        connected: run the 3D steps.
        shape, dtype: the preview layer's buffer, which the result must match.
        spacing: for the volumes in mL.
        done_text: what the status line says before the volumes ("Segmented in 3.2 s").
    """

    generation: int
    snapshot: SegmentationSession
    prior: float | None
    z_range: tuple[int, int]
    connected: bool
    shape: tuple[int, ...]
    dtype: np.dtype
    spacing: tuple[float, float, float]
    done_text: str = ""


@dataclass(frozen=True)
class RelabelResult:
    """What the worker computed for ``job``: the labels and their volumes, or why it failed."""

    job: RelabelJob
    labels: np.ndarray | None = None
    volumes: str = ""
    failure: str | None = None


def snapshot(session: SegmentationSession) -> SegmentationSession:
    """A read-only view of ``session``'s caches as they are now (no array is copied)."""
    return copy.copy(session)


def compute(job: RelabelJob) -> RelabelResult:
    """Runs in the worker: the labels of ``job`` in a new array, and their volumes.

    A failure is returned in the result, not raised (see :mod:`._worker` for why).
    """
    try:
        out = np.zeros(job.shape, dtype=job.dtype)
        session = job.snapshot
        session.labels(job.prior, out=out, z_range=job.z_range, connected=job.connected)
        volumes = describe(out, job.spacing, tuple(session.label_values))
    except Exception as exc:
        return RelabelResult(job, failure=user_message(exc))
    return RelabelResult(job, out, volumes)


class Relabeler:
    """Runs :func:`compute` in a thread worker, at most one at a time, newest request wins.

    Args:
        state: the dock's state (its ``generation`` and ``closed``).
        land: called on the GUI thread with a result that is still current.
    """

    def __init__(self, state: WidgetState, land: Callable[[RelabelResult], None]) -> None:
        self.state = state
        self._land = land
        self._worker: Any = None
        self._waiting: RelabelJob | None = None
        self._after: list[Callable[[], Any]] = []
        self._landed = False  # the running job's result was written (callbacks due at its end)

    @property
    def busy(self) -> bool:
        """A relabel is running or waiting to run."""
        return self._worker is not None or self._waiting is not None

    @property
    def worker(self) -> Any:
        """The worker running now (None when idle); tests wait on it."""
        return self._worker

    def next_generation(self) -> int:
        """Make every result asked for so far stale, and drop a waiting job (a newer follows).

        What waits for the newest relabel (:meth:`after_current`) keeps waiting for the next.
        """
        self.state.generation += 1
        self._waiting = None
        return self.state.generation

    def invalidate(self) -> None:
        """The preview changes under any pending relabel: drop it and what waited for it."""
        self.next_generation()
        self._after.clear()
        self._landed = False

    def after_current(self, callback: Callable[[], Any]) -> None:
        """Call ``callback`` once the newest relabel is in the layer (dropped on invalidate)."""
        if callback not in self._after:  # Apply pressed twice still applies once
            self._after.append(callback)

    def submit(self, job: RelabelJob) -> None:
        """Run ``job`` now, or after the running one (it replaces any job already waiting)."""
        if self.state.closed:
            return
        if self._worker is not None:
            self._waiting = job
            return
        # a job holds the scores of its run (200 MB on a CT): the worker must not keep it once
        # done, nor be kept in napari's task list (see ._thread; a slider rest is not a task)
        from napari_tpm._widget._thread import job_worker

        worker = job_worker(compute, job)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _on_returned(self, result: RelabelResult) -> None:
        if self.state.closed or result.job.generation != self.state.generation:
            return  # stale: a newer request or an invalidation came meanwhile
        self._land(result)
        if result.failure is not None:
            self._after.clear()  # nothing final to wait for
        else:
            self._landed = True

    def _on_finished(self) -> None:
        """The worker's thread is done: start the waiting job, or run what waited for this one.

        Callbacks run here, not at ``returned``: only now is :attr:`busy` false, so a callback
        that asks "is a relabel pending?" (Apply does) gets the right answer.
        """
        self._worker = None
        waiting, self._waiting = self._waiting, None
        if self.state.closed:
            return
        if waiting is not None:
            self.submit(waiting)
            return
        if self._landed:
            self._landed = False
            callbacks, self._after = self._after, []
            for callback in callbacks:
                callback()
