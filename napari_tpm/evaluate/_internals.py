"""The only place the evaluation reads cached state the session does not expose publicly.

The oracle prior of a multi-class result needs the best-class index per voxel, LinEst needs the
painted fraction of the working grid, and the ADNet++ max-rule baseline needs the query
features, the class prototypes and the score offset. ``SegmentationSession`` caches all of them
but (as of this writing) has no public accessor, so each accessor here names the hook it stands
in for. When session.py gains these hooks, only this module changes.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_tpm.preprocess import WorkingGrid
from napari_tpm.session import SegmentationSession


class SessionInternalsError(RuntimeError):
    """The session no longer has the cached attribute the evaluation reads."""


def _get(session: SegmentationSession, name: str, hook: str):
    try:
        value = getattr(session, name)
    except AttributeError:
        raise SessionInternalsError(
            f"SegmentationSession has no {name!r}; the evaluation needs the public hook {hook}"
        ) from None
    if value is None:
        raise ValueError("nothing segmented yet: iterate session.segment() first")
    return value


def best_class_index(session: SegmentationSession) -> np.ndarray:
    """0-based best class per voxel, on the image's grid (hook: ``session.best_class()``)."""
    best = _get(session, "_best", "best_class() -> np.ndarray")
    return np.moveaxis(best, 0, session.axis)


def support_fraction(session: SegmentationSession) -> float:
    """Painted fraction of the working grid, LinEst's "size" (hook: ``support_fraction``)."""
    return float(_get(session, "_support", "support_fraction: float").fraction)


def support_location(session: SegmentationSession) -> float:
    """Support slice index / (slices - 1), LinEst's "loc" (hook: ``support_location``)."""
    s = _get(session, "_support", "support_location: float")
    return s.index / max(s.n_slices - 1, 1)


def query_features(session: SegmentationSession) -> torch.Tensor:
    """Cached query features (n, C, h, w), slice axis first (hook: ``features()``)."""
    views = _get(session, "_views", "features() -> torch.Tensor")
    view = views.get(session.axis)
    if view is None or view.features is None or not view.encoded.all():
        raise ValueError("the query is not fully encoded: drain session.segment() first")
    return view.features


def query_grid(session: SegmentationSession) -> WorkingGrid:
    """The query's working grid (hook: ``working_grid``)."""
    views = _get(session, "_views", "working_grid: WorkingGrid")
    return views[session.axis].grid


def class_prototypes(session: SegmentationSession) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per class ``(means [K, C], weights [K])`` (hook: ``prototypes``)."""
    return list(_get(session, "_prototypes", "prototypes: list[(means, weights)]"))


def score_offset(session: SegmentationSession) -> float:
    """The self-calibration offset added to every score, 0 for trained checkpoints."""
    return float(_get(session, "_offset", "score_offset: float"))


__all__ = [
    "SessionInternalsError",
    "best_class_index",
    "class_prototypes",
    "query_features",
    "query_grid",
    "score_offset",
    "support_fraction",
    "support_location",
]
