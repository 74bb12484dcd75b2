"""Run-folder files of a training run: checkpoints that survive damage, and up-front checks.

``last.pt`` is written atomically and verified, and the checkpoint it replaces is kept as
``last.prev.pt``, so a file damaged later on disk (truncated, emptied) still leaves a
predecessor to resume from (`read_checkpoint` falls back to it and says so). The CLI checks
the run folder and a ``--resume`` checkpoint before any volume is loaded, so a read-only or
wrong ``--out`` and a checkpoint of another encoder are one-line errors, not tracebacks later.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from napari_tpm._cli import BadInput

CHECKPOINT_FORMAT = "napari-tpm-train/1"


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept (``last.pt`` -> ``last.prev.pt``)."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint_file(obj: Any, path: Path) -> None:
    """Save ``obj`` atomically and verified, keeping the file it replaces as the previous one.

    The old ``last.pt`` is hard-linked to ``last.prev.pt`` (no copy, no moment without a
    ``last.pt``), so a checkpoint damaged later on disk still has a predecessor to resume from.
    """
    from napari_tpm.torch_files import save_torch_atomic

    if path.is_file():
        keep = previous_checkpoint(path)
        link = keep.with_name(f".{keep.name}.tmp{os.getpid()}")
        try:
            link.unlink(missing_ok=True)
            os.link(path, link)
            os.replace(link, keep)
        except OSError:  # no hard links here: keep only the newest checkpoint
            link.unlink(missing_ok=True)
    save_torch_atomic(obj, path)


def read_checkpoint(path: Path, report: Any = None) -> tuple[dict[str, Any], Path] | None:
    """Load a training checkpoint, or the previous one when it is unreadable.

    Returns ``(state, file read)``, or None when neither file exists. ``report(message)`` is
    told about a fallback. Raises ValueError (one line) when no readable checkpoint is left.
    """
    errors = []
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.is_file():
            continue
        try:
            # on the CPU: RNG states must stay CPU tensors; weights are copied onto the device
            state = torch.load(candidate, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
                raise ValueError("not a napari-tpm training checkpoint")
        except Exception as exc:  # truncated zip, unpickling errors, wrong content...
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            errors.append(f"{candidate.name}: {reason}")
            continue
        if errors and report is not None:
            report(f"{errors[0]}; resuming from the previous checkpoint {candidate}")
        return state, candidate
    if errors:
        raise ValueError(
            "cannot resume, no readable checkpoint: " + "; ".join(errors) + " (start again "
            "without --resume, or with another --out)"
        )
    return None


def check_run_dir(out: str, export: str | None) -> Path:
    """The run folder, created and probed for writing before any work (one-line errors)."""
    from napari_tpm.atomic import OutputError, check_writable_folder, prepare_output_folder

    run_dir = Path(out).expanduser()
    try:
        prepare_output_folder(run_dir, "--out", "the run (checkpoints, log)")
        if export is not None:
            if Path(export).is_dir():
                raise BadInput(f"--export {export} is a folder; give a file name like model.pt")
            check_writable_folder(Path(export).expanduser().parent, "--export")
    except OutputError as err:
        raise BadInput(str(err)) from None
    return run_dir


def read_resume_state(run_dir: Path, config, main_rank: bool) -> dict | None:
    """Read RUN_DIR/last.pt (or the previous checkpoint) and check it fits this command."""

    def report(message: str) -> None:
        if main_rank:
            print(message, file=sys.stderr)

    try:
        found = read_checkpoint(run_dir / "last.pt", report)
    except ValueError as err:
        raise BadInput(f"--resume: {err}") from None
    if found is None:
        report(f"no {run_dir / 'last.pt'} yet: starting a new run")
        return None
    state, path = found
    saved = state.get("config") if isinstance(state.get("config"), dict) else {}
    for key, flag in (("encoder", "--encoder"), ("from_checkpoint", "--from-checkpoint")):
        if key in saved and saved[key] != getattr(config, key):
            raise BadInput(
                f"--resume: {path} was trained with {flag} {saved[key]}, not "
                f"{getattr(config, key)}; repeat the original {flag} or use another --out"
            )
    return state
