"""Single-prototype posteriors: Theorem 3.1 (working == density == ADNet form) and conversions."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_tpm.tpm import (
    ALPHA,
    THETA_INIT,
    T_from_td,
    T_from_theta,
    adnet_params_from_sigmas,
    log_odds_density,
    log_odds_single,
    logit,
    posterior_adnet,
    posterior_density,
    posterior_working,
    sigmas_from_alpha_td,
    td_from_T,
    theta_from_T,
)
from napari_tpm.tpm.posterior import sigmoid

FAST = settings(max_examples=60, deadline=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


alphas = st.floats(1.0, 60.0)
priors = st.floats(0.01, 0.99)
seeds = st.integers(0, 2**31 - 1)
dims = st.sampled_from([1, 2, 256])


def _cosines(seed: int, dtype=torch.float64) -> torch.Tensor:
    """Random cosines in [-1, 1], including both ends, as a small batched map [B, K, h, w]."""
    g = torch.Generator().manual_seed(seed)
    cos = 2.0 * torch.rand(2, 1, 5, 7, generator=g, dtype=torch.float64) - 1.0
    cos[0, 0, 0, 0], cos[0, 0, 0, 1] = 1.0, -1.0
    return cos.to(dtype)


def _d2(cos: torch.Tensor) -> torch.Tensor:
    return 2.0 * (1.0 - cos)


def _adnet_logit(cos: torch.Tensor, T: float, alpha: float) -> torch.Tensor:
    """ADNet's log-odds straight from its definition: P = 1 - sigmoid(0.5 (S - T))."""
    S = -alpha * cos
    return -0.5 * (S - T)


@FAST
@given(alpha=alphas, t_excess=st.floats(0.01, 60.0), prior=priors, d=dims, seed=seeds)
def test_density_form_equals_adnet_form_under_parameter_map(alpha, t_excess, prior, d, seed):
    # T must exceed -alpha (a boundary exists) and 2 logit(pi) - alpha (sigma_b > sigma_f).
    T = max(-alpha, 2.0 * logit(prior) - alpha) + t_excess
    sigma_f, sigma_b = sigmas_from_alpha_td(alpha, td_from_T(T, alpha), prior, d)
    assert sigma_b > sigma_f > 0.0
    cos = _cosines(seed)
    density_logit = log_odds_density(_d2(cos), sigma_f, sigma_b, d) + logit(prior)
    torch.testing.assert_close(density_logit, _adnet_logit(cos, T, alpha), rtol=1e-9, atol=1e-7)
    torch.testing.assert_close(
        posterior_density(_d2(cos), sigma_f, sigma_b, prior, d),
        posterior_adnet(cos, T, alpha),
        rtol=0,
        atol=1e-12,
    )


@FAST
@given(alpha=alphas, t_d=st.floats(0.0, 2.0), prior=priors, seed=seeds)
def test_working_form_equals_adnet_form_with_prior_absorbed_in_T(alpha, t_d, prior, seed):
    cos = _cosines(seed)
    T = T_from_td(t_d, alpha) + 2.0 * logit(prior)
    torch.testing.assert_close(
        posterior_working(_d2(cos), t_d, prior, alpha),
        posterior_adnet(cos, T, alpha),
        atol=1e-12,
        rtol=0,
    )
    working_logit = log_odds_single(_d2(cos), t_d, alpha) + logit(prior)
    torch.testing.assert_close(working_logit, _adnet_logit(cos, T, alpha), rtol=1e-9, atol=1e-9)


@FAST
@given(alpha=alphas, t_excess=st.floats(0.0, 80.0), seed=seeds)
def test_adnet_T_maps_to_the_prior_half_distance_threshold(alpha, t_excess, seed):
    T = -alpha + t_excess
    cos = _cosines(seed)
    torch.testing.assert_close(
        posterior_working(_d2(cos), td_from_T(T, alpha), 0.5, alpha),
        posterior_adnet(cos, T, alpha),
        atol=1e-12,
        rtol=0,
    )


