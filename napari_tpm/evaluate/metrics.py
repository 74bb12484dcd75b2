"""Overlap metrics on label volumes, and Dice as a function of the class prior.

Dice is ``2 TP / (2 TP + FP + FN)`` over the whole 3D volume (tpm-method.md §10.2), NaN when
both the prediction and the truth are empty (nothing to score: such a volume is left out of
means rather than counted as perfect).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import expit


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """3D Dice of two boolean volumes of one shape; NaN when both are empty."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    if total == 0:
        return math.nan
    tp = int(np.count_nonzero(pred & truth))
    return 2.0 * tp / total


def per_class_dice(pred: np.ndarray, truth: np.ndarray, values: Sequence[int]) -> dict[int, float]:
    """Dice of ``pred == v`` against ``truth == v`` for each label value ``v``."""
    return {int(v): dice(pred == v, truth == v) for v in values}


def prior_thresholds(priors: np.ndarray) -> np.ndarray:
    """Score thresholds ``-logit(p)``: the label at prior p is ``score > -logit(p)``."""
    p = np.asarray(priors, dtype=np.float64)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("priors must lie strictly between 0 and 1")
    return np.log1p(-p) - np.log(p)


def default_prior_grid(n: int = 49, lo: float = 1e-3, hi: float = 0.999) -> np.ndarray:
    """Priors evenly spaced in logit between ``lo`` and ``hi`` (0.5 included for odd n)."""
    z = np.linspace(math.log(lo / (1 - lo)), math.log(hi / (1 - hi)), n)
    return expit(z)


def dice_curve(scores: np.ndarray, truth: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Dice of ``scores > -logit(p)`` against ``truth`` for every prior p, in one pass.

    Scores at or below the lowest threshold can never be foreground, so only the rest is
    sorted: on a large volume that is a small fraction of the voxels.
    """
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    t = np.asarray(truth, dtype=bool).reshape(-1)
    if s.shape != t.shape:
        raise ValueError(f"scores {scores.shape} and truth {truth.shape} differ in shape")
    tau = prior_thresholds(priors)
    keep = s > tau.min()
    n_true = int(np.count_nonzero(t))
    cand = np.sort(s[keep])
    fg = np.sort(s[keep & t])
    pred = cand.size - np.searchsorted(cand, tau, side="right")
    tp = fg.size - np.searchsorted(fg, tau, side="right")
    denom = pred + n_true
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), np.nan)
    return out.astype(np.float64)


def fraction_mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over slices (axis 0) of the squared error of the foreground fraction per slice.

    The reference logs it next to Dice: it shows whether a prior gets the *amount* of
    foreground right, which is what the ideal class prior optimises.
    """
    p = np.asarray(pred, dtype=bool).reshape(pred.shape[0], -1).mean(axis=1)
    t = np.asarray(truth, dtype=bool).reshape(truth.shape[0], -1).mean(axis=1)
    return float(np.mean((p - t) ** 2)) if p.size else math.nan


__all__ = [
    "default_prior_grid",
    "dice",
    "dice_curve",
    "fraction_mse",
    "per_class_dice",
    "prior_thresholds",
]
