"""The mathematics of the Tied Prototype Model: pure torch (estimators: numpy), batched.

Feature maps are ``[B, C, h, w]``, distances are squared chord distances on the unit sphere
``D2 = 2 (1 - cos)`` in [0, 4], and every model is reduced to a *log-odds at prior 0.5* score
``s(x) = log h_F(x) - log h_B(x)`` so that ``P(F|x) = sigmoid(s(x) + logit(pi))`` and the label
at prior ``pi`` is ``s(x) > -logit(pi)``.
"""

from .em import (
    GMMResult,
    fit_spherical_gmm,
    log_odds_multi,
    mixture_log_densities,
    posterior_multi,
)
from .estimators import PRIOR_CLIP, AvgEst, LinEst, clip_prior, estimator_from_dict
from .features import l2_normalize, masked_average, squared_distance, support_pixel_features
from .multiclass import (
    adnetpp_posterior,
    best_class_scores,
    labels_from_best,
    multiclass_log_scores,
    multiclass_posterior,
    multiclass_scores,
)
from .posterior import (
    ALPHA,
    THETA_INIT,
    D,
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
from .thresholds import (
    IDT_CLIP,
    count_at_resolution,
    icp_from_scores,
    icp_multi,
    icp_multiclass,
    icp_single,
    ideal_class_prior,
    ideal_distance_threshold,
    oracle_prior,
    score_threshold,
)

__all__ = [
    "ALPHA",
    "IDT_CLIP",
    "PRIOR_CLIP",
    "THETA_INIT",
    "AvgEst",
    "D",
    "GMMResult",
    "LinEst",
    "T_from_td",
    "T_from_theta",
    "adnet_params_from_sigmas",
    "adnetpp_posterior",
    "best_class_scores",
    "clip_prior",
    "count_at_resolution",
    "estimator_from_dict",
    "fit_spherical_gmm",
    "icp_from_scores",
    "icp_multi",
    "icp_multiclass",
    "icp_single",
    "ideal_class_prior",
    "ideal_distance_threshold",
    "l2_normalize",
    "labels_from_best",
    "log_odds_density",
    "log_odds_multi",
    "log_odds_single",
    "logit",
    "masked_average",
    "mixture_log_densities",
    "multiclass_log_scores",
    "multiclass_posterior",
    "multiclass_scores",
    "oracle_prior",
    "posterior_adnet",
    "posterior_density",
    "posterior_multi",
    "posterior_working",
    "score_threshold",
    "sigmas_from_alpha_td",
    "squared_distance",
    "support_pixel_features",
    "td_from_T",
    "theta_from_T",
]
