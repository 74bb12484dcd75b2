"""Helpers the dock-widget tests share (imported by name: ``tests/`` is on ``sys.path``).

Plain functions, not fixtures, because each test calls them at several points of its story.
"""

from __future__ import annotations

import numpy as np

LIVER = 5
#: the slowest run of a test (a cold filter bank on a 2-core CPU takes a few seconds)
SEGMENT_TIMEOUT_MS = 60_000


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def paint_slice(phantom) -> int:
    """The slice with the most liver: where a user would paint."""
    return int(np.argmax((phantom.labels == LIVER).sum(axis=(1, 2))))


def run(qtbot, widget) -> None:
    """Click Segment volume and wait for the worker (and the relabel after it) to finish."""
    widget.segment_button.native.click()
    assert widget.running, "the click should have started a worker"
    settle(qtbot, widget)


def settle(qtbot, widget) -> None:
    """Wait until no worker runs: the background relabel has written the final preview."""
    qtbot.waitUntil(lambda: not widget.running, timeout=SEGMENT_TIMEOUT_MS)
