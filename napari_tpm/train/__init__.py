"""Headless self-supervised training of TPM encoders on supervoxel episodes.

    python -m napari_tpm.train [train] DATA... --out RUN_DIR      (see --help)

The reusable core is a generator: ``train_steps(model, volumes, TrainConfig(...))`` trains a
`TPMModel` in place and yields one `Progress` per step, so the CLI, DDP runs and test-time
adaptation share one loop; ``fit_estimators(model, volumes, n)`` then fits AvgEst/LinEst.

Submodules import torch; this package module stays light so ``--help`` is fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "EpisodeConfig",
    "EpisodeDataset",
    "TrainConfig",
    "Trainer",
    "TrainingVolume",
    "compute_supervoxels",
    "fit_estimators",
    "load_training_volumes",
    "new_model",
    "train_steps",
    "volume_from_array",
]

_WHERE = {
    "EpisodeConfig": "episodes",
    "EpisodeDataset": "episodes",
    "TrainConfig": "setup",
    "Trainer": "trainer",
    "new_model": "setup",
    "train_steps": "trainer",
    "TrainingVolume": "volumes",
    "load_training_volumes": "volumes",
    "volume_from_array": "volumes",
    "compute_supervoxels": "supervoxels",
    "fit_estimators": "analysis",
}

if TYPE_CHECKING:
    from napari_tpm.train.analysis import fit_estimators
    from napari_tpm.train.episodes import EpisodeConfig, EpisodeDataset
    from napari_tpm.train.setup import TrainConfig, new_model
    from napari_tpm.train.supervoxels import compute_supervoxels
    from napari_tpm.train.trainer import Trainer, train_steps
    from napari_tpm.train.volumes import TrainingVolume, load_training_volumes, volume_from_array


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"napari_tpm.train.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'napari_tpm.train' has no attribute {name!r}")
