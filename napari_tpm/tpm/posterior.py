"""Single-prototype posteriors of the Tied Prototype Model and the parameter maps between them.

TPM models the foreground and the background around ONE shared centre (the prototype) on the
unit sphere, with isotropic spreads ``sigma_f < sigma_b``. With ``D2 = |f - p|^2 = 2 (1 - cos)``:

    h_F = exp(-D2 / (2 sigma_f^2)) / sigma_f^d,    h_B = exp(-D2 / (2 sigma_b^2)) / sigma_b^d
    P(F | x) = pi h_F / (pi h_F + (1 - pi) h_B)                              (density form)
             = sigmoid((alpha/4) (T_D^2 - D2) + logit(pi))                  (working form)
             = 1 - sigmoid(0.5 (S - T)),  S = -alpha cos                     (ADNet form)

Theorem 3.1 of the paper: the three agree when

    alpha = 2 (1/sigma_f^2 - 1/sigma_b^2),
    T     = 2 d log(sigma_b / sigma_f) + 2 logit(pi) - alpha,
    T_D   = sqrt(2 (1 + T / alpha)).

Two conventions are easy to mix up, so they are fixed here:

* ``t_d`` in :func:`posterior_working` is the boundary at prior 0.5 (the learned threshold of the
  checkpoint); the prior then shifts the boundary.
* The ADNet threshold ``T`` has the prior *absorbed* (ADNet has no prior). So
  ``posterior_adnet(cos, T)`` equals ``posterior_working(d2, td_from_T(T), prior=0.5)``, and
  :func:`sigmas_from_alpha_td` returns the spreads whose density posterior *at the given prior*
  has its 0.5 boundary at ``t_d`` (the reference code's convention, used for the training EMA).

Everything works on log-odds: sigma_b is ~47 and sigma_f ~0.3 for a fresh model, so the densities
themselves under- and overflow immediately in float32. Scalars may be Python floats or 0-d tensors
(a learned ``t_d`` or ``theta`` keeps its gradient).
"""

from __future__ import annotations

import math

import torch

ALPHA = 20.0
"""Cosine scaling factor, fixed in all released TPM/ADNet scripts."""

D = 1
"""The density "dimension" of the reference code (d = 1 although features are 256-d)."""

THETA_INIT = math.log(math.expm1(10.0))
"""Initial softplus parameter: gives T = -10 and T_D = 1 at alpha = 20, pi = 0.5, d = 1."""

Scalar = float | torch.Tensor


# --------------------------------------------------------------------------------------------
# scalar plumbing: one torch code path for floats and tensors
# --------------------------------------------------------------------------------------------


def _as_tensors(*xs: Scalar) -> tuple[tuple[torch.Tensor, ...], bool]:
    """Convert scalars to tensors of one floating dtype; report whether all were plain numbers.

    Plain numbers are computed in float64 and handed back as floats, so the scalar helpers stay
    exact for configuration values while still accepting (and differentiating through) tensors.
    """
    tensors = [x for x in xs if isinstance(x, torch.Tensor)]
    if not tensors:
        return tuple(torch.tensor(float(x), dtype=torch.float64) for x in xs), True
    dtype = None
    for t in tensors:
        if t.is_floating_point():
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    dtype = dtype or torch.get_default_dtype()
    device = tensors[0].device
    return tuple(torch.as_tensor(x, dtype=dtype, device=device) for x in xs), False


def _ret(y: torch.Tensor, as_float: bool) -> Scalar:
    return float(y) if as_float else y


def _log(x: Scalar) -> Scalar:
    """log for a float or a tensor (0 gives -inf, never an exception)."""
    (t,), as_float = _as_tensors(x)
    return _ret(torch.log(t), as_float)


def logit(p: Scalar) -> Scalar:
    """log(p / (1 - p)), written as log(p) - log1p(-p) to stay accurate near 0 and 1.

    ``logit(0) = -inf`` and ``logit(1) = +inf`` (no exception), so a prior of exactly 0 or 1 gives
    an all-background or all-foreground posterior instead of a crash.
    """
    (t,), as_float = _as_tensors(p)
    return _ret(torch.log(t) - torch.log1p(-t), as_float)


