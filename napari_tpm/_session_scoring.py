"""The session's scoring maths: prototype fitting, per-class log-odds and calibration.

Plain functions of what they need (the support, the model, a scoring callable), kept out of
``session.py`` so the session reads as the pipeline and caches. The callables are the
session's own bound methods, so a subclass that scores differently (``HeadSession``) is still
the one asked: these functions never score through TPM behind its back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_tpm._session_data import _logit_icp, _pixels, _Support
from napari_tpm.checkpoints import TPMModel
from napari_tpm.options import CLASS_BOUNDARIES
from napari_tpm.postprocess import keep_connected
from napari_tpm.tpm import (
    fit_spherical_gmm,
    l2_normalize,
    log_odds_multi,
    log_odds_single,
    mixture_log_densities,
    squared_distance,
)

#: working pixels around any paint never mined as look-alikes (~5-7 mm on a 256 grid)
MINE_MARGIN = 4
#: fewer mined pixels than this are noise, not a look-alike structure
MINE_MIN_PIXELS = 16
#: ... and more than this share of the painted pixels' count means the look-alikes are not
#: pockets of another tissue but much of the slice (T2 MR's bright organs): their features
#: then overlap the organ's, and as background evidence they push the organ itself out.
#: Chosen on the tuning volumes (BTCV 15-21, CHAOS 21-33; the middle slice, a slice one and two
#: either side and at 15 / 85 % of each organ, 336 paints): ``hard_negatives`` mining every
#: paint's look-alikes 0.883 -> 0.892 (BTCV) and 0.870 -> 0.857 (CHAOS; a left kidney 0.89 ->
#: 0.50); mining only under this share, 0.883 -> 0.891 and 0.870 -> 0.870
#: (benchmarks/RESULTS-accuracy.md, "Look-alikes of the painted slice")
MINE_MAX_SHARE = 0.1
#: a stroke pixel is background evidence only when it lies farther from the paint's
#: prototypes than this quantile of the painted pixels' own distances (:func:`distinct_strokes`)
STROKE_QUANTILE = 0.99

#: one class's prototypes: (means [K, C], weights [K])
Prototype = tuple[torch.Tensor, torch.Tensor]
#: features (B, C, h, w) -> per-class log-odds (B, K, h, w)
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def fit_one(x: torch.Tensor, k: int, sigma_f: float) -> Prototype:
    """(means [K, C], weights [K]) of one class: the masked average or an EM mixture."""
    if k == 1 or x.shape[0] < 2:
        return l2_normalize(x.mean(0, keepdim=True), dim=1), torch.ones(1)
    gmm = fit_spherical_gmm(x, k, sigma_f, seed=0, n_init=3)
    return gmm.means.float(), gmm.weights.float()


def fit_prototypes(
    support: _Support, k: int, sigma_f: float
) -> tuple[list[Prototype], Prototype | None]:
    """Per-class prototypes and the background evidence's mixture (None without any).

    The background evidence is the strokes' pixels that the paint's prototypes do not
    explain (:func:`distinct_strokes`) and the painted slices' mined look-alikes
    (:func:`mine_negatives`).
    """
    prototypes = [fit_one(x, k, sigma_f) for x in support.pixel_features]
    parts = [
        distinct_strokes(support.negative_features, prototypes, support.pixel_features),
        support.mined_features,
    ]
    evidence = [x for x in parts if x is not None and x.shape[0] > 0]
    if not evidence:
        return prototypes, None
    # background strokes often cover several tissues: give them up to 3 modes
    return prototypes, fit_one(torch.cat(evidence), max(k, 3), sigma_f)


def distinct_strokes(
    strokes: torch.Tensor | None,
    prototypes: list[Prototype],
    painted: list[torch.Tensor],
) -> torch.Tensor | None:
    """The stroke pixels (N, C) lying farther from every class's prototypes than the paint.

    A stroke on tissue that looks like the organ (the spleen beside a painted kidney on T2 MR)
    has features nearer the organ's prototypes than many of the painted pixels. As background
    evidence those features outweigh the organ's own wherever the organ looks like them: on
    CHAOS 31 one stroke on the spleen cut the left kidney to its painted slice (Dice 0.78 ->
    0.19). Such a stroke says where the organ is not, which ``options.stroke_regions`` uses; it
    says nothing about how the organ looks. So a stroke pixel is evidence only beyond the
    :data:`STROKE_QUANTILE` of the painted pixels' distances to their own class's prototypes.
    """
    if strokes is None:
        return None
    nearest = torch.full((strokes.shape[0],), float("inf"), device=strokes.device)
    own = []
    for (means, _), pix in zip(prototypes, painted, strict=True):
        nearest = torch.minimum(nearest, _nearest_distance(strokes, means))
        if pix.shape[0]:
            own.append(_nearest_distance(pix, means))
    if not own:
        return strokes
    spread = torch.quantile(torch.cat(own), STROKE_QUANTILE)
    return strokes[nearest > spread]


def _nearest_distance(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Each row of ``x`` (N, C): :func:`squared_distance` to the nearest of ``means``."""
    as_image = x.float().T[None, :, :, None]  # (1, C, N, 1): N pixels of one column
    return squared_distance(as_image, means)[0, :, :, 0].min(0).values


