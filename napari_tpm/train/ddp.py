"""Distributed data parallel plumbing for ``torchrun --nproc_per_node N -m napari_tpm.train``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them training runs as a single process
and nothing here touches torch.distributed. The backend is gloo on CPU and nccl on CUDA. Each
rank draws its own episode stream (`EpisodeDataset` is seeded by rank) and only rank 0 writes
files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from napari_tpm import devices


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """ "auto" picks CUDA when available (one GPU per local rank), else CPU.

    Training's rule of :func:`napari_tpm.devices.resolve_device`.
    """
    return devices.resolve_device(device, local_rank=local_rank)


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun prepared (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def mean_across(values: list[float], info: DistInfo, device: torch.device) -> float | None:
    """Mean of the values of every rank (None when no rank had any)."""
    total = torch.tensor([sum(values), float(len(values))], dtype=torch.float64, device=device)
    if info.enabled and dist.is_initialized():
        dist.all_reduce(total)
    return float(total[0] / total[1]) if float(total[1]) > 0 else None


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def parameters_in_sync(module: torch.nn.Module, info: DistInfo, device: torch.device) -> bool:
    """Whether every rank holds the same weights (a cheap checksum, compared on all ranks).

    DDP keeps replicas identical by averaging gradients; a mismatch after training means the
    ranks diverged (e.g. a parameter that only some ranks used), which must not go unnoticed.
    """
    if not (info.enabled and dist.is_initialized()):
        return True
    with torch.no_grad():
        total = sum(
            float(p.double().sum()) + float((p.double() ** 2).sum()) for p in module.parameters()
        )
    high = torch.tensor([total], dtype=torch.float64, device=device)
    low = torch.tensor([-total], dtype=torch.float64, device=device)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MAX)  # max of -x = -min of x
    return abs(float(high) + float(low)) <= 1e-9 * max(1.0, abs(float(high)))