def sigmoid(x: Scalar) -> Scalar:
    """1 / (1 + exp(-x)), the inverse of :func:`logit`, without overflow for any ``x``.

    Plain numbers stay Python floats: the textbook ``1 / (1 + exp(-x))`` where ``exp(-x)`` is
    finite (x >= -700), else ``exp(x)``, since ``1 + exp(x)`` rounds to 1 there; so
    ``sigmoid(-inf) = 0`` and ``sigmoid(inf) = 1``. Tensors (any shape, their own device; an
    integer tensor is promoted to a float dtype as in :func:`logit`) go through the stable,
    differentiable ``torch.sigmoid``.
    """
    if isinstance(x, torch.Tensor):
        (t,), _ = _as_tensors(x)
        return torch.sigmoid(t)
    x = float(x)
    if x >= -700.0:
        return 1.0 / (1.0 + math.exp(-x))
    return math.exp(x)


# --------------------------------------------------------------------------------------------
# posteriors
# --------------------------------------------------------------------------------------------


def log_odds_single(d2: torch.Tensor, t_d: Scalar, alpha: Scalar = ALPHA) -> torch.Tensor:
    """Log-odds at prior 0.5 of the working form: ``(alpha/4) (t_d^2 - d2)``.

    This is the score the session caches: the label at prior ``pi`` is ``score > -logit(pi)``.
    """
    return (alpha / 4.0) * (t_d**2 - d2)


def posterior_working(
    d2: torch.Tensor, t_d: Scalar, prior: Scalar = 0.5, alpha: Scalar = ALPHA
) -> torch.Tensor:
    """P(F|x) = sigmoid((alpha/4)(t_d^2 - d2) + logit(prior)); ``t_d`` is the prior-0.5 boundary."""
    return torch.sigmoid(log_odds_single(d2, t_d, alpha) + logit(prior))


def log_odds_density(
    d2: torch.Tensor, sigma_f: Scalar, sigma_b: Scalar, d: Scalar = D
) -> torch.Tensor:
    """log h_F - log h_B of the tied Gaussians, without ever forming a density."""
    precision_gap = 1.0 / sigma_f**2 - 1.0 / sigma_b**2
    return d * (_log(sigma_b) - _log(sigma_f)) - 0.5 * precision_gap * d2


def posterior_density(
    d2: torch.Tensor, sigma_f: Scalar, sigma_b: Scalar, prior: Scalar = 0.5, d: Scalar = D
) -> torch.Tensor:
    """P(F|x) = pi h_F / (pi h_F + (1 - pi) h_B), evaluated as a sigmoid of log-odds."""
    return torch.sigmoid(log_odds_density(d2, sigma_f, sigma_b, d) + logit(prior))


def posterior_adnet(cos: torch.Tensor, T: Scalar, alpha: Scalar = ALPHA) -> torch.Tensor:
    """ADNet's foreground probability 1 - sigmoid(0.5 (S - T)) with S = -alpha cos.

    Written as sigmoid(0.5 (T - S)), which is the same number without the cancellation of
    ``1 - sigmoid`` near 1.
    """
    return torch.sigmoid(0.5 * (T + alpha * cos))


# --------------------------------------------------------------------------------------------
# parameter maps
# --------------------------------------------------------------------------------------------


def td_from_T(T: Scalar, alpha: Scalar = ALPHA) -> Scalar:
    """Distance threshold T_D = sqrt(2 (1 + T/alpha)) where ADNet's posterior is 0.5.

    For T <= -alpha no distance reaches 0.5; the result is clamped to 0 (the nearest valid
    threshold) instead of returning NaN.
    """
    (T_, a), as_float = _as_tensors(T, alpha)
    return _ret(torch.sqrt(torch.clamp(2.0 * (1.0 + T_ / a), min=0.0)), as_float)


