"""Writing files so that a crash, a kill or a full disk never loses or corrupts data.

Every output of napari-tpm (segmentations, probability maps, checkpoints, reports) goes
through the same steps:

1. `check_writable_folder` before any work, so a read-only or missing folder is reported in
   one line instead of after a long run;
2. `atomic_output` writes into a hidden temporary folder *beside* the target (same file
   system, so the final `os.replace` is atomic), flushes each file to disk and only then moves
   it into place; an existing file is either kept whole or replaced whole;
3. the writer checks what was written before the move (callers pass a ``verify`` callable),
   because some writers (SimpleITK's NIfTI writer among them) do not raise on a full disk;
4. `clean_stale_partials` removes temporaries that a killed process (SIGKILL, power loss) left
   behind, the next time anything is written to the same target.

Temporary names carry the writer's process id (``.NAME.partial-PID-RANDOM``), so a temporary
still being written by a live process is never removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "OutputError",
    "atomic_output",
    "c_stderr_silenced",
    "check_not_input",
    "check_writable_folder",
    "clean_stale_partials",
    "describe_os_error",
    "fsync_file",
    "prepare_output_folder",
]

_PARTIAL = ".partial-"


class OutputError(ValueError):
    """An output cannot be written; the message is one line a user can act on."""


def describe_os_error(err: OSError) -> str:
    """A short reason for an OSError ("no space left on device", "read-only file system")."""
    if err.errno is not None and err.errno in errno.errorcode:
        return os.strerror(err.errno).lower()
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def prepare_output_folder(folder: Path, option: str, purpose: str) -> Path:
    """Create ``folder`` if needed and probe it for writing, before any work is done.

    Raises OutputError with one line: ``folder`` is a file, cannot be created, or cannot be
    written (``option`` names the CLI flag, ``purpose`` what the folder is for).
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder} is a file; give a folder for {purpose}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"{option}: cannot create the folder {folder} ({describe_os_error(err)})"
        ) from None
    check_writable_folder(folder, option)
    return folder


def check_writable_folder(folder: str | os.PathLike, what: str = "output") -> Path:
    """Raise OutputError unless a file can be created in ``folder`` (which must exist).

    A real probe file is created and removed: permission bits say nothing about a read-only
    mount, a full quota or (for root) anything at all.
    """
    folder = Path(folder)
    if not folder.exists():
        raise OutputError(f"{what}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"{what}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".napari-tpm-probe-", dir=folder)
    except OSError as err:
        raise OutputError(
            f"{what}: cannot write in the folder {folder} ({describe_os_error(err)})"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return folder


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def check_not_input(
    out: str | os.PathLike, out_flag: str, inputs: dict[str, str | os.PathLike | None]
) -> None:
    """Raise OutputError when ``out`` is (after resolving symlinks) one of ``inputs``.

    Writing a result over the scan or the paint it was computed from destroys the input, and
    the atomic rename would do so silently. ``inputs`` maps a flag name to a path (or None).
    """
    target = _real(out)
    for flag, path in inputs.items():
        if path is None:
            continue
        same = _real(path) == target
        if not same and Path(path).exists() and target.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(path, target)  # hard links
        if same:
            raise OutputError(
                f"{out_flag} {out} is the same file as {flag} {path}; writing it would destroy "
                "the input, choose another output name"
            )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def clean_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``path`` left by processes that no longer run; return them.

    Recognises this module's ``.NAME.partial-PID-*`` folders and files and the older
    ``.NAME.partialPID*`` / ``.NAME.tmpPID`` names, so files from earlier versions go too.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        return []
    pattern = re.compile(re.escape(f".{path.name}") + r"\.(?:partial-?|tmp)(\d+)")
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk; a full disk surfaces here as OSError on some systems."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    main_name: str | None = None,
    verify: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder; on success move what was written there into place.

    The caller writes its main file as ``tmp / main_name`` (default: ``path``'s name) plus any
    side files (a MetaImage header's ``.raw``, for instance, named as they should end up beside
    ``path``). After the block, every file is flushed to disk, ``verify(main_file)`` runs (it
    raises to refuse the result), side files are moved first and the main file last, renamed
    to ``path``. On any error, including KeyboardInterrupt, the temporary folder is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    clean_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{_PARTIAL}{os.getpid()}-", dir=path.parent))
    main = tmp / (main_name or path.name)
    try:
        try:
            yield tmp
        except OSError as err:  # name the target, not the hidden temporary, in messages
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        if not main.is_file():
            raise OutputError(f"{path.name}: the writer produced no file")
        for entry in tmp.iterdir():
            fsync_file(entry)
        if verify is not None:
            try:
                verify(main)
            except OSError as err:
                raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        for entry in sorted(tmp.iterdir()):
            if entry != main:
                os.replace(entry, path.parent / entry.name)
        os.replace(main, path)
        _fsync_folder(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def c_stderr_silenced() -> Iterator[None]:
    """Silence C-level stderr while a C library writes (NIfTI prints "** ERROR: NWAD ...").

    Such lines would break the one-line error contract of the CLIs; writers using this must
    detect the failure themselves (``verify`` of `atomic_output`) and word it.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreter): nothing to silence
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
