"""Transductive TPM: refine the prototypes and the class priors on the query's own features.

The support gives a prototype from another slice (or another patient); the query organ looks a
little different, and a fixed threshold then cuts it too tight or too loose. TPM is a generative
model, so the query itself, unlabelled, tells us more: this is EM on the query under the TPM
mixture, with the support as a prior.

Model per voxel ``x`` (unit feature) of slice ``z``: with probability ``pi_zk`` it belongs to
class ``k`` and has density ``h_k(x) = sum_j w_kj N(x; mu_kj, sigma_F)``; otherwise it is
background with the tied wide density ``h_B``. The session's scores ``s_k = log h_k - log h_B +
c`` carry a calibration constant ``c`` (a log prior ratio fixed on the support), so the posterior
is ``r_k = softmax([0, s_1 + b_z1, ..., s_K + b_zK])_k`` with ``b_zk`` the log prior ratio of
slice ``z`` relative to the calibrated one.

- E-step: the posteriors ``r`` above.
- M-step, prototypes: each mean moves to the posterior-weighted mean direction of the query
  (the maximum-likelihood direction of a spherical Gaussian), mixed with the support's mean:
  ``mu = normalise(lambda * n_s * mu_support + sum_i r_i gamma_ij x_i)`` with ``n_s`` the number
  of support pixels. This is the MAP estimate under a conjugate (von Mises-Fisher-like) prior
  centred on the support prototype with strength ``lambda * n_s`` pseudo-pixels: with no query
  evidence (all ``r = 0``) it returns the support's prototypes exactly.
- M-step, priors: ``pi_zk`` is the mean posterior of slice ``z`` (smoothed across neighbouring
  slices, because an organ's extent changes slowly), and ``b_zk = logit(pi_zk) - logit(pi_k)``
  relative to the volume-wide mean ``pi_k`` so the calibrated overall level is kept.

Every function is pure torch on CPU or GPU; the session keeps the orchestration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .features import l2_normalize, squared_distance, weighted_channel_sums

__all__ = [
    "TransductiveResult",
    "class_posteriors",
    "query_log_likelihood",
    "refine_means",
    "slice_log_priors",
    "transductive_tpm",
]

Prototypes = list[tuple[torch.Tensor, torch.Tensor]]
ScoreFn = Callable[[torch.Tensor, Prototypes], torch.Tensor]


@dataclass
class TransductiveResult:
    """Refined prototypes, per-slice log prior ratios ``[n, K]`` and the likelihood trace.

    ``scores`` are the refined prototypes' class log-odds over the query (``score_fn``'s, without
    ``slice_bias``): the last likelihood is computed from them, and a caller may reuse them
    instead of scoring the volume once more.
    """

    prototypes: Prototypes
    slice_bias: torch.Tensor
    log_likelihood: list[float]
    scores: torch.Tensor


def class_posteriors(scores: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``r [B, K, h, w]``: P(class k | x) from log-odds ``scores [B, K, h, w]`` against background.

    ``bias [B, K]`` adds a per-slice log prior ratio. Background's posterior is ``1 - r.sum(1)``.
    """
    s = scores if bias is None else scores + bias[:, :, None, None]
    zero = torch.zeros_like(s[:, :1])
    return torch.softmax(torch.cat([zero, s], 1), 1)[:, 1:]


def query_log_likelihood(scores: torch.Tensor, bias: torch.Tensor | None = None) -> float:
    """Mean per-voxel ``log(pi_0 h_B + sum_k pi_k h_k)``, up to a constant, as a function of the
    class log-odds: ``log(1 + sum_k exp(s_k + b_k))`` plus ``log h_B`` (constant for fixed means,
    so this is the quantity the prior M-step increases)."""
    s = scores if bias is None else scores + bias[:, :, None, None]
    zero = torch.zeros_like(s[:, :1])
    return float(torch.logsumexp(torch.cat([zero, s], 1), 1).mean())


def refine_means(
    features: torch.Tensor,
    resp: torch.Tensor,
    support_means: torch.Tensor,
    support_count: float,
    support_weight: float,
    sigma_f: float,
    weights: torch.Tensor | None = None,
    sigma_b: float | None = None,
    gate: torch.Tensor | None = None,
    unit: bool = False,
) -> torch.Tensor:
    """M-step for one class's means ``[J, C]`` (MAP towards the support's means).

    Args:
        features: ``[B, C, h, w]`` query features (any norm; normalised here unless ``unit``).
        resp: ``[B, h, w]`` posterior of this class.
        support_means: ``[J, C]`` the support's prototypes (unit).
        support_count: support pixels behind them (``n_s``).
        support_weight: ``lambda``; the prior counts as ``lambda * n_s`` query pixels.
        sigma_f: the tight spread, for the split of ``resp`` between the J components.
        weights: ``[J]`` mixture weights (None: uniform).
        sigma_b: the wide spread. The background Gaussian is tied to the same centre, so a
            voxel's pull is ``r / sigma_f^2 + (1 - r) / sigma_b^2`` (scaled by ``sigma_f^2``):
            exactly the maximiser of the expected TPM log-likelihood. None: foreground only.
        gate: ``[B, h, w]`` bool, the voxels allowed to pull (None: all).
        unit: ``features`` are float32 and already unit along C (computed once by the caller
            for every class and iteration).
    """
    f = features if unit else l2_normalize(features.float(), dim=1)
    j = support_means.shape[0]
    pull = resp if sigma_b is None else resp + (1 - resp) * (sigma_f / sigma_b) ** 2
    if gate is not None:
        pull = pull * gate.to(pull.dtype)
    if j == 1:
        gamma = pull[:, None]
    else:
        w = torch.full((j,), 1.0 / j) if weights is None else weights.float()
        d2 = squared_distance(f, support_means, unit=True)
        log_g = torch.log(w)[None, :, None, None] - d2 / (2.0 * sigma_f**2)
        gamma = torch.softmax(log_g, 1) * pull[:, None]
    pulled = weighted_channel_sums(gamma, f)
    prior = support_weight * support_count * l2_normalize(support_means.float(), dim=-1)
    return l2_normalize(prior + pulled, dim=-1)


