"""Turning a device name ("auto", "cpu", "cuda", "cuda:1", "mps") into a ``torch.device``.

One function serves three callers whose rules differ, each selected by a keyword:

* the session, the CLIs and the evaluation (the defaults): the device must exist here, so a
  missing GPU is a one-line ``ValueError`` before any work starts
  (:func:`napari_tpm._session_data.resolve_device`);
* training (``local_rank``): the same check, and plain "cuda" means one GPU per local rank under
  ``torchrun`` (:func:`napari_tpm.train.ddp.resolve_device`);
* the adaptation budget (``check_available=False``): nothing is checked, because the budget also
  answers "what would a GPU get" for a device the user has not picked yet
  (:func:`napari_tpm.adapt_budget.device_of`).

:func:`bf16_autocast_pays` answers the other device question training asks: whether bf16
autocast is native here. Kept in its own module, importing only torch, so that every layer can
use it without import cycles.
"""

from __future__ import annotations

import torch

__all__ = ["bf16_autocast_pays", "resolve_device"]


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(
    device: str | torch.device = "auto",
    *,
    check_available: bool = True,
    local_rank: int | None = None,
) -> torch.device:
    """``device`` as a ``torch.device``; a ``torch.device`` is returned unchanged.

    Names are case-insensitive. "auto" is CUDA when a CUDA GPU is present, else the CPU; MPS is
    never chosen automatically (users report wrong results with it, so it is opt-in).

    Args:
        device: "auto", "cpu", "cuda", "cuda:N", "mps", ... or a ``torch.device``.
        check_available: refuse a CUDA or MPS device this machine does not have. Without it
            the device is only named, not checked (what a GPU would get, on a CPU machine).
        local_rank: training's rank on this node: plain "cuda" (and "auto" on a GPU machine)
            becomes GPU ``local_rank % torch.cuda.device_count()``, one GPU per process.
            An explicit "cuda:N" is kept as it is.

    Raises:
        ValueError: a device that is not available (with ``check_available``), or an unknown
            name. A missing GPU for training is worded after its ``--device`` option.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if check_available:
        if name.startswith("cuda") and not torch.cuda.is_available():
            if local_rank is not None:
                raise ValueError("--device cuda was asked for but no CUDA device is available")
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
        if name == "mps" and not _mps_available():
            raise ValueError("device 'mps' was requested but MPS is not available")
    if local_rank is not None and name == "cuda":
        count = torch.cuda.device_count()  # 0 only when unchecked on a machine without a GPU
        return torch.device("cuda", local_rank % count) if count else torch.device("cuda")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r} (use auto, cpu or cuda)") from err


def bf16_autocast_pays(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training on ``device``.

    CUDA: where the GPU supports bf16 (Ampere and newer). A CPU only with native bf16
    (AVX512-BF16 or AMX: about 1.6x faster steps than float32); elsewhere torch emulates bf16,
    which measured 24x slower than float32 per hybrid step on an AVX2-only AMD EPYC (7.8 against
    0.32 s). torch names the CPU checks privately, hence the guarded lookups.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
