"""Multi-class TPM (Eq. 9), the cached best-class score, and the ADNet++ baseline."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_tpm.tpm import (
    adnetpp_posterior,
    best_class_scores,
    labels_from_best,
    multiclass_log_scores,
    multiclass_posterior,
    multiclass_scores,
    posterior_density,
)

FAST = settings(max_examples=40, deadline=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _d2(seed: int, k: int, dtype=torch.float64, shape=(2, 6, 7)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b, h, w = shape
    return (4.0 * torch.rand(b, k, h, w, generator=g, dtype=torch.float64)).to(dtype)


def _explicit_posterior(d2, sf, sb, prior):
    """Eq. 9 with explicit densities (only valid where nothing underflows)."""
    k = d2.shape[1]
    h_f = torch.exp(-d2 / (2 * sf**2)) / sf
    h_b = torch.exp(-d2 / (2 * sb**2)) / sb
    fg = (prior / k) * h_f
    bg = ((1 - prior) / k) * h_b.sum(1, keepdim=True)
    unnorm = torch.cat([bg, fg], dim=1)
    return unnorm / unnorm.sum(1, keepdim=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_probabilities_sum_to_one_and_match_explicit_densities(dtype, k):
    d2 = _d2(k, k, dtype)
    p = multiclass_posterior(d2, 0.3162, 46.93, 0.4)
    assert p.shape == (2, k + 1, 6, 7) and p.dtype == dtype
    torch.testing.assert_close(p.sum(1), torch.ones(2, 6, 7, dtype=dtype))
    mild = multiclass_posterior(d2.double(), 0.7, 3.0, 0.3)
    torch.testing.assert_close(mild, _explicit_posterior(d2.double(), 0.7, 3.0, 0.3))


def test_one_class_reduces_to_the_binary_posterior():
    d2 = _d2(0, 1)
    for prior in (0.05, 0.5, 0.9):
        p = multiclass_posterior(d2, 0.3162, 46.93, prior)
        torch.testing.assert_close(p[:, 1], posterior_density(d2[:, 0], 0.3162, 46.93, prior))


def test_background_vanishes_as_the_prior_goes_to_one():
    d2 = _d2(1, 3)
    d2[0, :, 0, 0] = 4.0  # as far as possible from every prototype
    sf, sb = 0.3162, 46.93
    bg = [
        float(multiclass_posterior(d2, sf, sb, 1.0 - eps)[0, 0, 0, 0])
        for eps in (1e-9, 1e-12, 1e-15)
    ]
    assert bg[2] < 1e-7
    assert bg[1] / bg[0] == pytest.approx(1e-3, rel=1e-2)  # P(B) ~ (1 - prior) when it is small
    assert bg[2] / bg[1] == pytest.approx(1e-3, rel=1e-2)
    at_one = multiclass_posterior(d2, sf, sb, 1.0)
    assert torch.isfinite(at_one).all() and float(at_one[:, 0].max()) == 0.0
    at_zero = multiclass_posterior(d2, sf, sb, 0.0)
    assert torch.equal(at_zero[:, 0], torch.ones_like(at_zero[:, 0]))
    bg = [float(multiclass_posterior(d2, sf, sb, p)[0, 0, 0, 0]) for p in (0.1, 0.5, 0.9, 0.999)]
    assert bg == sorted(bg, reverse=True)


def test_scores_are_log_ratio_of_own_narrow_to_all_wide_densities():
    d2 = _d2(2, 4)
    sf, sb = 0.8, 2.0
    h_f = torch.exp(-d2 / (2 * sf**2)) / sf
    h_b = torch.exp(-d2 / (2 * sb**2)) / sb
    s = multiclass_log_scores(d2, sf, sb)
    torch.testing.assert_close(s, torch.log(h_f / h_b.sum(1, keepdim=True)))
    assert multiclass_scores is multiclass_log_scores
    index, score = best_class_scores(s)
    assert index.dtype == torch.int64 and index.shape == score.shape == (2, 6, 7)
    assert int(index.min()) >= 0 and int(index.max()) <= 3
    torch.testing.assert_close(score, torch.log(h_f.amax(1) / h_b.sum(1)))


@FAST
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 5),
    priors=st.lists(st.floats(1e-4, 1 - 1e-4), min_size=3, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_thresholding_the_best_score_equals_the_posterior_argmax(seed, k, priors, dtype):
    sf, sb = 0.3162, 46.93
    d2 = _d2(seed, k, dtype)
    d2 = d2 * 0.3  # keep many pixels near the prototypes so every label occurs
    index, score = best_class_scores(multiclass_log_scores(d2, sf, sb))
    for prior in priors:
        expected = multiclass_posterior(d2, sf, sb, prior).argmax(1)
        assert torch.equal(labels_from_best(index, score, prior), expected)


@pytest.mark.parametrize("k", [1, 4])
def test_adnetpp_is_the_max_rule(k):
    sf, sb = 0.3162, 46.93
    d2 = _d2(3, k) * 0.6
    p = adnetpp_posterior(d2, sf, sb)
    assert p.shape == (2, k + 1, 6, 7)
    torch.testing.assert_close(p.sum(1), torch.ones(2, 6, 7, dtype=torch.float64))
    per_class = posterior_density(d2, sf, sb, 0.5)
    best_p, best_k = per_class.max(1)
    expected = torch.where(best_p > 0.5, best_k + 1, torch.zeros_like(best_k))
    assert torch.equal(p.argmax(1), expected)
    assert 0 < int((expected == 0).sum()) < expected.numel()  # both outcomes are exercised
