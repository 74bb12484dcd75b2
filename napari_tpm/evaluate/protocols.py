"""The paper's evaluation protocols: folds, support-slice choice, EP1 / EP2, settings 1 / 2.

Everything here is plain index arithmetic on label arrays (z, y, x), slices along axis 0, so the
choices can be tested without a model:

* folds (tpm-method.md §10.1): the support of a fold is its last volume in sorted order, the
  other volumes are the queries;
* EP2 (§10.2, what the paper reports): one support slice, the middle labelled slice
  ``labelled[int(0.5 * count)]``; the whole query volume is segmented and scored in 3D;
* EP1 (§10.3): three support slices at 1/6, 1/2 and 5/6 of the labelled range; the query's
  labelled slices are cut into three chunks (``linspace``) and chunk j is segmented from support
  slice j; Dice in 3D over the kept slices;
* multi-class (§9): the support slice holds the most distinct target labels, ties broken at
  random;
* settings (§10.4): which checkpoint a fold uses. The evaluation only passes this through.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .datasets import DatasetSpec

PROTOCOLS: tuple[str, ...] = ("EP1", "EP2")

#: Prior rules of the binary table, in row order (tpm-method.md §7.2).
METHODS: tuple[str, ...] = ("CE-T", "AvgEst", "LinEst", "OCP")
#: Table 1's extra row: the session's own labels (auto prior and post-processing), what a user
#: of the CLI or the dock gets from the same support slice.
PRODUCT = "product"
#: The ADNet++ max-rule baseline's method name in multi-class records.
MAX_RULE = "max-rule"

#: What each setting means for training (SSL-ALPNet terms); the evaluation side is identical.
SETTINGS: dict[int, str] = {
    1: "setting 1: training sees every slice of the training volumes (the released TPM code)",
    2: (
        "setting 2: training drops every slice that shows a test class of the organ's group "
        "(kidneys, or liver + spleen), one checkpoint per group; pattern placeholder {group}"
    ),
}


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: indices into the numerically sorted volume list."""

    index: int
    support: int
    queries: tuple[int, ...]

    @property
    def volumes(self) -> tuple[int, ...]:
        return (*self.queries, self.support)


def paper_folds(spec: DatasetSpec) -> list[Fold]:
    """The paper's folds; the support is the fold's last volume in sorted order."""
    folds = []
    for k, members in enumerate(spec.folds):
        ordered = sorted(members)
        folds.append(Fold(k, ordered[-1], tuple(ordered[:-1])))
    return folds


def training_volumes(spec: DatasetSpec, fold: int) -> list[int]:
    """Volumes a fold's model is trained on: every volume outside the fold."""
    members = set(spec.folds[fold])
    return [i for i in range(spec.n_volumes) if i not in members]


# ------------------------------------------------------------------------- slice choices
def labelled_slices(mask: np.ndarray, axis: int = 0) -> np.ndarray:
    """Indices along ``axis`` of the slices where ``mask`` has any foreground, ascending."""
    mask = np.asarray(mask)
    other = tuple(a for a in range(mask.ndim) if a != axis)
    return np.flatnonzero(mask.any(axis=other))


def _require(zs: np.ndarray, what: str) -> None:
    if zs.size == 0:
        raise ValueError(f"{what}: the structure is absent from this volume")


def fractional_slices(mask: np.ndarray, fractions: Sequence[float], axis: int = 0) -> list[int]:
    """``labelled[int(f * count)]`` for each fraction: the reference's support-slice rule."""
    zs = labelled_slices(mask, axis)
    _require(zs, "support slice")
    return [int(zs[min(int(f * zs.size), zs.size - 1)]) for f in fractions]


def middle_labelled_slice(mask: np.ndarray, axis: int = 0) -> int:
    """EP2's support slice: the middle labelled slice, ``labelled[int(0.5 * count)]``."""
    return fractional_slices(mask, [0.5], axis)[0]


def ep1_fractions(n_shot: int = 3) -> list[float]:
    """Centres of ``n_shot`` equal parts of [0, 1]: 1/6, 1/2, 5/6 for three shots."""
    if n_shot < 1:
        raise ValueError(f"n_shot must be >= 1, got {n_shot}")
    return [(2 * i + 1) / (2 * n_shot) for i in range(n_shot)]


