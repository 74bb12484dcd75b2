"""IDT / ICP / OCP: the chosen prior must select exactly the true number of pixels."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_tpm.tpm import (
    ALPHA,
    best_class_scores,
    count_at_resolution,
    icp_from_scores,
    icp_multi,
    icp_multiclass,
    icp_single,
    ideal_class_prior,
    ideal_distance_threshold,
    labels_from_best,
    log_odds_multi,
    log_odds_single,
    logit,
    multiclass_log_scores,
    oracle_prior,
    score_threshold,
)

FAST = settings(max_examples=50, deadline=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _distances(seed: int, shape=(9, 11), dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (2.0 * torch.rand(*shape, generator=g, dtype=torch.float64)).to(dtype)


@FAST
@given(
    seed=st.integers(0, 10_000),
    frac=st.floats(0.0, 1.0),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_idt_selects_exactly_n_fg(seed, frac, dtype):
    d = _distances(seed, dtype=dtype)
    n_fg = round(frac * d.numel())
    idt = ideal_distance_threshold(d, n_fg)
    assert idt.shape == () and idt.dtype == dtype
    assert int((d < idt).sum()) == n_fg
    idt2 = ideal_distance_threshold(d**2, n_fg, squared=True)
    assert int((d**2 < idt2**2).sum()) == n_fg  # returned as a distance, not squared


def test_idt_is_the_midpoint_of_ranks_n_minus_1_and_n():
    d = torch.tensor([0.9, 0.1, 0.5, 0.3])
    assert float(ideal_distance_threshold(d, 2)) == pytest.approx(0.4)  # (0.3 + 0.5) / 2
    assert float(ideal_distance_threshold(d, 0)) == pytest.approx(0.0)  # 0.1 - 0.1, clamped
    assert float(ideal_distance_threshold(d, 4)) == pytest.approx(1.1)  # 0.9 + 0.4 / 2


def test_idt_ends_select_nothing_and_everything_even_at_the_extremes():
    d = torch.tensor([0.0, 0.0, 2.0, 2.0])
    assert int((d < ideal_distance_threshold(d, 0)).sum()) == 0
    assert int((d < ideal_distance_threshold(d, 4)).sum()) == 4
    one = torch.tensor([0.7])
    assert int((one < ideal_distance_threshold(one, 1)).sum()) == 1
    with pytest.raises(ValueError, match="counts"):
        ideal_distance_threshold(d, 5)
    with pytest.raises(ValueError, match="counts"):
        ideal_distance_threshold(d, -1)


@FAST
@given(
    seed=st.integers(0, 10_000),
    frac=st.floats(0.0, 1.0),
    t_d=st.floats(0.3, 1.4),
    alpha=st.sampled_from([ALPHA, 7.5]),
)
def test_single_icp_moves_the_boundary_to_the_idt(seed, frac, t_d, alpha):
    d = _distances(seed)
    d2 = d**2
    n_fg = round(frac * d.numel())
    prior = icp_single(d2, n_fg, t_d, alpha)
    assert 0.0 <= float(prior) <= 1.0
    idt = ideal_distance_threshold(d, n_fg)
    if 0.0 < float(prior) < 1.0:
        # the posterior crosses 0.5 exactly at the IDT ...
        at_idt = log_odds_single(idt**2, t_d, alpha) + logit(prior)
        p = float(prior)  # rounding p costs ~eps / (p (1 - p)) in logit(p)
        assert abs(float(at_idt)) < 1e-9 + 1e-15 / (p * (1 - p))
        # ... so exactly n_fg pixels are foreground
        assert int((log_odds_single(d2, t_d, alpha) + logit(prior) > 0).sum()) == n_fg
    assert float(ideal_class_prior(idt, t_d, alpha)) == pytest.approx(float(prior))
    assert ideal_class_prior(t_d, t_d, alpha) == 0.5  # IDT == T_D needs no shift


@FAST
@given(
    seed=st.integers(0, 10_000),
    frac=st.floats(0.0, 1.0),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_icp_from_scores_selects_exactly_n_fg(seed, frac, dtype):
    g = torch.Generator().manual_seed(seed)
    scores = (30.0 * torch.rand(2, 8, 8, generator=g, dtype=torch.float64) - 20.0).to(dtype)
    n_fg = round(frac * scores.numel())
    prior = icp_from_scores(scores, n_fg)
    assert prior.dtype == torch.float64 and 0.0 < float(prior) < 1.0
    assert int((scores > -logit(prior)).sum()) == n_fg
    assert int((scores > score_threshold(scores, n_fg)).sum()) == n_fg


def test_single_icp_agrees_in_count_with_the_generic_score_icp():
    d2 = _distances(3) ** 2
    for n_fg in (0, 1, 17, 50, 99):
        generic = icp_from_scores(log_odds_single(d2, 1.0), n_fg)
        distance_space = icp_single(d2, n_fg, 1.0)
        for prior in (generic, distance_space):
            assert int((log_odds_single(d2, 1.0) + logit(prior) > 0).sum()) == n_fg


@pytest.mark.parametrize("n_fg", [0, 5, 40, 84])
def test_multi_prototype_and_multiclass_icps_select_exactly_n_fg(n_fg):
    g = torch.Generator().manual_seed(n_fg)
    d2 = 1.5 * torch.rand(1, 4, 7, 12, generator=g, dtype=torch.float64)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    sf, sb = 0.3162, 46.93
    prior = icp_multi(d2, w, sf, sb, n_fg)
    assert int((log_odds_multi(d2, w, sf, sb) + logit(prior) > 0).sum()) == n_fg
    prior_mc = icp_multiclass(d2, sf, sb, n_fg)
    index, score = best_class_scores(multiclass_log_scores(d2, sf, sb))
    assert int((labels_from_best(index, score, prior_mc) > 0).sum()) == n_fg


def test_oracle_prior_is_per_slice():
    g = torch.Generator().manual_seed(9)
    scores = 20.0 * torch.rand(5, 6, 6, generator=g) - 10.0
    counts = [0, 3, 18, 35, 36]
    priors = oracle_prior(scores, counts)
    assert priors.shape == (5,) and priors.dtype == torch.float64
    for s, n in enumerate(counts):
        assert int((scores[s] > -logit(priors[s])).sum()) == n
        assert float(priors[s]) == pytest.approx(float(icp_from_scores(scores[s], n)))
    with pytest.raises(ValueError, match="one count per slice"):
        oracle_prior(scores, counts[:4])


def test_count_at_resolution_scales_by_area():
    assert count_at_resolution([0, 64, 100, 65536], (256, 256), (32, 32)).tolist() == [
        0,
        1,
        2,
        1024,
    ]
    assert int(count_at_resolution(5, (32, 32), (256, 256))) == 320
