"""One CPU thread for memory-bound torch work.

The filter bank and the session's scoring are many small element-wise passes over memory: a
second intra-op thread buys little, and when the other core is busy (napari's GUI, another job)
torch's threads spin waiting for each other. Measured on the 2-core sandbox with one other busy
process (150x512x512 CT-like volume, filter bank, 2026-12-02): ``segment()`` took 28.3 s with
torch's 2 threads and 2.4 s with 1; ``set_prototypes(3)`` 4.8 s and 0.5 s. Compute-bound
convolutions (the trained ResNets) keep every thread: only code wrapped in this context runs on
one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["one_cpu_thread"]


@contextlib.contextmanager
def one_cpu_thread(device: torch.device | str) -> Iterator[None]:
    """Within the block, torch uses one intra-op thread on the CPU (restored afterwards)."""
    before = torch.get_num_threads()
    if torch.device(device).type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
