"""Thread workers that let go of their job once done: :func:`job_worker`.

napari's ``create_worker`` files every worker it makes in the window's task list (its cancel
callback is the worker's ``quit``), and that list is kept for the viewer's lifetime (napari 0.9).
A worker holds what it was given: a function worker its arguments, a generator worker its
generator, whose frame holds the arguments until it ends (a cancelled one never does: the worker
stops resuming it). The dock's jobs hold a run's data (the session with its scores and features,
~200 MB on a 512 x 512 x 150 CT, and the request's snapshots), so each finished run stayed in
memory for the rest of the session.

The workers here are napari's worker classes (errors still reach napari's notifications) made
directly, without the task list. The job travels in a box that the thread empties, and when the
work ends, however it ends, the box is cleared and the generator closed in the worker thread
(``GeneratorExit`` at the ``yield`` where a cancel stopped it), before ``finished`` is emitted.
Emptying matters even without the task list: PySide6 (6.11) now and then keeps the Python
wrapper of a finished worker whose C++ object Qt has deleted, with no Python referrer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker

Job = list[tuple[Callable[..., Any], tuple[Any, ...]]]


def _call(box: Job) -> Any:
    func, args = box.pop()
    return func(*args)


def _steps(box: Job) -> Iterator[Any]:
    func, args = box.pop()
    return (yield from func(*args))


class _LetsGo:
    """Mixin: when ``work`` ends the worker holds nothing of its job."""

    _box: Job

    def work(self) -> Any:
        try:
            return super().work()  # type: ignore[misc]
        finally:
            self._box.clear()  # a worker quit before its first step never took its job
            gen = getattr(self, "_gen", None)  # superqt's GeneratorWorker keeps its generator
            if gen is not None:
                gen.close()


class _Function(_LetsGo, FunctionWorker):
    def __init__(self, box: Job) -> None:
        super().__init__(_call, box)
        self._box = box


class _Generator(_LetsGo, GeneratorWorker):
    def __init__(self, box: Job) -> None:
        super().__init__(_steps, box)
        self._box = box


def job_worker(func: Callable[..., Any], *args: Any) -> Any:
    """A napari thread worker (not started) running ``func(*args)`` and holding none of ``args``
    once its work has ended.

    A generator function gets a generator worker (``yielded``, ``aborted`` and ``quit`` between
    steps), any other a function worker. Errors are emitted as ``errored`` and relayed to napari's
    notifications, as with ``create_worker(..., _ignore_errors=True)``; no task-list entry is made.
    """
    box: Job = [(func, args)]
    if inspect.isgeneratorfunction(func):
        return _Generator(box)
    return _Function(box)
