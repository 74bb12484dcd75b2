"""Evaluation: the paper's protocol (folds, EP1/EP2, Tables 1 and 2) and a generic mode.

``python -m napari_tpm.evaluate paper ...`` reproduces the TPM paper's evaluation on CHAOS or
Synapse; ``python -m napari_tpm.evaluate generic ...`` measures any labelled structure on any
folder of volumes. Both go through :class:`napari_tpm.session.SegmentationSession`, so what is
measured is exactly what the CLI and the napari widget do. See docs/evaluation.md.

The names that need torch and the session (runner, report) are imported on first use, so the
protocol, dataset, metric and table helpers stay importable on their own.
"""

from __future__ import annotations

import importlib
from typing import Any

from .datasets import (
    CHAOS,
    DATASETS,
    SYNAPSE,
    Case,
    DatasetSpec,
    LoadedCase,
    find_paper_cases,
    pair_cases,
    parse_classes,
)
from .metrics import dice, dice_curve
from .protocols import METHODS, Fold, paper_folds

_LAZY = {
    "Options": "runner",
    "Results": "runner",
    "evaluate_binary": "runner",
    "evaluate_multiclass": "runner",
    "run_generic": "runner",
    "run_paper": "runner",
    "write_report": "report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHAOS",
    "DATASETS",
    "METHODS",
    "SYNAPSE",
    "Case",
    "DatasetSpec",
    "Fold",
    "LoadedCase",
    "Options",
    "Results",
    "dice",
    "dice_curve",
    "evaluate_binary",
    "evaluate_multiclass",
    "find_paper_cases",
    "pair_cases",
    "paper_folds",
    "parse_classes",
    "run_generic",
    "run_paper",
    "write_report",
]
