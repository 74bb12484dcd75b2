"""Multi-prototype TPM: a spherical Gaussian mixture on the support pixels, tied for F and B.

One prototype summarises an organ poorly when its appearance varies (liver dome vs hilum). TPM-MP
fits K prototypes to the painted pixels with EM and then ties *both* the locations and the weights
of the foreground and background mixtures; only the spreads differ (sigma_f vs sigma_b), exactly
as in the single-prototype model.

The spread is fixed to the model's sigma_f (not re-estimated), so EM only moves the means and
weights. Means are kept on the unit sphere: the M-step takes the responsibility-weighted sum and
normalises it, which is the exact maximiser of the EM auxiliary function under the unit-norm
constraint. That is why the negative log-likelihood never increases (tests check it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .features import l2_normalize
from .posterior import D, Scalar, _log, logit


@dataclass
class GMMResult:
    """Fitted mixture.

    Attributes:
        means: ``[K, C]`` unit-norm component centres.
        weights: ``[K]`` mixing weights, summing to one.
        nll: mean negative log-likelihood per point after initialisation (first entry) and after
            each EM iteration, of the isotropic Gaussian mixture with std sigma, without the
            additive constant ``C log(sigma) + (C/2) log(2 pi)`` (it does not depend on the fit;
            dropping it keeps the value >= 0 and the relative stopping rule scale-free).
        n_iter: EM iterations run (``len(nll) - 1``).
        converged: whether the relative NLL change fell below ``tol`` before ``max_iter``.
    """

    means: torch.Tensor
    weights: torch.Tensor
    nll: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False


def _log_joint(x: torch.Tensor, means: torch.Tensor, log_w: torch.Tensor, inv_2s2: float):
    """log w_k - |x_n - mu_k|^2 / (2 sigma^2) for unit-norm x and means: ``[N, K]``."""
    d2 = (2.0 - 2.0 * x @ means.T).clamp(0.0, 4.0)
    return log_w[None, :] - d2 * inv_2s2


def fit_spherical_gmm(
    x: torch.Tensor,
    k: int,
    sigma: Scalar,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    min_iter: int = 6,
    seed: int = 0,
    n_init: int = 1,
) -> GMMResult:
    """Fit K unit-norm means and weights to ``x`` with a tied, fixed isotropic spread.

    Initialisation (method digest §8): every mean is the sample mean plus uniform noise
    ``0.1 (U[0,1) - 0.5)``, normalised; weights are ``softmax(0.1 U[0,1))``. The noise comes from a
    CPU ``torch.Generator`` seeded with ``seed``, so a fit is reproducible across devices.

    Because every mean starts near the global mean, EM can settle in a local optimum where two
    means share one mode (seen often for K >= 3 on well-separated synthetic clusters).
    ``n_init > 1`` runs seeds ``seed .. seed + n_init - 1`` and keeps the fit with the lowest
    final NLL; the default 1 is the reference behaviour.

    Stopping: a running average of the NLL is kept (``avg <- (avg + nll) / 2``); once an
    iteration improves on it by less than ``tol`` (relative), the fit is flagged converged and
    stops as soon as ``min_iter`` iterations have run; ``max_iter`` caps it.

    Args:
        x: ``[N, C]`` support pixel features (normalised again here). With ``N < k`` the set is
            tiled so every component has data.
        k: number of components (>= 1). ``k = 1`` gives the normalised mean of ``x``.
        sigma: the fixed std, the model's sigma_f.

    Raises:
        ValueError: empty ``x``, ``k < 1``, ``sigma <= 0`` or ``n_init < 1``.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty [N, C] tensor, got shape {tuple(x.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    sigma = float(sigma)
    if not sigma > 0.0:
        raise ValueError(f"sigma must be positive, got {sigma}")

    x = l2_normalize(x.detach(), dim=1)
    if x.shape[0] < k:
        x = x.repeat(math.ceil(k / x.shape[0]), 1)
    fits = [
        _fit_once(x, k, sigma, max_iter=max_iter, tol=tol, min_iter=min_iter, seed=seed + i)
        for i in range(n_init)
    ]
    return min(fits, key=lambda fit: fit.nll[-1])


def _fit_once(
    x: torch.Tensor, k: int, sigma: float, *, max_iter: int, tol: float, min_iter: int, seed: int
) -> GMMResult:
    n, c = x.shape
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    mean_noise = torch.rand(k, c, generator=gen, dtype=torch.float64).to(x)
    weight_noise = torch.rand(k, generator=gen, dtype=torch.float64).to(x)
    means = l2_normalize(x.mean(0, keepdim=True) + 0.1 * (mean_noise - 0.5), dim=1)
    log_w = torch.log_softmax(0.1 * weight_noise, dim=0)
    inv_2s2 = 1.0 / (2.0 * sigma**2)
    tiny = torch.finfo(x.dtype).tiny

    lj = _log_joint(x, means, log_w, inv_2s2)
    lse = torch.logsumexp(lj, dim=1)
    history = [float(-lse.mean())]
    running = history[0]
    flagged = converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        resp = torch.exp(lj - lse[:, None])  # E-step, [N, K]
        direction = resp.T @ x  # M-step: constrained maximiser is the normalised weighted sum
        norm = torch.linalg.vector_norm(direction, dim=1, keepdim=True)
        # A component with no responsibility left keeps its old mean; its weight is 0 anyway.
        means = torch.where(norm > tiny, direction / norm.clamp_min(tiny), means)
        log_w = torch.log(resp.sum(0) / n)

        lj = _log_joint(x, means, log_w, inv_2s2)
        lse = torch.logsumexp(lj, dim=1)
        nll = float(-lse.mean())
        history.append(nll)
        if running - nll <= tol * abs(nll):
            flagged = True
        else:
            running = 0.5 * (running + nll)
        if flagged and n_iter >= min_iter:
            converged = True
            break
    return GMMResult(
        means=means, weights=torch.exp(log_w), nll=history, n_iter=n_iter, converged=converged
    )


def log_odds_multi(
    d2: torch.Tensor,
    weights: torch.Tensor,
    sigma_f: Scalar,
    sigma_b: Scalar,
    d: Scalar = D,
) -> torch.Tensor:
    """log h_F - log h_B for mixtures with tied locations and tied weights.

    ``h_F = sum_k w_k exp(-D2_k / (2 sigma_f^2)) / sigma_f^d`` and the same with sigma_b; computed
    with logsumexp so that sigma_f ~ 0.3 and D2 up to 4 cannot underflow. The weights need not sum
    to one (a common factor cancels); zero weights are allowed.

    Args:
        d2: ``[B, K, h, w]`` squared distances to the K means.
        weights: ``[K]``.

    Returns:
        ``[B, h, w]`` log-odds at prior 0.5.
    """
    log_hf, log_hb = mixture_log_densities(d2, weights, sigma_f, sigma_b, d)
    return log_hf - log_hb


def mixture_log_densities(
    d2: torch.Tensor,
    weights: torch.Tensor,
    sigma_f: Scalar,
    sigma_b: Scalar,
    d: Scalar = D,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log h_F, log h_B)``, each ``[B, h, w]``, of the tied mixtures over ``[B, K, h, w]``.

    The two densities separately, for callers that combine several classes' mixtures (the
    multi-class background is the sum of every class's wide mixture).
    """
    w = torch.as_tensor(weights, dtype=d2.dtype, device=d2.device)
    if w.dim() != 1 or w.shape[0] != d2.shape[1]:
        raise ValueError(f"weights must be [K] with K={d2.shape[1]}, got {tuple(w.shape)}")
    log_w = torch.log(w)[None, :, None, None]
    log_hf = torch.logsumexp(log_w - d2 / (2.0 * sigma_f**2), dim=1) - d * _log(sigma_f)
    log_hb = torch.logsumexp(log_w - d2 / (2.0 * sigma_b**2), dim=1) - d * _log(sigma_b)
    return log_hf, log_hb


def posterior_multi(
    d2: torch.Tensor,
    weights: torch.Tensor,
    sigma_f: Scalar,
    sigma_b: Scalar,
    prior: Scalar = 0.5,
    d: Scalar = D,
) -> torch.Tensor:
    """P(F|x) = pi h_F / (pi h_F + (1 - pi) h_B) of the tied mixtures: ``[B, h, w]``."""
    return torch.sigmoid(log_odds_multi(d2, weights, sigma_f, sigma_b, d) + logit(prior))
