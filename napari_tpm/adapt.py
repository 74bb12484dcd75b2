"""Test-time adaptation: "Adapt to this volume" (a few self-supervised steps on the user's image).

The encoder was trained on other scanners and protocols; some dozens to hundreds of episodes cut
from the very volume being segmented pull its features towards that volume's appearance, with no
label needed. This reuses the training loop unchanged (`napari_tpm.train.train_steps`) with a
small learning rate, only the last trunk stage, projection and threshold trainable, and frozen
BatchNorm statistics, because one volume is far too little data to move a whole ResNet or to
re-estimate its batch statistics.

Guarantees:

* The caller's model is never modified: adaptation trains a deep copy, so stopping the generator
  early (cancel) simply drops the copy.
* Nothing is written to disk unless ``cache_dir`` is given (supervoxels are computed in memory);
  in particular nothing is ever written next to the user's data.
* The adapted model keeps the source model's card, with an ``"adaptation"`` entry added, and is
  named ``"<source>+adapted"``.

Usage::

    job = Adaptation(model, [(image, spacing)], steps=default_steps("cpu"))
    for p in job:          # Progress: stages "supervoxels", "adapt", "estimators"
        ...
    job.model              # the adapted TPMModel (None until finished)
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_tpm.adapt_budget import (
    ADAPT_LR,
    CPU_ANALYSIS_EPISODES,
    CPU_STEPS,
    GPU_ANALYSIS_EPISODES,
    GPU_STEPS,
    check_adaptable,
    default_analysis_episodes,
    default_steps,
    device_of,
    estimate_seconds,
    trainable_parameters,
)
from napari_tpm.progress import Progress

__all__ = [
    "ADAPT_LR",
    "CPU_ANALYSIS_EPISODES",
    "CPU_STEPS",
    "GPU_ANALYSIS_EPISODES",
    "GPU_STEPS",
    "Adaptation",
    "adapt",
    "adapt_session",
    "check_adaptable",
    "default_analysis_episodes",
    "default_steps",
    "estimate_seconds",
    "run_adaptation_for_cli",
    "trainable_parameters",
]

VolumeLike = Any  # (array, spacing) tuple or a prepared napari_tpm.train.TrainingVolume


def _prepare_volumes(
    volumes: Sequence[VolumeLike],
    *,
    size: int,
    modality: str,
    min_size: int | None,
    cache_dir: str | os.PathLike | None,
    normalisation: str = "zscore",
) -> Iterator[tuple[Progress, Any]]:
    from napari_tpm.train.volumes import TrainingVolume, volume_from_array

    n = len(volumes)
    for i, item in enumerate(volumes):
        if isinstance(item, TrainingVolume):
            vol = item
        else:
            array, spacing = item
            vol = volume_from_array(
                np.asarray(array),
                tuple(float(s) for s in spacing),
                name=f"adapt{i}",
                size=size,
                modality=modality,
                min_size=min_size,
                cache_dir=cache_dir,
                normalisation=normalisation,
            )
        if vol.supervoxels is None or int(vol.supervoxels.max()) < 1:
            raise ValueError(f"volume {i} has no supervoxels (is the image empty or constant?)")
        yield Progress(i + 1, n, "supervoxels"), vol


def adapt(
    model,
    volumes: Sequence[VolumeLike],
    *,
    steps: int,
    lr: float = ADAPT_LR,
    trainable: str = "last",
    device: str | torch.device = "auto",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    size: int = 256,
    modality: str = "auto",
    min_size: int | None = None,
    analysis_episodes: int | None = None,
    config: dict[str, Any] | None = None,
) -> Generator[Progress, None, Any]:
    """Adapt a copy of ``model`` to ``volumes``; yields `Progress`, *returns* the adapted model.

    Args:
        model: the source `TPMModel` (left untouched).
        volumes: ``(array, spacing)`` pairs (z, y, x, mm) or prepared `TrainingVolume` objects.
        steps: optimisation steps (see `default_steps`).
        lr: SGD learning rate.
        trainable: "last" (last trunk stage + projection + threshold) or "all".
        device: "auto", "cpu", "cuda"...; the adapted encoder ends up there.
        seed: episode sampling seed.
        cache_dir: where to cache supervoxels; None computes them in memory only.
        size: working-grid size (the session's, 256).
        modality: intensity normalisation ("auto", "ct", "mr").
        min_size: supervoxel minimum size in voxels (None: the paper's value for the modality).
        analysis_episodes: episodes for refitting AvgEst/LinEst on the adapted encoder (None: a
            device-dependent default; 0 keeps the source's estimators).
        config: further `TrainConfig` fields (e.g. ``min_support_px`` for tiny test volumes).

    The return value arrives as ``StopIteration.value``; `Adaptation` wraps this for callers
    that just iterate. Stages yielded: "supervoxels", "adapt" (``info`` holds the loss) and
    "estimators".
    """
    from napari_tpm.train.analysis import fit_estimators
    from napari_tpm.train.trainer import TrainConfig, train_steps

    check_adaptable(model, trainable)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    dev = device_of(device)
    cfg = TrainConfig(
        steps=int(steps),
        lr=float(lr),
        trainable=trainable,
        freeze_bn=True,
        device=str(dev),
        seed=int(seed),
        checkpoint_every=10**9,
        **(config or {}),
    )
    prepared = []
    # the volume is seen through the model's own intensity map, as the session will show it
    norm = str(getattr(model, "normalisation", "zscore"))
    for progress, vol in _prepare_volumes(
        volumes,
        size=size,
        modality=modality,
        min_size=min_size,
        cache_dir=cache_dir,
        normalisation=norm,
    ):
        prepared.append(vol)
        yield progress

    source_card = copy.deepcopy(dict(getattr(model, "card", None) or {}))
    runtime = (
        getattr(model.encoder, "autocast_dtype", None) == torch.bfloat16,
        bool(getattr(model.encoder, "channels_last", False)),
    )
    # the copy is trained; the caller's object (and its encoder) never enter the loop
    work = copy.deepcopy(model)
    losses: list[float] = []
    start = time.perf_counter()
    for p in train_steps(work, prepared, cfg):  # no run_dir: nothing is written
        losses.append(float(p.info.get("loss", float("nan"))))
        yield Progress(p.done, p.total, "adapt", info=dict(p.info))
    train_seconds = time.perf_counter() - start

    encoder = work.encoder
    for param in encoder.parameters():  # the loop froze some; a loaded model has none frozen
        param.requires_grad_(True)
    encoder.eval()
    if hasattr(encoder, "set_runtime"):
        encoder.set_runtime(bf16=runtime[0], channels_last=runtime[1])

    n_analysis = default_analysis_episodes(dev) if analysis_episodes is None else analysis_episodes
    refreshed: list[str] = []
    if n_analysis > 0:
        # fit_estimators reports by callback, so its records arrive in one burst at the end;
        # announcing the stage first lets a progress bar show what the wait is for
        yield Progress(0, int(n_analysis), "estimators")
        done: list[Progress] = []
        estimators = fit_estimators(
            work,
            prepared,
            int(n_analysis),
            seed=int(seed),
            device=str(dev),
            episode_config=cfg.episode_config(),
            progress=done.append,
        )
        for p in done:
            yield Progress(p.done, p.total, "estimators", info=dict(p.info))
        merged = dict(work.estimators or {})
        for key, entry in estimators.items():
            if entry.get("avgest") is not None:  # keep the source's fit where ours is empty
                merged[key] = entry
                refreshed.append(key)
        work.estimators = merged
    encoder.eval()

    trainer_record = (work.card or {}).get("training", {})
    card = source_card  # the source's own training record stays as it was
    card["adaptation"] = {
        "source": getattr(model, "name", ""),
        "steps": len(losses),
        "requested_steps": int(steps),
        "lr": float(lr),
        "trainable": trainable,
        "freeze_bn": True,
        "seed": int(seed),
        "device": str(dev),
        "volumes": [
            {"shape": list(v.image.shape), "spacing": list(v.spacing), "modality": v.modality}
            for v in prepared
        ],
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "t_d": float(work.t_d),
        "estimators_refreshed": refreshed,
        "analysis_episodes": int(n_analysis),
        "seconds": round(train_seconds, 3),
        "final_losses": trainer_record.get("final_losses", {}),
    }
    work.card = card
    work.name = f"{getattr(model, 'name', '') or 'model'}+adapted"
    return work


class Adaptation:
    """An adaptation job to iterate; ``.model`` holds the adapted `TPMModel` once finished.

    Iterating yields the same `Progress` records as `adapt`. ``.losses`` collects the loss per
    step as it goes; ``.finished`` tells a complete run from a cancelled one (a consumer that
    stops iterating early leaves ``.model`` at None and the source model unchanged).
    """

    def __init__(self, model, volumes: Sequence[VolumeLike], *, steps: int, **kwargs: Any):
        check_adaptable(model, kwargs.get("trainable", "last"))
        self.source = model
        self.volumes = list(volumes)
        self.steps = int(steps)
        self.kwargs = kwargs
        self.model = None
        self.losses: list[float] = []
        self.finished = False

    def __iter__(self) -> Iterator[Progress]:
        gen = adapt(self.source, self.volumes, steps=self.steps, **self.kwargs)
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                self.model = stop.value
                self.finished = True
                return
            if p.stage == "adapt" and "loss" in p.info:
                self.losses.append(float(p.info["loss"]))
            yield p


# ------------------------------------------------------------------------- the session
def adapt_session(
    session,
    steps: int | None = None,
    **kwargs: Any,
) -> Iterator[Progress]:
    """Adapt the session's model to its current image, then make the session use it.

    Yields `Progress` like `adapt`; only after the last one is ``session.model`` replaced (by a
    model on ``session.device``) and the feature caches cleared, so cancelling leaves the
    session exactly as it was. ``kwargs`` go to `adapt` (``lr``, ``trainable``, ``cache_dir``...).
    """
    image = session.image
    if image is None:
        raise ValueError("no image: call session.set_image() first")
    from napari_tpm.session import WORKING_SIZE

    kwargs.setdefault("device", session.device)
    kwargs.setdefault("size", WORKING_SIZE)
    kwargs.setdefault("modality", session.modality)
    n = default_steps(kwargs["device"]) if steps is None else int(steps)
    job = Adaptation(session.model, [(image, session.spacing)], steps=n, **kwargs)
    yield from job
    session.set_model(job.model)


def run_adaptation_for_cli(
    session,
    image: np.ndarray,
    spacing: Sequence[float],
    steps: int | None,
    save_path: str | os.PathLike | None = None,
    quiet: bool = False,
    **adapt_kwargs: Any,
):
    """What ``segment.py --adapt-steps N [--save-adapted PATH]`` runs; returns the adapted model.

    Sets ``image`` on the session (a no-op when it is already there), adapts with a tqdm bar on
    stderr (hidden with ``quiet``), swaps the session's model and, with ``save_path``, saves the
    adapted model with `save_model` (plus its JSON card beside it). ``adapt_kwargs`` go to
    `adapt` (tests use them for tiny volumes; the CLI needs none).
    """
    from tqdm import tqdm

    from napari_tpm.checkpoints import save_model

    # keep the modality the caller set (the CLI's --modality): "auto" here would be a new
    # image for the session, dropping its caches and changing the normalisation
    had_image = session.image is not None
    modality = session.modality if had_image else "auto"
    session.set_image(
        image, tuple(float(s) for s in spacing), modality=modality, check_range=not had_image
    )
    n = default_steps(session.device) if steps is None else int(steps)
    bar = tqdm(total=n, desc="adapt", unit="step", file=sys.stderr, disable=quiet)
    try:
        for p in adapt_session(session, n, **adapt_kwargs):
            if p.stage == "adapt":
                bar.update(p.done - bar.n)
                if "loss" in p.info:
                    bar.set_postfix(loss=f"{p.info['loss']:.3f}", refresh=False)
            else:
                bar.set_description(p.stage)
    finally:
        bar.close()
    if save_path is not None:
        path = save_model(session.model, Path(save_path))
        if not quiet:
            print(f"adapted model saved to {path}", file=sys.stderr)
    return session.model