def slice_log_priors(
    resp: torch.Tensor, smoothing: float = 1.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """``b [B, K]``: per-slice log prior ratios from the posteriors ``resp [B, K, h, w]``.

    ``pi_zk`` is the mean posterior over the slice's ``valid`` pixels (the content of the working
    grid, not its padding), smoothed along the slices with a Gaussian of ``smoothing`` slices,
    and expressed relative to the volume-wide mean so that the calibrated level is kept.
    """
    if valid is None:
        frac = resp.mean((2, 3))
    else:
        v = valid.to(resp.dtype)
        frac = (resp * v).sum((2, 3)) / v.sum().clamp_min(1.0)
    if smoothing > 0 and frac.shape[0] > 1:
        radius = max(1, int(3 * smoothing))
        t = torch.arange(-radius, radius + 1, dtype=frac.dtype)
        k = torch.exp(-0.5 * (t / smoothing) ** 2)
        k = (k / k.sum()).view(1, 1, -1)
        x = frac.T[:, None]  # [K, 1, B]
        x = torch.nn.functional.pad(x, (radius, radius), mode="replicate")
        frac = torch.nn.functional.conv1d(x, k)[:, 0].T
    eps = 1e-4
    frac = frac.clamp(eps, 1 - eps)
    mean = frac.mean(0, keepdim=True).clamp(eps, 1 - eps)
    return torch.logit(frac) - torch.logit(mean)


def transductive_tpm(
    features: torch.Tensor,
    prototypes: Prototypes,
    support_counts: Sequence[float],
    score_fn: ScoreFn,
    *,
    sigma_f: float,
    sigma_b: float | None = None,
    n_iter: int = 3,
    support_weight: float = 1.0,
    slice_priors: bool = True,
    smoothing: float = 1.0,
    gate: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    chunk: int = 32,
    initial_scores: torch.Tensor | None = None,
) -> TransductiveResult:
    """EM on the query's features under the TPM mixture, regularised towards the support.

    Args:
        features: ``[n, C, h, w]`` the whole query (may be float16; processed in chunks).
        prototypes: per class ``(means [J, C], weights [J])`` from the support.
        support_counts: support pixels per class.
        score_fn: ``(features chunk, prototypes) -> [b, K, h, w]`` calibrated class log-odds
            (the session's scorer, so background strokes and calibration are included).
        sigma_f: the model's tight spread.
        sigma_b: the model's wide spread (see :func:`refine_means`).
        n_iter: EM iterations.
        support_weight: strength of the support prior, in units of its own pixel count.
        slice_priors: also estimate per-slice class priors.
        smoothing: Gaussian smoothing of the slice priors, in slices.
        gate: optional ``[n, K, h, w]`` bool: only these voxels may pull the prototypes (e.g. the
            component connected to the paint); posteriors elsewhere still set the priors.
        valid: ``[h, w]`` bool, the working grid's content (padding excluded from priors).
        chunk: slices per scoring call (bounds memory).
        initial_scores: ``score_fn(features, prototypes)`` when the caller already has it (the
            first pass's scores): the first E-step uses it instead of scoring the volume again.
    """
    n = features.shape[0]
    k = len(prototypes)
    protos = [(m.float().clone(), w.float().clone()) for m, w in prototypes]
    bias = torch.zeros((n, k))
    trace: list[float] = []
    unit = l2_normalize(features.float(), dim=1) if n_iter > 0 else features  # M-step's, once
    for step in range(max(0, int(n_iter))):
        if step == 0 and initial_scores is not None:
            scores = initial_scores.float()
        else:
            scores = _scores(features, protos, score_fn, chunk)
        trace.append(query_log_likelihood(scores, bias))
        resp = class_posteriors(scores, bias)  # E-step
        if slice_priors:
            bias = slice_log_priors(resp, smoothing, valid)
        protos = [
            (
                refine_means(
                    unit,
                    resp[:, c],
                    prototypes[c][0],
                    float(support_counts[c]),
                    support_weight,
                    sigma_f,
                    prototypes[c][1],
                    sigma_b=sigma_b,
                    gate=None if gate is None else gate[:, c],
                    unit=True,
                ),
                prototypes[c][1].float(),
            )
            for c in range(k)
        ]
    scores = _scores(features, protos, score_fn, chunk)
    trace.append(query_log_likelihood(scores, bias))
    return TransductiveResult(
        prototypes=protos, slice_bias=bias, log_likelihood=trace, scores=scores
    )


def _scores(
    features: torch.Tensor, protos: Prototypes, score_fn: ScoreFn, chunk: int
) -> torch.Tensor:
    parts = [
        score_fn(features[i : i + chunk].float(), protos)
        for i in range(0, features.shape[0], chunk)
    ]
    return torch.cat(parts)
