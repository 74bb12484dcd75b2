"""Class-prior estimators for unseen images, fitted on training-time ideal class priors (ICPs).

* :class:`AvgEst` predicts the mean training ICP.
* :class:`LinEst` regresses ``logit(ICP)`` on the support's foreground fraction ``size`` and the
  slice location ``loc`` in [0, 1]: ``b0 + b1 (loc - 0.5)^2 + b2 size`` (organs look smaller
  near the ends of a volume, and small supports call for a smaller prior).

Both serialise to plain floats (``to_dict`` / ``from_dict``) because they are stored inside
checkpoints that are loaded with ``torch.load(weights_only=True)``, which accepts builtins only.
Numpy only: no torch import here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit  # the stable sigmoid: no overflow for any |z|

PRIOR_CLIP = (1e-3, 1.0 - 1e-3)
"""The reference clips priors to this range before a logit and after a prediction."""

ArrayLike = Sequence[float] | np.ndarray


def clip_prior(p: float | np.ndarray) -> float | np.ndarray:
    """Clip a prior into :data:`PRIOR_CLIP` so that its logit is finite."""
    out = np.clip(p, *PRIOR_CLIP)
    return float(out) if np.ndim(out) == 0 else out


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


@dataclass
class AvgEst:
    """Mean of the training ICPs (NaN records, e.g. episodes without foreground, are ignored).

    ``predict`` is clipped to :data:`PRIOR_CLIP` so that a degenerate fit (all ICPs 0) still
    yields a usable prior; the reference does not need this because its ICPs are never 0 or 1.
    """

    prior: float = math.nan
    n: int = 0

    def fit(self, icps: ArrayLike) -> AvgEst:
        values = np.asarray(icps, dtype=np.float64).reshape(-1)
        values = values[~np.isnan(values)]
        if values.size == 0:
            raise ValueError("AvgEst.fit needs at least one ICP that is not NaN")
        self.prior = float(values.mean())
        self.n = int(values.size)
        return self

    def predict(self, size: Any = None, loc: Any = None) -> float:
        """The fitted prior; ``size`` and ``loc`` are accepted and ignored (same call as LinEst)."""
        if math.isnan(self.prior):
            raise ValueError("AvgEst is not fitted")
        return float(clip_prior(self.prior))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "avg", "prior": float(self.prior), "n": int(self.n)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AvgEst:
        return cls(prior=float(data["prior"]), n=int(data.get("n", 0)))


@dataclass
class LinEst:
    """OLS with intercept: ``logit(clip(ICP)) ~ b0 + b1 (loc - 0.5)^2 + b2 size``.

    ``size`` is the support foreground fraction, ``loc`` the relative slice position in [0, 1].
    Predictions are ``clip(sigmoid(.), 1e-3, 1 - 1e-3)`` as in the reference.
    """

    b0: float = math.nan
    b1: float = math.nan
    b2: float = math.nan
    n: int = 0

    @staticmethod
    def _design(size: np.ndarray, loc: np.ndarray) -> np.ndarray:
        return np.stack([np.ones_like(size), (loc - 0.5) ** 2, size], axis=-1)

    def fit(self, icps: ArrayLike, sizes: ArrayLike, locs: ArrayLike) -> LinEst:
        """Fit on matching records; records with any NaN are dropped; needs >= 3 left.

        A degenerate design (e.g. every record at the same location) gets the minimum-norm
        least-squares solution rather than an error.
        """
        icp = np.asarray(icps, dtype=np.float64).reshape(-1)
        size = np.asarray(sizes, dtype=np.float64).reshape(-1)
        loc = np.asarray(locs, dtype=np.float64).reshape(-1)
        if not icp.shape == size.shape == loc.shape:
            raise ValueError(
                f"icps, sizes and locs must have the same length, got {icp.size}, {size.size}, "
                f"{loc.size}"
            )
        keep = ~(np.isnan(icp) | np.isnan(size) | np.isnan(loc))
        if int(keep.sum()) < 3:
            raise ValueError(
                f"LinEst.fit needs at least 3 records without NaN (3 coefficients), got "
                f"{int(keep.sum())}"
            )
        target = _logit(np.clip(icp[keep], *PRIOR_CLIP))
        coef, *_ = np.linalg.lstsq(self._design(size[keep], loc[keep]), target, rcond=None)
        self.b0, self.b1, self.b2 = (float(c) for c in coef)
        self.n = int(keep.sum())
        return self

    def predict(self, size: float | ArrayLike, loc: float | ArrayLike) -> float | np.ndarray:
        """Prior for a support foreground fraction ``size`` at slice location ``loc``."""
        if math.isnan(self.b0):
            raise ValueError("LinEst is not fitted")
        s = np.asarray(size, dtype=np.float64)
        x = np.asarray(loc, dtype=np.float64)
        z = self.b0 + self.b1 * (x - 0.5) ** 2 + self.b2 * s
        return clip_prior(expit(z))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "lin", "b0": self.b0, "b1": self.b1, "b2": self.b2, "n": int(self.n)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinEst:
        return cls(
            b0=float(data["b0"]),
            b1=float(data["b1"]),
            b2=float(data["b2"]),
            n=int(data.get("n", 0)),
        )


def estimator_from_dict(data: dict[str, Any]) -> AvgEst | LinEst:
    """Rebuild an estimator from :meth:`to_dict` output, dispatching on its ``kind``."""
    kinds = {"avg": AvgEst, "lin": LinEst}
    kind = data.get("kind")
    if kind not in kinds:
        raise ValueError(f"unknown estimator kind {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind].from_dict(data)
