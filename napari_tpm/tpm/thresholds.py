"""Adaptive thresholds: ideal distance threshold (IDT), ideal class prior (ICP) and the oracle.

The prior pi moves TPM's decision boundary. The *ideal* prior of an image with ``n_fg`` true
foreground pixels is the one that predicts exactly ``n_fg`` foreground pixels ("number of
predicted foreground pixels = number of true foreground pixels"). Training records ICPs to fit
AvgEst / LinEst; at test time the oracle (OCP) uses the true count per query slice as an upper
bound.

Rank convention (digest §13.7). The threshold is the midpoint of the sorted values at 0-based
ranks ``n_fg - 1`` and ``n_fg``, so that exactly ``n_fg`` pixels pass (when there are no ties).
The reference code uses ranks ``n_fg`` and ``n_fg + 1``, which selects one pixel more; we fix
that off-by-one deliberately. ``n_fg = 0`` and ``n_fg = N`` extrapolate half a gap beyond the
extreme value (at least one ulp), so nothing / everything passes.

Comparisons are strict: a pixel is foreground when its distance is ``< IDT`` or its log-odds is
``> -logit(pi)``, matching ``posterior > 0.5``.

Every function treats its whole input as ONE population (one image; pass a volume to pool its
slices). :func:`oracle_prior` is the per-slice variant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .em import log_odds_multi
from .estimators import PRIOR_CLIP
from .multiclass import best_class_scores, multiclass_log_scores
from .posterior import ALPHA, D, Scalar

__all__ = [
    "IDT_CLIP",
    "PRIOR_CLIP",
    "count_at_resolution",
    "icp_from_scores",
    "icp_multi",
    "icp_multiclass",
    "icp_single",
    "ideal_class_prior",
    "ideal_distance_threshold",
    "oracle_prior",
    "score_threshold",
]

IDT_CLIP = (1e-3, 2.0**0.5 - 1e-3)
"""Range the reference clips the training-time IDT to before its EMA (digest §6)."""


def _count_thresholds(values: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Per row of ``values [S, N]``: a t with exactly ``n[s]`` entries ``< t`` (no ties)."""
    size = values.shape[1]
    if size == 0:
        raise ValueError("cannot threshold an empty map")
    if bool(((n < 0) | (n > size)).any()):
        raise ValueError(f"foreground counts must lie in [0, {size}], got {n.tolist()}")
    v, _ = torch.sort(values, dim=1)
    lo = v.gather(1, (n - 1).clamp(0, size - 1)[:, None])[:, 0]
    hi = v.gather(1, n.clamp(0, size - 1)[:, None])[:, 0]
    middle = 0.5 * (lo + hi)

    first, second = v[:, 0], v[:, min(1, size - 1)]
    below = first - 0.5 * (second - first)
    below = torch.where(
        below < first, below, torch.nextafter(first, torch.full_like(first, -torch.inf))
    )
    last, before = v[:, -1], v[:, max(size - 2, 0)]
    above = last + 0.5 * (last - before)
    above = torch.where(
        above > last, above, torch.nextafter(last, torch.full_like(last, torch.inf))
    )
    return torch.where(n == 0, below, torch.where(n == size, above, middle))


