"""Writing torch files (checkpoints, models) and their JSON cards atomically and verified.

The general machinery is :mod:`napari_tpm.atomic` (temporary beside the target, flush, check,
rename); this module adds what torch needs on top: a ``torch.save`` archive is checked entry by
entry before it replaces anything, and the RuntimeError torch's zip writer raises on a full disk
is turned back into the OSError (ENOSPC) it hides.
"""

from __future__ import annotations

import errno
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from napari_tpm.atomic import atomic_output


def verify_torch_file(path: Path) -> None:
    """Raise OSError unless ``path`` is a complete ``torch.save`` archive (every CRC checked).

    Run on the temporary file before it replaces anything, so a full disk or a failing device
    can never leave a truncated checkpoint in place of a good one.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise OSError(f"{path.name} was not written completely ({exc})") from None
    if bad is not None:
        raise OSError(f"{path.name} was not written completely (entry {bad} is damaged)")


def atomic_write(path: Path, write: Any, verify: Any = None) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then rename it in place.

    `napari_tpm.atomic.atomic_output` does the rest: the data is flushed to disk and checked
    (``verify``) before the rename, temporaries are removed on any error, and ones a killed
    process left behind are removed on the next write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, verify=verify) as tmp, open(tmp / path.name, "wb") as f:
        try:
            write(f)
        except RuntimeError as exc:  # torch's zip writer reports a failed write this way
            raise _write_error(exc, tmp / path.name) from None


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically and verified: the file is complete, or the old one is kept.

    A full disk raises OSError (ENOSPC) naming ``path``, never a torch RuntimeError.
    """
    path = Path(path)
    atomic_write(path, lambda f: torch.save(obj, f), verify=verify_torch_file)
    return path


def _write_error(exc: RuntimeError, path: Path) -> OSError:
    """The OSError behind a RuntimeError of torch's writer (it hides ENOSPC in its message)."""
    try:
        full = shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    reason = f"cannot write the file ({str(exc).splitlines()[0][:120]})"
    return OSError(errno.EIO, reason, str(path))
