"""Run the protocols: one query volume at a time through a :class:`SegmentationSession`.

This module gathers the protocol modules under one name (what the CLI and older code import):

* ``common``: options, results, thresholds from cached scores, session and volume caches;
* ``binary``: Table 1 for one structure (CE-T, AvgEst, LinEst, OCP; EP1 and EP2);
* ``multiclass``: Table 2, all structures jointly, and the ADNet++ max rule;
* ``generic``: any labelled volumes (support in the query itself or another volume);
* ``paper``: CHAOS / Synapse and their development subsets with the paper's folds.

Everything reads the session through its public accessors (``best_class()``, ``features()``,
``prototypes``, ``support_fraction``...), never its private cache.
"""

from __future__ import annotations

from .binary import evaluate_binary
from .common import (
    Options,
    Results,
    count_threshold,
    drain,
    estimator_priors,
    oracle_thresholds,
)
from .generic import run_generic
from .multiclass import adnetpp_labels, evaluate_multiclass
from .paper import run_paper
from .protocols import MAX_RULE, METHODS

__all__ = [
    "MAX_RULE",
    "METHODS",
    "Options",
    "Results",
    "adnetpp_labels",
    "count_threshold",
    "drain",
    "estimator_priors",
    "evaluate_binary",
    "evaluate_multiclass",
    "oracle_thresholds",
    "run_generic",
    "run_paper",
]
