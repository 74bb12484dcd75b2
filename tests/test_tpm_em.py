"""Multi-prototype TPM: spherical EM and the tied-mixture log-odds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from napari_tpm.tpm import (
    fit_spherical_gmm,
    l2_normalize,
    log_odds_density,
    log_odds_multi,
    masked_average,
    posterior_multi,
    support_pixel_features,
)

FAST = settings(max_examples=25, deadline=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clusters(seed: int, k: int, c: int = 32, spread: float = 0.05, dtype=torch.float64):
    """Points around k random (nearly orthogonal) unit centres, with unequal cluster sizes."""
    g = torch.Generator().manual_seed(seed)
    centres = l2_normalize(torch.randn(k, c, generator=g, dtype=torch.float64), dim=1)
    counts = torch.randint(30, 80, (k,), generator=g)
    x = torch.cat(
        [
            l2_normalize(
                centres[i] + spread * torch.randn(int(n), c, generator=g, dtype=torch.float64), 1
            )
            for i, n in enumerate(counts)
        ]
    )
    return x.to(dtype), centres, counts


def _matched_cosines(means: torch.Tensor, centres: torch.Tensor) -> np.ndarray:
    cos = (means.double() @ centres.T).numpy()
    rows, cols = linear_sum_assignment(-cos)
    return cos[rows, cols], cols


@FAST
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 6),
    n=st.integers(1, 120),
    sigma=st.sampled_from([0.1, 0.3162, 1.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_em_never_increases_the_nll(seed, k, n, sigma, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g, dtype=torch.float64).to(dtype)
    fit = fit_spherical_gmm(x, k, sigma, max_iter=25, tol=0.0, seed=seed)
    nll = np.asarray(fit.nll)
    assert len(nll) == fit.n_iter + 1 and fit.n_iter <= 25
    slack = 1e-10 if dtype == torch.float64 else 1e-4
    assert np.all(np.diff(nll) <= slack * np.maximum(1.0, np.abs(nll[:-1])))
    assert fit.means.shape == (k, 16) and fit.weights.shape == (k,)
    torch.testing.assert_close(
        torch.linalg.vector_norm(fit.means, dim=1), torch.ones(k, dtype=dtype), atol=1e-5, rtol=0
    )
    assert float(fit.weights.sum()) == pytest.approx(1.0, abs=1e-5)


@FAST
@given(seed=st.integers(0, 10_000))
def test_em_finds_two_separated_clusters(seed):
    x, centres, counts = _clusters(seed, 2)
    fit = fit_spherical_gmm(x, 2, 0.3162, seed=seed)
    cos, cols = _matched_cosines(fit.means, centres)
    assert cos.min() > 0.99
    fractions = counts.double() / counts.sum()
    np.testing.assert_allclose(fit.weights.numpy(), fractions[cols].numpy(), atol=0.02)
    assert fit.converged


@pytest.mark.parametrize("k", [3, 4, 5])
@pytest.mark.parametrize("data_seed", [11, 12, 13])
def test_em_with_restarts_finds_more_clusters(k, data_seed):
    """Single starts near the global mean often merge modes for K >= 3; the best of several
    starts (lowest NLL) must recover every centre."""
    x, centres, _ = _clusters(data_seed, k)
    fit = fit_spherical_gmm(x, k, 0.3162, seed=0, n_init=8)
    cos, _ = _matched_cosines(fit.means, centres)
    assert cos.min() > 0.99
    single = [fit_spherical_gmm(x, k, 0.3162, seed=s).nll[-1] for s in range(8)]
    assert fit.nll[-1] == pytest.approx(min(single), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k1_is_the_normalised_masked_average(dtype):
    g = torch.Generator().manual_seed(4)
    features = l2_normalize(torch.randn(1, 12, 6, 7, generator=g, dtype=torch.float64)).to(dtype)
    mask = torch.rand(1, 6, 7, generator=g) > 0.4
    x = support_pixel_features(features[0], mask[0])
    fit = fit_spherical_gmm(x, 1, 0.3162, seed=3)
    expected = l2_normalize(masked_average(features, mask), dim=1)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(fit.means, expected, atol=tol, rtol=0)
    assert fit.weights.tolist() == [1.0]


def test_fewer_points_than_components_tiles_the_set():
    x = l2_normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64), 1)
    fit = fit_spherical_gmm(x, 5, 0.3162, seed=1)
    assert fit.means.shape == (5, 3) and torch.isfinite(fit.means).all()
    assert float(fit.weights.sum()) == pytest.approx(1.0)
    # every mean ends on one of the two points or between them, in their plane
    assert torch.allclose(fit.means[:, 2], torch.zeros(5, dtype=torch.float64), atol=1e-9)
    single = fit_spherical_gmm(x[:1], 3, 0.3162)
    torch.testing.assert_close(single.means, x[:1].expand(3, 3))


def test_em_is_deterministic_per_seed():
    x, _, _ = _clusters(5, 4)
    a = fit_spherical_gmm(x, 4, 0.3162, seed=7)
    b = fit_spherical_gmm(x, 4, 0.3162, seed=7)
    c = fit_spherical_gmm(x, 4, 0.3162, seed=8)
    assert torch.equal(a.means, b.means) and torch.equal(a.weights, b.weights) and a.nll == b.nll
    assert not torch.equal(a.means, c.means)


def test_em_rejects_bad_input():
    x = torch.randn(4, 3)
    for kwargs in (
        {"k": 0, "sigma": 0.3},
        {"k": 2, "sigma": 0.0},
        {"k": 2, "sigma": 0.3, "n_init": 0},
    ):
        with pytest.raises(ValueError):
            fit_spherical_gmm(x, **kwargs)
    with pytest.raises(ValueError, match="non-empty"):
        fit_spherical_gmm(torch.zeros(0, 3), 2, 0.3)


def test_log_odds_multi_matches_explicit_mixture_densities():
    g = torch.Generator().manual_seed(6)
    d2 = 4.0 * torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    sf, sb = 0.6, 2.5  # mild spreads: the explicit densities do not underflow
    h_f = (w[None, :, None, None] * torch.exp(-d2 / (2 * sf**2))).sum(1) / sf
    h_b = (w[None, :, None, None] * torch.exp(-d2 / (2 * sb**2))).sum(1) / sb
    lo = log_odds_multi(d2, w, sf, sb)
    assert lo.shape == (2, 4, 5)
    torch.testing.assert_close(lo, torch.log(h_f) - torch.log(h_b))
    torch.testing.assert_close(log_odds_multi(d2, 3.0 * w, sf, sb), lo)  # weights' scale cancels
    prior = 0.2
    torch.testing.assert_close(
        posterior_multi(d2, w, sf, sb, prior), prior * h_f / (prior * h_f + (1 - prior) * h_b)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_odds_multi_reduces_to_single_and_stays_finite(dtype):
    d2 = torch.tensor([0.0, 0.5, 2.0, 4.0], dtype=dtype).reshape(1, 1, 2, 2)
    sf, sb = 0.3162, 46.93
    one = log_odds_multi(d2, torch.ones(1), sf, sb)
    torch.testing.assert_close(one, log_odds_density(d2[:, 0], sf, sb))
    same = log_odds_multi(d2.expand(1, 4, 2, 2), torch.tensor([0.1, 0.2, 0.3, 0.4]), sf, sb)
    torch.testing.assert_close(same, one)
    assert one.dtype == dtype and torch.isfinite(one).all()
    assert float(one[0, 1, 1]) == pytest.approx(
        math.log(sb / sf) - 2 * (1 / sf**2 - 1 / sb**2), rel=1e-5
    )
    zero_weight = log_odds_multi(
        torch.cat([d2, torch.zeros_like(d2)], 1), torch.tensor([1.0, 0.0]), sf, sb
    )
    torch.testing.assert_close(zero_weight, one)