def ep1_support_slices(mask: np.ndarray, n_shot: int = 3, axis: int = 0) -> list[int]:
    """EP1's support slices: at 1/6, 1/2 and 5/6 of the support's labelled slices."""
    return fractional_slices(mask, ep1_fractions(n_shot), axis)


def ep1_query_chunks(mask: np.ndarray, n_shot: int = 3, axis: int = 0) -> list[np.ndarray]:
    """EP1's query chunks: the labelled query slices cut at ``linspace(0, count, n + 1)``.

    Chunk j (a possibly empty array of slice indices) is segmented from support slice j.
    """
    zs = labelled_slices(mask, axis)
    _require(zs, "query chunks")
    cuts = np.linspace(0, zs.size, n_shot + 1).astype(int)
    return [zs[cuts[j] : cuts[j + 1]] for j in range(n_shot)]


def most_labels_slice(
    labels: np.ndarray,
    values: Sequence[int],
    rng: np.random.Generator,
    axis: int = 0,
) -> int:
    """The slice with the most distinct labels among ``values``; ties broken with ``rng``.

    This is the multi-class support (tpm-method.md §9): one slice painted with every organ it
    shows.
    """
    labels = np.asarray(labels)
    other = tuple(a for a in range(labels.ndim) if a != axis)
    present = np.stack([(labels == v).any(axis=other) for v in values], axis=1)
    count = present.sum(axis=1)
    if count.max(initial=0) == 0:
        raise ValueError("none of the classes appears in the support volume")
    best = np.flatnonzero(count == count.max())
    return int(rng.choice(best))


def paint_slice(labels: np.ndarray, index: int, values: Sequence[int], axis: int = 0) -> np.ndarray:
    """A paint volume: ``labels`` on slice ``index`` for ``values`` only, 0 elsewhere.

    Label values are kept (the session returns them), so a binary paint of the spleen in a
    Synapse volume carries value 1 and the liver value 6.
    """
    labels = np.asarray(labels)
    dtype = np.uint8 if max(values) < 256 else np.uint16
    paint = np.zeros(labels.shape, dtype=dtype)
    src = np.take(labels, index, axis=axis)
    dst = np.moveaxis(paint, axis, 0)[index]
    keep = np.isin(src, list(values))
    dst[keep] = src[keep]
    return paint


def round_robin_support(n: int, query: int, usable: Sequence[bool] | None = None) -> int | None:
    """The other-volume support of volume ``query``: the next volume (cyclically) that is usable.

    ``usable[i]`` says whether volume i shows the structure. None when no other volume does.
    """
    for step in range(1, n):
        j = (query + step) % n
        if usable is None or usable[j]:
            return j
    return None


# ------------------------------------------------------------------------------- settings
_FIELDS = {"fold", "run", "setting", "group"}


def pattern_fields(pattern: str) -> set[str]:
    """Placeholder names in a checkpoint pattern; unknown names raise ValueError."""
    names = {f for _, f, _, _ in string.Formatter().parse(pattern) if f}
    unknown = names - _FIELDS
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {sorted(unknown)} in {pattern!r}; use "
            "{fold}, {run}, {setting} or {group}"
        )
    return names


def checkpoint_path(
    pattern: str, *, fold: int, run: int = 1, setting: int = 1, group: str = ""
) -> str:
    """Fill a checkpoint pattern such as ``runs/s{setting}/{group}/run{run}/fold{fold}/model.pt``.

    A pattern without a placeholder names one checkpoint for every fold (a zoo name such as
    "filterbank" is a pattern without placeholders).
    """
    pattern_fields(pattern)
    return pattern.format(fold=fold, run=run, setting=setting, group=group)


__all__ = [
    "MAX_RULE",
    "METHODS",
    "PRODUCT",
    "PROTOCOLS",
    "SETTINGS",
    "Fold",
    "checkpoint_path",
    "ep1_fractions",
    "ep1_query_chunks",
    "ep1_support_slices",
    "fractional_slices",
    "labelled_slices",
    "middle_labelled_slice",
    "most_labels_slice",
    "paint_slice",
    "paper_folds",
    "pattern_fields",
    "round_robin_support",
    "training_volumes",
]
