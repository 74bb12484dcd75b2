"""What every napari-tpm command line shares: user errors are one line on stderr, exit 2.

Scripts and outside checks rely on that contract, so the three CLIs (segment, train,
evaluate) take it from here rather than each keeping its own copy.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import threading
from collections.abc import Iterator

EXIT_BAD_INPUT = 2
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
#: Exit status after SIGTERM (128 + SIGTERM).
EXIT_TERMINATED = 143


class BadInput(Exception):
    """A user error: reported as one line on stderr with exit status 2."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the CLI says so in one line and exits with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def one_line(text: str) -> str:
    """``text`` on one line: error messages from libraries (torch, ITK) may span several."""
    return " ".join(text.split())


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first line of an error message (torch's unpickling errors run to many lines)."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def os_error_line(err: OSError, where: str | None = None) -> str:
    """The line "FILE: reason" for an OSError (a full disk, a read-only folder).

    ``where`` names the place when the error carries no file name (a failed flush).
    """
    from napari_tpm.atomic import describe_os_error

    place = err.filename or where
    return (f"{place}: " if place else "") + describe_os_error(err)


@contextlib.contextmanager
def interrupts_as_exit() -> Iterator[None]:
    """Turn Ctrl-C and SIGTERM into `Interrupted`, so cleanup runs and no traceback is shown.

    Every write is atomic (temporary file, then rename), and the ``finally`` blocks that remove
    temporaries run while `Interrupted` propagates; a SIGTERM would otherwise kill the process
    on the spot and leave them behind.
    """

    def on_term(signum: int, frame: object) -> None:
        raise Interrupted("terminated", EXIT_TERMINATED)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted("interrupted", EXIT_INTERRUPTED) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump) and exit with status 2."""

    def error(self, message: str) -> None:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _whole_number_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    return _whole_number_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _whole_number_at_least(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a duration, say)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value
