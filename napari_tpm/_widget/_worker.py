"""What the widget's thread workers run: plain generators and functions, no Qt.

Failures are *returned* (yielded) as :class:`Failure` values instead of raised, for two reasons:

* napari's generator workers (superqt) treat a ``RuntimeError`` raised by the generator as "the
  worker was deleted": they turn it into a warning and emit neither ``errored`` nor
  ``finished``, so the widget would stay "running" for ever; ``torch.OutOfMemoryError`` is a
  ``RuntimeError``;
* with napari 0.9.2 under PySide6, a worker made by ``create_worker`` that emits ``errored``
  while a viewer exists also raises a ``TypeError`` in napari's own task-status callback (a
  lambda that does not accept the exception argument); the dock's workers are made without it
  now (:mod:`._thread`), but a value keeps the one path either way.

A value travels the ordinary ``yielded``/``returned`` path, which works everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari_tpm.progress import Progress
    from napari_tpm.session import SegmentationSession


@dataclass(frozen=True)
class Failure:
    """A step failed; ``message`` is one line meant for the user."""

    message: str


@dataclass(frozen=True)
class SessionReady:
    """Yielded once by :func:`segmentation_steps` with the session it (re)used."""

    session: SegmentationSession


@dataclass(frozen=True)
class Adapted:
    """Yielded last by :func:`adaptation_steps`: the session now uses the model ``name``."""

    name: str


@dataclass(frozen=True)
class SegmentRequest:
    """A snapshot of everything one segmentation needs, taken on the GUI thread."""

    image: np.ndarray
    spacing: tuple[float, float, float]
    support: np.ndarray
    support_image: np.ndarray | None
    support_spacing: tuple[float, float, float] | None
    n_prototypes: int
    #: how the support image and paint were reordered to the image's axes ("" if not)
    reordered: str = ""


def user_message(exc: BaseException) -> str:
    """A one-line explanation of ``exc`` that tells the user what to do about it."""
    name = type(exc).__name__
    text = str(exc) or name
    if "OutOfMemory" in name or "out of memory" in text.lower():
        return (
            f"Out of memory while segmenting ({text.splitlines()[0]}). Try the CPU device, "
            "close other programs, or crop the volume."
        )
    if isinstance(exc, ValueError):
        return text
    return f"{name}: {text}"


def segmentation_steps(
    get_session: Callable[[], SegmentationSession], request: SegmentRequest
) -> Iterator[SessionReady | Progress | Failure]:
    """Run one segmentation, yielding the session first, then every Progress (or a Failure).

    ``get_session`` returns the widget's session or builds a new one (loading a model takes a
    moment, so it happens here, off the GUI thread). The support paint and image are snapshots,
    so the user can keep painting while this runs.
    """
    try:
        session = get_session()
        yield SessionReady(session)
        session.set_image(request.image, request.spacing)
        yield from session.segment(
            request.support,
            support_image=request.support_image,
            support_spacing=request.support_spacing,
            n_prototypes=request.n_prototypes,
        )
        session.auto_prior()  # measured here, off the GUI thread, where it may cost a relabel
    except Exception as exc:  # GeneratorExit (from quit) is not an Exception: it passes through
        yield Failure(user_message(exc))


def adaptation_steps(
    get_session: Callable[[], SegmentationSession],
    image: np.ndarray,
    spacing: tuple[float, float, float],
    steps: int,
    options: dict[str, Any] | None = None,
) -> Iterator[SessionReady | Progress | Adapted | Failure]:
    """Adapt the session's model to ``image``: the session first, then Progress, then Adapted.

    ``adapt_session`` swaps the model only after its last step, so a cancel (the worker closes
    this generator, raising GeneratorExit at a ``yield``) leaves the session's model as it was.
    ``options`` go to ``adapt_session`` (``lr``, ``trainable``, tiny-volume settings in tests).
    """
    try:
        from napari_tpm.adapt import adapt_session, check_adaptable

        session = get_session()
        yield SessionReady(session)
        check_adaptable(session.model)  # before set_image: a filter bank fails at once
        session.set_image(image, spacing)
        yield from adapt_session(session, int(steps), **(options or {}))
        yield Adapted(str(getattr(session.model, "name", "") or "model"))
    except Exception as exc:  # GeneratorExit (from quit) is not an Exception: it passes through
        yield Failure(user_message(exc))


def encoder_name(choice: str) -> str:
    """The encoder a model choice uses, read from its JSON card without loading weights.

    The time estimate needs only this name; "" when it cannot be told (the estimate then takes
    the slowest encoder, an upper bound).
    """
    from napari_tpm.checkpoints import FILTERBANK, model_dir

    if choice == FILTERBANK:
        return FILTERBANK
    path = Path(choice)
    card = path.with_suffix(".json") if path.suffix else model_dir() / f"{choice}.json"
    try:
        encoder = json.loads(card.read_text(encoding="utf-8")).get("encoder") or {}
    except (OSError, ValueError, AttributeError):
        return ""
    return str(encoder.get("name", "")) if isinstance(encoder, dict) else ""


def refit_prototypes(
    session: SegmentationSession, k: int
) -> Generator[Progress, None, int | Failure]:
    """Refit ``k`` prototypes from the cached support features (no encoder call).

    Yields once when the new scores are in place, so the dock can show the displayed slice
    at a manual prior before the auto prior is measured (that labels the whole volume, about
    a second on a CT). Returns ``k``, or a :class:`Failure`.
    """
    from napari_tpm.progress import Progress

    try:
        session.set_prototypes(k)
        n = int(np.shape(session.scores())[session.axis])
        yield Progress(n, n, "refit", None)
        session.auto_prior()  # as after a segmentation: measured off the GUI thread
    except Exception as exc:
        return Failure(user_message(exc))
    return k


def describe(result: np.ndarray, spacing: tuple[float, ...], values: tuple[int, ...] = ()) -> str:
    """Short text for the status line: voxels and millilitres per label (or in total).

    ``values`` are the label values to report (all non-zero ones when empty). With ``values``
    each is counted by one comparison pass (14 ms on a 39 M-voxel CT, and numpy releases the GIL,
    so the GUI keeps running while a worker counts); ``bincount`` first widens the volume to
    64-bit integers (357 ms and 315 MB there), so it is used only to find the values. It belongs
    on the debounced path, not on every slider step.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    flat = np.asarray(result).reshape(-1)
    if flat.dtype.kind not in "ui" or flat.dtype.itemsize > 2:
        n = int(np.count_nonzero(flat))
        return f"{n:,} voxels ({n * voxel_ml:,.1f} mL)" if n else "empty result"
    if values:
        counts = {int(v): int(np.count_nonzero(flat == v)) for v in values}
    else:
        found = np.bincount(flat)
        counts = {int(v): int(found[v]) for v in np.nonzero(found)[0] if v != 0}
    shown = tuple(counts)
    parts = [f"label {v}: {counts[v] * voxel_ml:,.1f} mL ({counts[v]:,} voxels)" for v in shown]
    if not parts or not any(counts[v] for v in shown):
        return "empty result (try a higher class prior)"
    return "; ".join(parts)


def short_reason(exc: BaseException, path: str = "") -> str:
    """The first clause of ``exc``'s message, without ``path``, at most ~100 characters.

    A torch unpickling error runs to five lines and a long path; the status line and the toast
    need one short line that says what is wrong.
    """
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if path:
        text = text.replace(str(path), Path(path).name)
    return text if len(text) <= 100 else text[:97].rstrip() + "..."
