"""Multi-class TPM (one prototype per class) and the ADNet++ max-rule baseline.

Foreground class k has weight pi/K and the narrow density h_F(x; mu_k). The background is the
mixture of all K wide densities h_B(x; mu_j) with weight (1 - pi)/K each (digest Eq. 9): a pixel
is background when it is far from *every* class centre. The 1/K factors cancel, so the log-odds
of class k against the background is ``s_k + logit(pi)`` with

    s_k(x) = log h_F,k(x) - log sum_j h_B,j(x),

which is what the session caches. Channel 0 of every probability output is the background.
"""

from __future__ import annotations

import torch

from .posterior import D, Scalar, _log, log_odds_density


def _log_h(d2: torch.Tensor, sigma: Scalar, d: Scalar) -> torch.Tensor:
    """log of exp(-D2 / (2 sigma^2)) / sigma^d, never forming the density."""
    return -d2 / (2.0 * sigma**2) - d * _log(sigma)


def multiclass_log_scores(
    d2: torch.Tensor, sigma_f: Scalar, sigma_b: Scalar, d: Scalar = D
) -> torch.Tensor:
    """Per-class score ``log h_F,k - log sum_j h_B,j`` (log-odds of class k vs background at 0.5).

    Args:
        d2: ``[B, K, h, w]`` squared distances to the K class prototypes.

    Returns:
        ``[B, K, h, w]``.
    """
    log_hb = torch.logsumexp(_log_h(d2, sigma_b, d), dim=1, keepdim=True)
    return _log_h(d2, sigma_f, d) - log_hb


multiclass_scores = multiclass_log_scores
"""Alias under the name used in docs/architecture.md."""


def _prior_like(prior: Scalar, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(prior, dtype=like.dtype, device=like.device)


def multiclass_posterior(
    d2: torch.Tensor,
    sigma_f: Scalar,
    sigma_b: Scalar,
    prior: Scalar = 0.5,
    d: Scalar = D,
) -> torch.Tensor:
    """Class probabilities ``[B, K+1, h, w]`` (channel 0 background); they sum to one.

    Uses log(pi) and log(1 - pi) rather than logit(pi), so a prior of exactly 0 or 1 still gives
    a valid distribution (all background / no background).
    """
    p = _prior_like(prior, d2)
    log_pi, log_1mpi = torch.log(p), torch.log1p(-p)
    scores = multiclass_log_scores(d2, sigma_f, sigma_b, d)
    background = torch.zeros_like(scores[:, :1]) + log_1mpi
    logits = torch.cat([background, scores + log_pi], dim=1)
    return torch.softmax(logits, dim=1)


def adnetpp_posterior(
    d2: torch.Tensor,
    sigma_f: Scalar,
    sigma_b: Scalar,
    d: Scalar = D,
    prior: Scalar = 0.5,
) -> torch.Tensor:
    """ADNet++ as re-implemented by the TPM authors (no uncertainty, no supervoxel refinement).

    Each class gets its own binary posterior ``p_k = h_F,k / (h_F,k + h_B,k)`` (at ``prior``,
    0.5 in the paper); the background score is ``1 - max_k p_k``, and a softmax over
    ``[background, p_1 .. p_K]`` gives ``[B, K+1, h, w]``. Only its argmax is meaningful; the
    softmax of probabilities is what the baseline does, kept for comparison.
    """
    p = _prior_like(prior, d2)
    per_class = torch.sigmoid(log_odds_density(d2, sigma_f, sigma_b, d) + torch.logit(p))
    background = 1.0 - per_class.amax(dim=1, keepdim=True)
    return torch.softmax(torch.cat([background, per_class], dim=1), dim=1)


def best_class_scores(log_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best class and its score, what the session caches for several classes.

    ``score = log(max_k h_F,k / sum_j h_B,j) = max_k s_k``. The label at prior ``pi`` is
    ``index + 1`` where ``score > -logit(pi)`` and 0 elsewhere; this equals the argmax of
    :func:`multiclass_posterior` (see :func:`labels_from_best`).

    Args:
        log_scores: ``[B, K, h, w]`` from :func:`multiclass_log_scores`.

    Returns:
        ``(index [B, h, w] int64 in 0..K-1, score [B, h, w])``.
    """
    score, index = log_scores.max(dim=1)
    return index.to(torch.int64), score


def labels_from_best(index: torch.Tensor, score: torch.Tensor, prior: Scalar) -> torch.Tensor:
    """Labels at ``prior`` from the cached best class: 0 background, ``1..K`` the classes."""
    p = _prior_like(prior, score)
    threshold = torch.log1p(-p) - torch.log(p)  # -logit(pi), +inf at pi = 0, -inf at pi = 1
    return torch.where(score > threshold, index + 1, torch.zeros_like(index))