def _counts(n_fg: int | Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(n_fg, dtype=torch.int64, device=device).reshape(-1)


def ideal_distance_threshold(
    distances: torch.Tensor, n_fg: int, *, squared: bool = False
) -> torch.Tensor:
    """IDT: the distance D (NOT squared) below which exactly ``n_fg`` pixels lie.

    Args:
        distances: any shape, one image. Distances D in [0, 2]; pass ``squared=True`` to give
            D2 instead (the result is still a distance D, as in digest §7.1).
        n_fg: true foreground pixel count at this resolution, ``0 <= n_fg <= numel``.

    Returns:
        0-d tensor; ``(distances < idt).sum() == n_fg`` when there are no ties. For ``n_fg = 0``
        it is clamped to >= 0, so with a pixel at distance 0 nothing is still selected.
    """
    dist = distances.clamp_min(0.0).sqrt() if squared else distances
    t = _count_thresholds(dist.reshape(1, -1), _counts(n_fg, dist.device))[0]
    return t.clamp_min(0.0)


def ideal_class_prior(idt: Scalar, t_d: Scalar, alpha: Scalar = ALPHA) -> Scalar:
    """Prior that moves the working-form boundary from ``t_d`` to ``idt``.

    ``logit(pi*) = (alpha/4)(IDT^2 - T_D^2)``; then P = sigmoid((alpha/4)(IDT^2 - D2)).
    """
    z = (alpha / 4.0) * (idt**2 - t_d**2)
    return (
        torch.sigmoid(z)
        if isinstance(z, torch.Tensor)
        else float(torch.sigmoid(torch.tensor(z, dtype=torch.float64)))
    )


def score_threshold(log_odds: torch.Tensor, n_fg: int) -> torch.Tensor:
    """tau such that exactly ``n_fg`` pixels have ``log_odds > tau`` (midpoint of ranks)."""
    flat = log_odds.reshape(1, -1)
    return -_count_thresholds(-flat, _counts(n_fg, flat.device))[0]


def icp_from_scores(log_odds: torch.Tensor, n_fg: int) -> torch.Tensor:
    """ICP for any log-odds score: exactly ``n_fg`` pixels satisfy ``log_odds > -logit(pi*)``.

    Covers every model once the caller passes the right score: :func:`log_odds_single`,
    :func:`~napari_tpm.tpm.em.log_odds_multi`, or the best-class score of the multi-class model.
    Returned as a float64 0-d tensor (not clipped) so that ``logit(pi*)`` gives back the
    threshold to far better than the gap between neighbouring scores.
    """
    return torch.sigmoid(-score_threshold(log_odds, n_fg).double())


def icp_single(d2: torch.Tensor, n_fg: int, t_d: Scalar, alpha: Scalar = ALPHA) -> torch.Tensor:
    """Single-prototype ICP via the IDT in distance space (digest §7.1).

    The posterior with this prior crosses 0.5 exactly at the IDT, and the same ``n_fg`` pixels
    are foreground as with :func:`icp_from_scores` on :func:`log_odds_single` (the two priors
    differ slightly: a midpoint in D is not a midpoint in D2). Float64 0-d tensor.
    """
    idt = ideal_distance_threshold(d2, n_fg, squared=True).double()
    return ideal_class_prior(idt, t_d, alpha)


def icp_multi(
    d2: torch.Tensor,
    weights: torch.Tensor,
    sigma_f: Scalar,
    sigma_b: Scalar,
    n_fg: int,
    d: Scalar = D,
) -> torch.Tensor:
    """Multi-prototype ICP from ``d2 [B, K, h, w]`` to the K EM means (all of B pooled)."""
    return icp_from_scores(log_odds_multi(d2, weights, sigma_f, sigma_b, d), n_fg)


def icp_multiclass(
    d2: torch.Tensor, sigma_f: Scalar, sigma_b: Scalar, n_fg: int, d: Scalar = D
) -> torch.Tensor:
    """Multi-class ICP: ``n_fg`` = total foreground count of all classes (all of B pooled).

    A pixel is some foreground class iff ``max_k s_k > -logit(pi)``, i.e. iff
    ``pi > H_B / (max_k h_F,k + H_B)`` as in the reference.
    """
    _, best = best_class_scores(multiclass_log_scores(d2, sigma_f, sigma_b, d))
    return icp_from_scores(best, n_fg)


def oracle_prior(log_odds: torch.Tensor, n_fg: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """OCP: per query slice, the ICP from that slice's true foreground count.

    Args:
        log_odds: ``[S, ...]`` scores of S slices (any of the models' log-odds at prior 0.5).
        n_fg: ``[S]`` true counts at the resolution of ``log_odds`` (see
            :func:`count_at_resolution`).

    Returns:
        ``[S]`` float64 priors, not clipped (it is an upper bound, not an estimator).
    """
    flat = log_odds.reshape(log_odds.shape[0], -1)
    counts = _counts(n_fg, flat.device)
    if counts.shape[0] != flat.shape[0]:
        raise ValueError(
            f"need one count per slice: {flat.shape[0]} slices, {counts.shape[0]} counts"
        )
    tau = -_count_thresholds(-flat, counts)
    return torch.sigmoid(-tau.double())


def count_at_resolution(
    n_fg: int | Sequence[int] | torch.Tensor,
    from_size: tuple[int, int],
    to_size: tuple[int, int],
) -> torch.Tensor:
    """Scale pixel counts between resolutions by the area ratio, rounded and kept in range.

    The reference's multi-class OCP works at the feature grid with the count divided by 64;
    this is the general form.
    """
    counts = torch.as_tensor(n_fg, dtype=torch.float64)
    ratio = (to_size[0] * to_size[1]) / (from_size[0] * from_size[1])
    return torch.round(counts * ratio).clamp(0, to_size[0] * to_size[1]).to(torch.int64)