def low_scores(
    model: TPMModel,
    feats: torch.Tensor,
    prototypes: list[Prototype],
    negative: Prototype | None,
) -> torch.Tensor:
    """Per-class log-odds at prior 0.5 for features (B, C, h, w) -> (B, K, h, w)."""
    m = model
    feats = feats.float()
    if len(prototypes) == 1 and negative is None:
        means, weights = prototypes[0]
        d2 = squared_distance(feats, means)
        if means.shape[0] == 1 and m.calibrated:
            s = log_odds_single(d2[:, 0], m.t_d, m.alpha)
        else:
            s = log_odds_multi(d2, weights, m.sigma_f, m.sigma_b)
        return s[:, None]
    # several classes: one prototype (or mixture) per class, background = all wide Gaussians
    # plus, when background strokes were painted, the tight mixture around their features
    per_class = []
    for means, weights in prototypes:
        d2 = squared_distance(feats, means)
        per_class.append(mixture_log_densities(d2, weights, m.sigma_f, m.sigma_b))
    log_f = torch.stack([p[0] for p in per_class], 1)  # (B, K, h, w)
    log_b = torch.logsumexp(torch.stack([p[1] for p in per_class], 1), 1, keepdim=True)
    if negative is not None:
        means, weights = negative
        d2 = squared_distance(feats, means)
        neg_f, _ = mixture_log_densities(d2, weights, m.sigma_f, m.sigma_b)
        log_b = torch.logaddexp(log_b, neg_f[:, None])
    return log_f - log_b


def calibrate(
    support: _Support, painted: torch.Tensor, per_class: str = "shared"
) -> tuple[float, torch.Tensor | None]:
    """(shared offset, per-class offsets or None) so prior 0.5 reproduces the paint.

    The decision boundary is placed where the painted slices' predicted foreground count
    equals the painted count: the ideal class prior of the support itself. ``painted`` is
    :func:`painted_scores`, the uncalibrated log-odds of the painted slices with the
    session's current prototypes. With several classes,
    ``per_class`` says what each class's own painted count does: ``"shared"`` nothing (one
    boundary for all), ``"own"`` each class its own boundary, ``"relax"`` its own boundary
    only where that is looser than the shared one.
    """
    if per_class not in CLASS_BOUNDARIES:
        raise ValueError(f"per_class must be one of {CLASS_BOUNDARIES}, got {per_class!r}")
    s = support
    best = painted.max(1).values
    offset = _logit_icp(best, sum(s.counts_working))
    k = painted.shape[1]
    if k == 1 or per_class == "shared":
        return offset, None
    # each class its own boundary: its painted count on its own scores. One shared offset lets
    # a class with close prototypes (kidney) swallow the others' share, and leaves a class
    # whose painted section looks unlike the rest of it (a liver's tip) too strict.
    per = torch.tensor(
        [_logit_icp(painted[:, c], s.counts_working[c]) - offset for c in range(k)],
        dtype=torch.float32,
    )
    return offset, per.clamp(min=0.0) if per_class == "relax" else per