@FAST
@given(
    sigma_f=st.floats(0.05, 2.0),
    ratio=st.floats(1.01, 200.0),
    prior=priors,
    d=dims,
    seed=seeds,
)
def test_density_form_equals_working_form(sigma_f, ratio, prior, d, seed):
    """Spreads -> (alpha, T at prior 0.5) -> T_D; the working form then reproduces the density."""
    sigma_b = sigma_f * ratio
    alpha, T0 = adnet_params_from_sigmas(sigma_f, sigma_b, 0.5, d)
    t_d = td_from_T(T0, alpha)
    d2 = _d2(_cosines(seed))
    torch.testing.assert_close(
        log_odds_single(d2, t_d, alpha) + logit(prior),
        log_odds_density(d2, sigma_f, sigma_b, d) + logit(prior),
        rtol=1e-9,
        atol=1e-7,
    )
    # and against the densities themselves, in a regime where they do not underflow
    if sigma_f > 0.5 and d == 1:
        h_f = torch.exp(-d2 / (2 * sigma_f**2)) / sigma_f
        h_b = torch.exp(-d2 / (2 * sigma_b**2)) / sigma_b
        direct = prior * h_f / (prior * h_f + (1 - prior) * h_b)
        torch.testing.assert_close(posterior_working(d2, t_d, prior, alpha), direct)


@FAST
@given(alpha=alphas, t_d=st.floats(0.05, 1.99), prior=priors, d=dims)
def test_conversions_round_trip(alpha, t_d, prior, d):
    if alpha * t_d**2 / 2.0 <= 2.0 * logit(prior) + 1e-6:  # no sigma_b > sigma_f exists
        with pytest.raises(ValueError, match="no valid spreads"):
            sigmas_from_alpha_td(alpha, t_d, prior, d)
        return
    sigma_f, sigma_b = sigmas_from_alpha_td(alpha, t_d, prior, d)
    alpha2, T = adnet_params_from_sigmas(sigma_f, sigma_b, prior, d)
    assert alpha2 == pytest.approx(alpha, rel=1e-9)
    assert td_from_T(T, alpha) == pytest.approx(t_d, rel=1e-7, abs=1e-9)
    assert T_from_td(td_from_T(T, alpha), alpha) == pytest.approx(T, rel=1e-9, abs=1e-9)
    theta = theta_from_T(T, prior, alpha, d)
    assert T_from_theta(theta, prior, alpha, d) == pytest.approx(T, rel=1e-9, abs=1e-9)


def test_initial_theta_gives_the_documented_start():
    """theta0 = log(e^10 - 1): T = -10, T_D = 1, sigma_b^2/sigma_f^2 = e^10 (digest §5.2)."""
    T = T_from_theta(THETA_INIT, 0.5, ALPHA, 1)
    assert pytest.approx(-10.0, abs=1e-12) == T
    assert td_from_T(T, ALPHA) == pytest.approx(1.0, abs=1e-12)
    sigma_f, sigma_b = sigmas_from_alpha_td(ALPHA, 1.0, 0.5, 1)
    assert sigma_f == pytest.approx(0.3162, abs=1e-4)
    assert sigma_b == pytest.approx(46.93, abs=1e-2)
    assert (sigma_b / sigma_f) ** 2 == pytest.approx(math.exp(10.0), rel=1e-9)
    assert 1 / sigma_f**2 - 1 / sigma_b**2 == pytest.approx(ALPHA / 2, rel=1e-12)