def T_from_td(t_d: Scalar, alpha: Scalar = ALPHA) -> Scalar:
    """Inverse of :func:`td_from_T`: T = alpha (t_d^2 / 2 - 1)."""
    return alpha * (t_d**2 / 2.0 - 1.0)


def adnet_params_from_sigmas(
    sigma_f: Scalar, sigma_b: Scalar, prior: Scalar = 0.5, d: Scalar = D
) -> tuple[Scalar, Scalar]:
    """(alpha, T) of the ADNet form that equals the density form with these spreads and prior."""
    (sf, sb, p, d_), as_float = _as_tensors(sigma_f, sigma_b, prior, d)
    alpha = 2.0 * (1.0 / sf**2 - 1.0 / sb**2)
    T = 2.0 * d_ * (torch.log(sb) - torch.log(sf)) + 2.0 * (torch.log(p) - torch.log1p(-p)) - alpha
    return _ret(alpha, as_float), _ret(T, as_float)


def sigmas_from_alpha_td(
    alpha: Scalar, t_d: Scalar, prior: Scalar = 0.5, d: Scalar = D
) -> tuple[Scalar, Scalar]:
    """(sigma_f, sigma_b) whose density posterior at ``prior`` crosses 0.5 at distance ``t_d``.

    With r = sigma_b^2 / sigma_f^2 = (pi/(1-pi))^(-2/d) exp(alpha t_d^2 / (2d)):
    sigma_f^2 = (2/alpha)(1 - 1/r), sigma_b^2 = (2/alpha)(r - 1), computed with expm1 so that
    r close to 1 keeps its precision. Needs r > 1 (a background wider than the foreground);
    plain-number input outside that range raises ValueError, tensor input gives NaN.
    """
    (a, td, p, d_), as_float = _as_tensors(alpha, t_d, prior, d)
    log_r = -(2.0 / d_) * (torch.log(p) - torch.log1p(-p)) + a * td**2 / (2.0 * d_)
    if as_float and not float(log_r) > 0.0:
        raise ValueError(
            f"no valid spreads: alpha={alpha}, t_d={t_d}, prior={prior}, d={d} give "
            f"sigma_b^2/sigma_f^2 = exp({float(log_r):.4g}) <= 1"
        )
    sf = torch.sqrt((2.0 / a) * -torch.expm1(-log_r))
    sb = torch.sqrt((2.0 / a) * torch.expm1(log_r))
    return _ret(sf, as_float), _ret(sb, as_float)


def T_from_theta(
    theta: Scalar, prior: Scalar = 0.5, alpha: Scalar = ALPHA, d: Scalar = D
) -> Scalar:
    """TPM's parameterisation T = d softplus(theta) + 2 logit(pi) - alpha.

    It keeps T > 2 logit(pi) - alpha, so sigma_b > sigma_f throughout training.
    ``theta = THETA_INIT`` gives T = -10 (T_D = 1) at the defaults.
    """
    (th, p, a, d_), as_float = _as_tensors(theta, prior, alpha, d)
    # exact softplus: F.softplus switches to the identity above 20, an error of up to 2e-9
    softplus = torch.clamp_min(th, 0.0) + torch.log1p(torch.exp(-torch.abs(th)))
    T = d_ * softplus + 2.0 * (torch.log(p) - torch.log1p(-p)) - a
    return _ret(T, as_float)


def theta_from_T(T: Scalar, prior: Scalar = 0.5, alpha: Scalar = ALPHA, d: Scalar = D) -> Scalar:
    """Inverse of :func:`T_from_theta` (inverse softplus y + log(-expm1(-y)), stable for large y).

    Needs y = (T - 2 logit(pi) + alpha)/d > 0; plain numbers outside raise ValueError.
    """
    (T_, p, a, d_), as_float = _as_tensors(T, prior, alpha, d)
    y = (T_ - 2.0 * (torch.log(p) - torch.log1p(-p)) + a) / d_
    if as_float and not float(y) > 0.0:
        raise ValueError(f"T={T} is not reachable by the softplus parameterisation (needs y > 0)")
    return _ret(y + torch.log(-torch.expm1(-y)), as_float)
