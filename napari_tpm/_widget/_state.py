"""What the dock remembers between events, in one object the controller alone writes.

Separating it from the controls makes every question the controller asks ("is the preview
complete?", "was the last run cancelled?") a field with one meaning, instead of a flag spread
over handlers that could run in any order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_tpm.session import SegmentationSession


@dataclass
class Run:
    """One worker's life: what it does and how it ended, filled in by the ordered result path.

    Attributes:
        kind: "segment", "refit" or "adapt".
        started: ``time.perf_counter()`` at the click.
        done, total: the last progress reported (slices or steps).
        returned: the worker's generator ran to its end without a failure.
        cancelled: the user pressed Cancel (or the dock closed).
        failure: the one-line failure message, when the worker reported one.
        adapted: the adapted model's name, when an adaptation finished.
        shown_at, show_cost: when the preview was last rewritten and what it cost, to keep
            the GUI thread mostly free while a large volume streams in.
        unshown: the slices (lo, hi, inclusive) computed since the preview was last rewritten.
        reordered: for a segmentation from another volume's paint, how its voxels were
            reordered to the image's axes ("LAS -> RAS"), for the status line; "" if not.
    """

    kind: str
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    total: int = 0
    returned: bool = False
    cancelled: bool = False
    failure: str | None = None
    adapted: str | None = None
    shown_at: float = 0.0  # when the preview was last rewritten during the run
    show_cost: float = 0.0  # how long that rewrite took (GUI thread)
    unshown: tuple[int, int] | None = None
    reordered: str = ""

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


@dataclass
class WidgetState:
    """The dock's memory.

    Attributes:
        session: the segmentation session (None before the first run).
        session_key: (model choice, device) the session was made for.
        complete: the session holds a finished segmentation of ``segmented_data``.
        partial: why the preview is incomplete ("cancelled after 40/150 slices"), else None.
        run: the worker now running, None when idle.
        closed: the dock was closed; nothing may touch Qt any more.
        rerun_pending: Auto-update asked for a run while one was running.
        extra_checkpoints: checkpoint files the user chose (validated) this session.
        model_value: the last valid model choice (to go back to after a refused file).
        spacing: the spacing of the image segmented last (z, y, x), for volumes in mL.
        segmented_data: the image array the session's scores belong to.
        adapt_options: extra keyword arguments for ``adapt_session`` (tests use tiny settings).
        placed_prior: (value, value before) when the dock itself moved the manual prior slider
            after a second pass (:meth:`._adjust.Adjuster.start_prior`), else None.
        generation: bumped by whatever makes a background relabel's result stale (a slider
            move, a run starting, a new image or model, closing): a result is written into the
            preview only while its generation is the newest (see :mod:`._relabel`).
    """

    session: SegmentationSession | None = None
    session_key: tuple[str, str] | None = None
    complete: bool = False
    partial: str | None = None
    run: Run | None = None
    closed: bool = False
    rerun_pending: bool = False
    extra_checkpoints: list[str] = field(default_factory=list)
    model_value: str = ""
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    segmented_data: Any = None
    adapt_options: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    placed_prior: tuple[float, float] | None = None

    @property
    def running(self) -> bool:
        return self.run is not None

    def forget_result(self) -> None:
        """The cached scores no longer describe the preview (new image, new model)."""
        self.complete = False
        self.partial = None
        self.generation += 1
