"""The training objective of TPM / ADNet on one batch of episodes (tpm-method.md sections 5, 6, 9).

`EpisodeModel` wraps the encoder and the one extra learnable number, the softplus parameter
``theta`` of the threshold ``T = softplus(theta) + 2 logit(0.5) - alpha`` (alpha fixed at 20).
Its ``forward`` returns the losses, so that under DistributedDataParallel every parameter,
``theta`` included, takes part in the graph DDP watches.

Losses per episode (section 6):

* segmentation: NLL of the upsampled query posterior, background weighted 0.1, foreground 1,
  PyTorch's weighted mean;
* alignment (PANet's "PAR"): the query's *predicted* foreground gives a prototype that must
  segment the support back (unweighted NLL); skipped when nothing is predicted;
* threshold loss ``T / alpha`` (ADNet mode only): pushes T down, i.e. a tighter foreground ball.

Binary episodes use the working form ``sigmoid((alpha/4)(T_D^2 - D2))``; multi-foreground
episodes the multi-class posterior with the spreads implied by the current T.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from napari_tpm.tpm import (
    ALPHA,
    IDT_CLIP,
    D,
    T_from_theta,
    ideal_distance_threshold,
    log_odds_single,
    masked_average,
    multiclass_posterior,
    sigmas_from_alpha_td,
    squared_distance,
    td_from_T,
)

_EPS = torch.finfo(torch.float32).eps


def class_prototypes(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masked-average prototype of each class mask of ONE episode: ``[1, C, h, w]``,
    ``[K, H, W]`` -> ``[1, K, C]``.

    For one class this is `tpm.masked_average`; for several the features are upsampled once and
    shared by all masks (same numbers, K times less memory than K calls).
    """
    if masks.shape[0] == 1:
        return masked_average(features, masks)[:, None]
    up = F.interpolate(features, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    weights = masks.to(up.dtype)
    total = torch.einsum("bchw,khw->bkc", up, weights)
    return total / weights.sum(dim=(1, 2)).clamp_min(1e-12)[None, :, None]


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, ``align_corners=True`` like the reference's prediction upsampling."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def episode_probabilities(
    d2: torch.Tensor, t_d: torch.Tensor, size: tuple[int, int], alpha: float = ALPHA
) -> torch.Tensor:
    """``[1, K, h, w]`` squared distances -> ``[1, K+1, H, W]`` probabilities (0 = background)."""
    k = d2.shape[1]
    if k == 1:
        p = torch.sigmoid(log_odds_single(d2, t_d, alpha))
        p = _upsample(p, size)
        return torch.cat([1.0 - p, p], dim=1)
    sigma_f, sigma_b = sigmas_from_alpha_td(alpha, t_d, 0.5)
    probs = _upsample(multiclass_posterior(d2, sigma_f, sigma_b, 0.5), size)
    return probs / probs.sum(dim=1, keepdim=True).clamp_min(_EPS)


def nll(probs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None):
    """NLL of clamped probabilities (the reference's ``log(clamp(P, eps, 1 - eps))``)."""
    log_p = torch.log(probs.clamp(_EPS, 1.0 - _EPS))
    return F.nll_loss(log_p, target, weight=weight, ignore_index=-1)


def alignment_loss(
    query_features: torch.Tensor,
    support_features: torch.Tensor,
    query_probs: torch.Tensor,
    support_label: torch.Tensor,
    t_d: torch.Tensor,
    alpha: float = ALPHA,
) -> torch.Tensor | None:
    """Predict the support from prototypes of the query's predicted classes (PANet's PAR).

    Returns None when the query prediction has no foreground. In multi-class episodes the
    support pixels of classes that were not predicted on the query are ignored.
    """
    pred = query_probs.argmax(dim=1)[0]  # [H, W]
    k = query_probs.shape[1] - 1
    present = [c for c in range(1, k + 1) if bool((pred == c).any())]
    if not present:
        return None
    masks = torch.stack([(pred == c) for c in present]).float()
    protos = class_prototypes(query_features, masks)
    d2 = squared_distance(support_features, protos)
    probs = episode_probabilities(d2, t_d, tuple(support_label.shape[-2:]), alpha)
    if len(present) == k:
        target = support_label
    else:
        target = torch.full_like(support_label, -1)
        target[support_label == 0] = 0
        for i, c in enumerate(present):
            target[support_label == c] = i + 1
    return nll(probs, target[None])