def slice_offsets(support: _Support, painted: torch.Tensor, pooled: float) -> np.ndarray | None:
    """(S', 2): each painted slice's index and its own boundary relative to ``pooled``; None
    with fewer than two slices holding paint (slices of background strokes only do not count).
    ``painted``: :func:`painted_scores`, as for :func:`calibrate`.

    The pooled boundary reproduces the painted count of all painted slices together. The
    class prior that reproduces one slice's count varies along the organ (the TPM paper's
    LinEst predicts it from the slice's place): where a neighbour that looks like the organ
    lies beside it on one painted slice (the spleen beside a kidney's pole), that slice's
    look-alikes push the pooled boundary up for the whole organ. Each slice's own boundary,
    interpolated between the painted slices, keeps that strictness where it belongs.
    """
    s = support
    with_fg = (s.masks_working > 0).flatten(1).any(1)
    if int(with_fg.sum()) < 2:
        return None
    best = painted.max(1).values  # (S', size, size)
    counts = (s.masks_working[with_fg] > 0).flatten(1).sum(1)
    index = np.asarray(s.indices)[with_fg.numpy()]
    own = [_logit_icp(best[j], int(counts[j])) - pooled for j in range(best.shape[0])]
    return np.stack([index.astype(float), np.asarray(own)], axis=1)


def painted_scores(support: _Support, scores: ScoreFn) -> torch.Tensor:
    """(S', K, size, size) log-odds of the painted slices that hold paint, on the paint's
    grid; slices with only background strokes say nothing about how much is foreground."""
    s = support
    with_fg = (s.masks_working > 0).flatten(1).any(1)
    low = scores(s.features[with_fg])  # (S', K, h, w)
    size = s.masks_working.shape[-1]
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def mine_negatives(support: _Support, scores: ScoreFn) -> bool:
    """Add the painted slices' own false positives to ``support.mined_features``.

    On a painted slice every unpainted pixel is, by the calibration's own assumption, not
    the organ; those that still score as organ (a spleen next to the painted kidney) are
    the look-alikes the prototype will confuse elsewhere. Pixels within ``MINE_MARGIN``
    working pixels of any paint are left out (an imprecise outline is not a look-alike), and
    none are added when they are more than :data:`MINE_MAX_SHARE` of the paint's count.
    ``scores`` gives the calibrated log-odds. Returns whether any were added (then refit and
    recalibrate).
    """
    s = support
    with_fg = (s.masks_working > 0).flatten(1).any(1)
    feats, masks = s.features[with_fg], s.masks_working[with_fg]
    low = scores(feats)  # (S', K, h, w)
    size = masks.shape[-1]
    up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    g = MINE_MARGIN
    near = F.max_pool2d((masks != 0)[:, None].float(), 2 * g + 1, stride=1, padding=g)
    hard = (up.max(1).values > 0) & (near[:, 0] == 0)
    found = int(hard.sum())
    if found < MINE_MIN_PIXELS or found > MINE_MAX_SHARE * int((masks > 0).sum()):
        return False
    mined = _pixels(feats, hard)
    old = s.mined_features
    s.mined_features = mined if old is None else torch.cat([old, mined])
    return True


def refine_gate(low: torch.Tensor, support: _Support) -> torch.Tensor:
    """(n, K, h, w) bool: the first pass's 3D components each class may learn from.

    Only the component(s) touching the paint (same volume) or the largest one (another
    volume's support) pull the prototypes: a look-alike organ elsewhere in the volume would
    otherwise drag the prototype towards itself and spread the error.
    """
    s = support
    best = low.max(1)
    first = ((best.indices + 1) * (best.values > 0)).to(torch.uint8).numpy()
    seeds = np.zeros_like(first)
    if s.same_volume:
        h, w = low.shape[-2:]
        down = F.interpolate(s.masks_working[:, None].float(), size=(h, w), mode="nearest")
        for j, i in enumerate(s.indices):
            seeds[i] = down[j, 0].clamp_min(0).to(torch.uint8).numpy()
    kept = torch.from_numpy(keep_connected(first, seeds, fallback="largest"))
    return torch.stack([kept == c + 1 for c in range(low.shape[1])], 1)


def auto_prior(estimators: Mapping[str, Any] | None, support: _Support, n_prototypes: int) -> float:
    """The class prior a model's AvgEst/LinEst statistics suggest (see ``auto_prior``)."""
    s = support
    est = estimators or {}
    key = "multiclass" if len(s.label_values) > 1 else ("mp" if n_prototypes > 1 else "sp")
    entry = est.get(key) or {}
    loc = s.index / max(s.n_slices - 1, 1)
    if "linest" in entry:
        from napari_tpm.tpm import LinEst

        return float(LinEst.from_dict(entry["linest"]).predict(s.fraction, loc))
    if "avgest" in entry:
        from napari_tpm.tpm import AvgEst

        return float(AvgEst.from_dict(entry["avgest"]).predict())
    return 0.5
