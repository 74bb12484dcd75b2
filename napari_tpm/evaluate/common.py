"""What every protocol shares: options, results, thresholds from cached scores, caches.

Per query volume and structure the session segments once (the encoder runs once per volume and
model; more prototypes or another prior reuse the cached features and scores), and every prior
is then a threshold on the cached log-odds ``s``: the label at prior p is ``s > -logit(p)``.
The helpers here turn priors and oracle counts into such thresholds, and keep one session per
checkpoint and a few loaded volumes so no encoder runs twice on the same volume.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_tpm.options import SegmentOptions
from napari_tpm.progress import Progress
from napari_tpm.session import SegmentationSession
from napari_tpm.tpm import AvgEst, LinEst, score_threshold

from .datasets import Case, LoadedCase
from .metrics import default_prior_grid


@dataclass
class Options:
    """What to evaluate; shared by the generic and the paper mode."""

    protocol: str = "EP2"
    prototypes: tuple[int, ...] = (1, 5)
    n_shot: int = 3
    modality: str = "auto"
    device: str = "auto"
    batch_size: int | None = None
    prior_grid: np.ndarray = field(default_factory=default_prior_grid)
    seed: int = 0
    #: the session's options; the paper's protocol scores the plain one-pass TPM (no
    #: refinement, no connectivity filter), so that is the default here; its supports are
    #: ground-truth sections, never partial paint, so none is completed (``complete_paint``)
    segment: SegmentOptions = field(
        default_factory=lambda: SegmentOptions(
            connected=False, refine=0, refine_atlas=0, bootstrap=False, complete_paint=False
        )
    )
    #: the options of a second session for the "product" rows of Tables 1 and 2
    #: (``SegmentOptions()``: what the CLI and the dock run); None: no such rows
    product: SegmentOptions | None = None

    def __post_init__(self) -> None:
        self.protocol = self.protocol.upper()
        if self.protocol not in ("EP1", "EP2"):
            raise ValueError(f"protocol must be EP1 or EP2, got {self.protocol!r}")
        if not self.prototypes or any(int(k) < 1 for k in self.prototypes):
            raise ValueError(f"prototype counts must be >= 1, got {self.prototypes}")
        self.prototypes = tuple(dict.fromkeys(int(k) for k in self.prototypes))


@dataclass
class Results:
    """Everything a run produced: per-volume records, notes for the reader, run metadata."""

    records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


# --------------------------------------------------------------------------- helpers
def drain(progress: Iterator[Progress]) -> None:
    for _ in progress:
        pass


def _estimators(session: SegmentationSession, key: str) -> dict[str, Any]:
    return (session.model.estimators or {}).get(key) or {}


def estimator_priors(
    session: SegmentationSession, key: str, size: float, loc: float
) -> dict[str, float | None]:
    """AvgEst and LinEst priors for the current support, None where the checkpoint has none.

    ``key`` is "sp" (one prototype), "mp" (several) or "multiclass", the same keys the session's
    ``auto_prior`` reads.
    """
    entry = _estimators(session, key)
    avg = AvgEst.from_dict(entry["avgest"]).predict() if "avgest" in entry else None
    lin = LinEst.from_dict(entry["linest"]).predict(size, loc) if "linest" in entry else None
    return {"AvgEst": avg, "LinEst": None if lin is None else float(lin)}


def count_threshold(values: np.ndarray, n: int) -> float:
    """``tpm.score_threshold``: exactly ``n`` of ``values`` lie above it (midpoint of ranks).

    The threshold depends only on the ``n + 1`` largest values (two at least) unless every
    value is foreground, so those are selected first in linear time: a full sort of a
    768 x 768 slice per slice and per rule would dominate the evaluation.
    """
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    n = int(n)
    keep = max(n + 1, 2)
    if n < flat.size and keep < flat.size:
        flat = np.partition(flat, flat.size - keep)[flat.size - keep :]
    return float(score_threshold(torch.from_numpy(np.ascontiguousarray(flat)), n))


def oracle_thresholds(scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per slice i, the score threshold that exactly ``counts[i]`` voxels of the slice exceed."""
    return np.asarray([count_threshold(scores[i], n) for i, n in enumerate(counts)])


def sigmoid_neg(tau: np.ndarray | float) -> np.ndarray | float:
    """The prior whose threshold is ``tau``: sigmoid(-tau)."""
    return 1.0 / (1.0 + np.exp(np.asarray(tau, dtype=np.float64)))


def clean(x: float | None, digits: int = 6) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), digits)


def pair_rng(seed: int, run: int, query: int, support: int) -> np.random.Generator:
    """The random source for one (query, support) pair: the same for every model compared."""
    return np.random.default_rng([seed, run, query, support])


class CaseCache:
    """The last few loaded cases, so a support used by several queries is read once."""

    def __init__(self, size: int = 3) -> None:
        self._items: OrderedDict[str, LoadedCase] = OrderedDict()
        self._size = size

    def get(self, case: Case) -> LoadedCase:
        if case.name in self._items:
            self._items.move_to_end(case.name)
            return self._items[case.name]
        loaded = case.load()
        self._items[case.name] = loaded
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return loaded


SessionFactory = Callable[[str], SegmentationSession]


def default_session_factory(options: Options) -> SessionFactory:
    def make(checkpoint: str) -> SegmentationSession:
        return SegmentationSession(
            checkpoint, options.device, batch_size=options.batch_size, options=options.segment
        )

    return make


class Sessions:
    """One session per checkpoint, created on first use.

    The drivers loop over query volumes on the outside, so every table that uses the same
    checkpoint (Table 1, the ADNet row when it is that checkpoint, Table 2) reads the same
    cached features: each query volume goes through each distinct encoder once.
    """

    def __init__(self, factory: SessionFactory) -> None:
        self._factory = factory
        self._items: dict[str, SegmentationSession] = {}

    def __call__(self, checkpoint: str) -> SegmentationSession:
        if checkpoint not in self._items:
            self._items[checkpoint] = self._factory(checkpoint)
        return self._items[checkpoint]


def product_options(options: Options) -> Options:
    """``options`` whose session is the product's (``options.product``, which must be set)."""
    return Options(**{**options.__dict__, "segment": options.product})


def with_prototypes(options: Options, prototypes: tuple[int, ...]) -> Options:
    return Options(**{**options.__dict__, "prototypes": prototypes})


def shows(case: LoadedCase, value: int) -> bool:
    return bool((case.labels == value).any())


def multiclass_jobs(sf: str, rule: str, mf: str | None) -> list[tuple[str, str | None, bool]]:
    """(checkpoint, TPM row model or None, also the max rule?) per multi-class segmentation.

    When the max rule runs on the single-foreground checkpoint itself, one segmentation gives
    both rows (the rule reads the same cached features and prototypes).
    """
    jobs: list[tuple[str, str | None, bool]] = []
    if rule == sf:
        jobs.append((sf, "SF", True))
    else:
        jobs += [(sf, "SF", False), (rule, None, True)]
    if mf:
        jobs.append((mf, "MF", False))
    return jobs


__all__ = [
    "CaseCache",
    "Options",
    "Results",
    "SessionFactory",
    "Sessions",
    "clean",
    "count_threshold",
    "default_session_factory",
    "drain",
    "estimator_priors",
    "multiclass_jobs",
    "oracle_thresholds",
    "pair_rng",
    "product_options",
    "shows",
    "sigmoid_neg",
    "with_prototypes",
]