def test_scalars_may_be_tensors_and_keep_gradients():
    theta = torch.tensor(THETA_INIT, dtype=torch.float64, requires_grad=True)
    t_d = td_from_T(T_from_theta(theta), ALPHA)
    assert isinstance(t_d, torch.Tensor)
    d2 = torch.linspace(0, 4, 9, dtype=torch.float64).reshape(1, 1, 3, 3)
    assert torch.autograd.gradcheck(
        lambda th: posterior_working(d2, td_from_T(T_from_theta(th))), (theta,)
    )
    sigma_f, sigma_b = sigmas_from_alpha_td(torch.tensor(20.0), t_d.float())
    assert sigma_f.dtype == torch.float32
    p = posterior_density(d2.float(), sigma_f, sigma_b, torch.tensor(0.3))
    assert p.dtype == torch.float32
    torch.testing.assert_close(p.double(), posterior_working(d2, 1.0, 0.3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_spreads_stay_finite(dtype):
    """sigma_f = 0.05 makes h_F(D2 = 4) = e^-800: only the log form survives."""
    d2 = torch.tensor([0.0, 1.0, 4.0], dtype=dtype).reshape(1, 1, 1, 3)
    for sigma_f, sigma_b in [(0.3162, 46.93), (0.05, 1e4)]:
        lo = log_odds_density(d2, sigma_f, sigma_b)
        expected = math.log(sigma_b / sigma_f) - 0.5 * d2.double() * (
            1 / sigma_f**2 - 1 / sigma_b**2
        )
        assert lo.dtype == dtype and torch.isfinite(lo).all()
        torch.testing.assert_close(lo.double(), expected, rtol=1e-5, atol=1e-4)
        p = posterior_density(d2, sigma_f, sigma_b, 0.5)
        assert torch.isfinite(p).all() and p[..., 0] > 0.99 and p[..., 2] < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_batched_shapes_are_kept(dtype):
    d2 = torch.rand(3, 2, 4, 5, dtype=dtype) * 4
    for out in (
        posterior_working(d2, 1.0, 0.2),
        posterior_density(d2, 0.3, 47.0, 0.2),
        posterior_adnet(1 - d2 / 2, -10.0),
    ):
        assert out.shape == d2.shape and out.dtype == dtype
    torch.testing.assert_close(
        posterior_working(d2, 1.0, 0.2).double(),
        posterior_working(d2.double(), 1.0, 0.2),
        atol=1e-6,
        rtol=0,
    )


def test_prior_at_the_ends_and_logit():
    d2 = torch.tensor([0.0, 2.0, 4.0])
    assert logit(0.0) == -math.inf and logit(1.0) == math.inf
    assert logit(0.25) == pytest.approx(math.log(1 / 3))
    assert torch.equal(posterior_working(d2, 1.0, 1.0), torch.ones(3))
    assert torch.equal(posterior_working(d2, 1.0, 0.0), torch.zeros(3))


def test_unreachable_parameters_raise():
    with pytest.raises(ValueError):
        theta_from_T(-30.0, 0.5, ALPHA, 1)  # T <= -alpha
    assert td_from_T(-30.0, ALPHA) == 0.0  # no boundary: clamped, not NaN


@FAST
@given(p=st.floats(1e-12, 1 - 1e-12))
def test_sigmoid_inverts_logit(p):
    assert sigmoid(logit(p)) == pytest.approx(p, rel=1e-9, abs=1e-15)


def test_sigmoid_matches_the_textbook_formula_and_takes_tensors():
    for x in (-700.0, -30.0, -1.5, 0.0, 0.3, 2.0, 40.0):
        assert sigmoid(x) == 1.0 / (1.0 + math.exp(-x))  # bit for bit: auto_prior unchanged
    assert sigmoid(0) == 0.5 and isinstance(sigmoid(1), float)
    p = torch.tensor([[0.01, 0.5], [0.9, 0.999]], dtype=torch.float64, requires_grad=True)
    back = sigmoid(logit(p))
    torch.testing.assert_close(back, p, rtol=1e-12, atol=0)
    back.sum().backward()
    assert p.grad is not None and back.dtype == torch.float64
    assert sigmoid(torch.tensor([0, 2])).dtype == torch.get_default_dtype()


def test_sigmoid_does_not_overflow_for_large_inputs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sigmoid(1e6) == 1.0 and sigmoid(math.inf) == 1.0
        assert sigmoid(-1e6) == 0.0 and sigmoid(-math.inf) == 0.0
        assert 0.0 < sigmoid(-745.0) < 1e-320  # a denormal, not 0 from a rounding detour
        assert sigmoid(-701.0) == pytest.approx(math.exp(-701.0), rel=1e-12)
        big = torch.tensor([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=torch.float32)
        out = sigmoid(big)
        assert torch.isfinite(out).all()
        assert out[0] == 0.0 and out[2] == 0.5 and out[-1] == 1.0
        assert math.isnan(sigmoid(math.nan))