class EpisodeModel(nn.Module):
    """Encoder + threshold parameter; ``forward(batch)`` returns the episode losses.

    Args:
        encoder: any `napari_tpm.encoders.Encoder`.
        theta: initial softplus parameter (`tpm.THETA_INIT` gives T = -10, T_D = 1).
        alpha: fixed cosine scale (20).
        bg_weight: NLL weight of the background class.
        align_weight: weight of the alignment loss.
        t_loss_weight: weight of the threshold loss (1 for ADNet, 0 for TPM).
    """

    def __init__(
        self,
        encoder: nn.Module,
        theta: float,
        *,
        alpha: float = ALPHA,
        bg_weight: float = 0.1,
        align_weight: float = 1.0,
        t_loss_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.theta = nn.Parameter(torch.tensor(float(theta)))
        self.alpha = float(alpha)
        self.bg_weight = float(bg_weight)
        self.align_weight = float(align_weight)
        self.t_loss_weight = float(t_loss_weight)

    def threshold(self) -> torch.Tensor:
        """ADNet's T from theta (prior 0.5, d = 1)."""
        return T_from_theta(self.theta, 0.5, self.alpha, D)

    def distance_threshold(self) -> torch.Tensor:
        return td_from_T(self.threshold(), self.alpha)

    def encode_episodes(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(support features, query features) in float32, one encoder pass for both."""
        support, query = batch["support"], batch["query"]
        n = support.shape[0]
        feats = self.encoder(torch.cat([support, query], dim=0))
        return feats[:n].float(), feats[n:].float()

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Losses of a batch of episodes (mean over episodes) and the query IDTs for the EMA."""
        fs, fq = self.encode_episodes(batch)
        query, n = batch["query"], fs.shape[0]
        T = self.threshold()
        t_d = td_from_T(T, self.alpha)
        size = tuple(query.shape[-2:])
        seg_terms, align_terms, idts = [], [], []
        for b in range(n):
            k = int(batch["n_classes"][b])
            masks = batch["support_masks"][b, :k]
            target = batch["query_label"][b : b + 1]
            protos = class_prototypes(fs[b : b + 1], masks)
            d2 = squared_distance(fq[b : b + 1], protos)
            probs = episode_probabilities(d2, t_d, size, self.alpha)
            weight = torch.ones(k + 1, device=probs.device)
            weight[0] = self.bg_weight
            seg_terms.append(nll(probs, target, weight))
            support_label = torch.zeros_like(target[0])
            for c in range(k):
                support_label[masks[c] > 0.5] = c + 1
            align = alignment_loss(fq[b : b + 1], fs[b : b + 1], probs, support_label, t_d)
            if align is not None:
                align_terms.append(align)
            with torch.no_grad():
                d2_up = _upsample(d2[:, :1].detach(), size)
                n_fg = int((target == 1).sum())
                idt = ideal_distance_threshold(d2_up, n_fg, squared=True)
                idts.append(float(idt.clamp(*IDT_CLIP)))
        seg = torch.stack(seg_terms).mean()
        align = (
            torch.stack(align_terms).sum() / n
            if align_terms
            else torch.zeros((), device=seg.device)
        )
        t_loss = T / self.alpha
        loss = seg + self.align_weight * align + self.t_loss_weight * t_loss
        return {
            "loss": loss,
            "seg": seg.detach(),
            "align": align.detach(),
            "t_loss": t_loss.detach(),
            "T": T.detach(),
            "idt": idts,
        }
