"""How much test-time adaptation costs: default step counts, what would be trained, and a wall
time estimate, so the dock and the CLI can say so before the user starts a run.

Split from :mod:`napari_tpm.adapt` (the run itself), which re-exports these names.
"""

from __future__ import annotations

import copy
import time

import torch

from napari_tpm.devices import resolve_device

#: Learning rate of adaptation: a tenth of training's, so a few steps refine, not retrain.
ADAPT_LR = 1e-4

#: Default step counts. On the 2-core CPU sandbox one resnet101 adaptation step on a 256 x 256
#: slice pair costs about 2.4 s (benchmarks/RESULTS-adapt.md), so 60 steps plus supervoxels and
#: the estimator refresh keep a 512x512x150 CT at about 3 minutes. The GPU figure is a guess
#: (no GPU timing was made): the same minutes should buy an order of magnitude more steps.
CPU_STEPS = 60
GPU_STEPS = 500

#: Analysis episodes used to refresh AvgEst/LinEst after adapting (0 disables the refresh).
CPU_ANALYSIS_EPISODES = 20
GPU_ANALYSIS_EPISODES = 200

#: Seconds per adaptation step on the 2-core CPU sandbox at 256 x 256, one torch thread
#: (benchmarks/RESULTS-adapt.md: resnet18-l3 and resnet101 measured through `adapt`, the others
#: from `estimate_seconds`); the fallback when timing is not wanted. GPU: assumed 20x faster.
_CPU_SECONDS_PER_STEP = {
    "resnet18-l3": 0.43,
    "resnet18": 0.8,
    "resnet34": 1.25,
    "resnet50": 2.2,
    "resnet101": 2.4,
}

#: Seconds a step costs beyond the encoder's forward + backward (episode sampling with
#: augmentation, losses, SGD update): the gap between bench_adapt.py's steps and this timing.
_STEP_OVERHEAD_S = {"cpu": 0.15, "cuda": 0.01}


def device_of(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device ("auto": CUDA when present, else CPU). Not checked to exist:
    the budget also answers for a device the user has not picked yet (what would a GPU get)."""
    return resolve_device(device, check_available=False)


def default_steps(device: str | torch.device = "auto") -> int:
    """Adaptation steps that finish in a few minutes on ``device`` (CPU: 60, GPU: 500)."""
    return GPU_STEPS if device_of(device).type == "cuda" else CPU_STEPS


def default_analysis_episodes(device: str | torch.device = "auto") -> int:
    """Analysis episodes for the estimator refresh: few on CPU, where each costs a forward."""
    return GPU_ANALYSIS_EPISODES if device_of(device).type == "cuda" else CPU_ANALYSIS_EPISODES


def trainable_parameters(model, trainable: str = "last") -> int:
    """Number of encoder parameters that adaptation would update (0 for the filter bank)."""
    from napari_tpm.train.setup import last_stage_names

    params = list(model.encoder.named_parameters())
    if trainable == "all":
        return sum(p.numel() for _, p in params)
    keep = last_stage_names(model.encoder)
    return sum(p.numel() for n, p in params if n.startswith(keep))


def check_adaptable(model, trainable: str = "last") -> None:
    """Raise ValueError when ``model`` has nothing to adapt (e.g. the training-free filter bank)."""
    if trainable_parameters(model, trainable) == 0:
        raise ValueError(
            f"model {getattr(model, 'name', '?')!r} has no trainable encoder "
            f"(encoder {getattr(model.encoder, 'name', '?')!r}); adaptation needs a trained "
            "ResNet model, not the training-free filter bank"
        )


def estimate_seconds(
    model,
    steps: int,
    device: str | torch.device = "auto",
    *,
    size: int = 256,
    measure: bool = True,
) -> float:
    """Rough wall time of ``steps`` adaptation steps (supervoxels and estimators not included).

    With ``measure`` a copy of the encoder runs forward + backward on a random support/query pair
    twice (the second is timed) so the figure reflects this machine; otherwise a per-encoder table
    measured on a 2-core CPU is used. The source model is not touched either way.
    """
    dev = device_of(device)
    if not measure:
        name = getattr(model.encoder, "name", "")
        per = _CPU_SECONDS_PER_STEP.get(name, max(_CPU_SECONDS_PER_STEP.values()))
        return float(steps) * (per / 20.0 if dev.type == "cuda" else per)
    check_adaptable(model)
    from napari_tpm.train.setup import freeze_bn, train_last_stage_only

    encoder = copy.deepcopy(model.encoder).to(dev).train()
    freeze_bn(encoder)
    train_last_stage_only(encoder)  # backward stops where adaptation's does
    x = torch.randn(2, 1, size, size, device=dev)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        encoder.zero_grad(set_to_none=True)
        encoder(x).square().mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        timings.append(time.perf_counter() - start)
    per = min(timings[1:]) + _STEP_OVERHEAD_S.get(dev.type, 0.15)
    return float(steps) * per
