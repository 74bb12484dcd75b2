"""Transductive TPM: EM on the query under the tied model, regularised towards the support."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_tpm.tpm import l2_normalize, squared_distance
from napari_tpm.tpm.transductive import (
    class_posteriors,
    refine_means,
    slice_log_priors,
    transductive_tpm,
)

SIGMA_F, SIGMA_B = 0.3, 1.5


def tied_log_likelihood(feats: torch.Tensor, mu: torch.Tensor, prior: float) -> float:
    """Sum over voxels of log(pi N(x; mu, sf) + (1 - pi) N(x; mu, sb)), d = 1 as in the code."""
    d2 = squared_distance(feats, mu[None])[:, 0]
    log_f = -d2 / (2 * SIGMA_F**2) - math.log(SIGMA_F) + math.log(prior)
    log_b = -d2 / (2 * SIGMA_B**2) - math.log(SIGMA_B) + math.log(1 - prior)
    return float(torch.logaddexp(log_f, log_b).sum())


def tied_scores(feats: torch.Tensor, protos, prior: float) -> torch.Tensor:
    """The session's calibrated log-odds for one class: log h_F - log h_B + logit(prior)."""
    means, _ = protos[0]
    d2 = squared_distance(feats, means)[:, 0]
    s = -d2 / (2 * SIGMA_F**2) + d2 / (2 * SIGMA_B**2) - math.log(SIGMA_F / SIGMA_B)
    return (s + math.log(prior / (1 - prior)))[:, None]


def make_query(seed: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Query features (n, C, h, w): an 'organ' cluster around a centre the support misses."""
    g = torch.Generator().manual_seed(seed)
    c = 8
    true = l2_normalize(torch.randn(c, generator=g), dim=0)
    support = l2_normalize(true + shift * torch.randn(c, generator=g), dim=0)
    feats = torch.randn(4, c, 10, 10, generator=g)
    organ = torch.zeros(4, 10, 10, dtype=torch.bool)
    organ[:, 3:7, 3:7] = True
    feats = torch.where(organ[:, None], true[None, :, None, None] * 6 + feats * 0.5, feats)
    return l2_normalize(feats, dim=1), support


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shift=st.floats(0.0, 1.0),
    prior=st.floats(0.05, 0.95),
)
def test_em_step_never_lowers_the_tied_likelihood(seed, shift, prior):
    feats, support = make_query(seed, shift)
    protos = [(support[None], torch.ones(1))]
    before = tied_log_likelihood(feats, support, prior)
    resp = class_posteriors(tied_scores(feats, protos, prior))[:, 0]
    mu = refine_means(feats, resp, support[None], 1.0, 0.0, SIGMA_F, sigma_b=SIGMA_B)[0]
    after = tied_log_likelihood(feats, mu, prior)
    assert after >= before - 1e-3 * abs(before)


def test_iterations_move_the_prototype_towards_the_query_organ():
    feats, support = make_query(3, 0.8)
    organ_mean = l2_normalize(feats[:, :, 3:7, 3:7].mean((0, 2, 3)), dim=0)
    protos = [(support[None], torch.ones(1))]
    result = transductive_tpm(
        feats,
        protos,
        [16],
        lambda f, p: tied_scores(f, p, 0.3),
        sigma_f=SIGMA_F,
        sigma_b=SIGMA_B,
        n_iter=3,
        support_weight=0.0,
        slice_priors=False,
    )
    new = result.prototypes[0][0][0]
    assert float(new @ organ_mean) > float(support @ organ_mean)


def test_no_query_evidence_gives_back_the_support_prototypes():
    feats, support = make_query(1, 0.5)
    mixture = l2_normalize(torch.stack([support, torch.roll(support, 1)]), dim=1)
    protos = [(mixture, torch.tensor([0.5, 0.5]))]
    gate = torch.zeros(4, 1, 10, 10, dtype=torch.bool)  # nothing in the query may pull
    result = transductive_tpm(
        feats,
        protos,
        [16],
        lambda f, p: tied_scores(f, [(p[0][0][:1], None)], 0.3),
        sigma_f=SIGMA_F,
        sigma_b=SIGMA_B,
        n_iter=2,
        gate=gate,
        slice_priors=False,
    )
    assert torch.allclose(result.prototypes[0][0], mixture, atol=1e-6)


def test_slice_priors_follow_where_the_organ_is():
    resp = torch.zeros(5, 1, 4, 4)
    resp[2] = 0.9
    bias = slice_log_priors(resp, smoothing=0.0)
    assert bias[2, 0] > 0 > bias[0, 0]
    assert torch.isclose(bias[0, 0], bias[4, 0])
