"""Episode losses for the compared heads (``train --head dspnet|mper``, `napari_tpm.tpm.heads`).

`HeadEpisodeModel` is `EpisodeModel` with the TPM posterior replaced by a head's log-odds; the
rest of the objective is the same (section 6 of tpm-method.md):

* segmentation: NLL of the upsampled query posterior ``sigmoid(log-odds)``, background 0.1,
  foreground 1 (a head with two branches, MPER, takes the mean of the branches' NLLs);
* alignment (PAR): the head, given the query and its predicted foreground as the support,
  must segment the support back; skipped when nothing is predicted;
* the head's own loss (MPER: the branches' consistency).

``theta`` stays in the model so checkpoints and the training-time EMAs keep their meaning, but a
head does not use it: the learned threshold of a head checkpoint is its initial value. The
query's ideal distance threshold (for the EMA) is still computed from the plain prototype.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from napari_tpm.tpm import IDT_CLIP, ideal_distance_threshold, squared_distance, td_from_T
from napari_tpm.train.losses import EpisodeModel, _upsample, class_prototypes, nll


def _probs(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[1, h, w]`` log-odds -> ``[1, 2, H, W]`` (background, foreground) probabilities."""
    p = _upsample(torch.sigmoid(logits)[:, None], size)
    return torch.cat([1.0 - p, p], dim=1)


class HeadEpisodeModel(EpisodeModel):
    """Encoder + head (+ the unused theta); ``forward(batch)`` returns the episode losses."""

    def __init__(self, encoder: nn.Module, head: nn.Module, theta: float, **kwargs: Any):
        super().__init__(encoder, theta, **kwargs)
        self.head = head

    def _seg(self, outputs: list[torch.Tensor], target: torch.Tensor, weight) -> torch.Tensor:
        size = tuple(target.shape[-2:])
        return torch.stack([nll(_probs(lo, size), target, weight) for lo in outputs]).mean()

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        fs, fq = self.encode_episodes(batch)
        query, n = batch["query"], fs.shape[0]
        T = self.threshold()
        size = tuple(query.shape[-2:])
        seg_terms, align_terms, aux_terms, idts = [], [], [], []
        weight = torch.tensor([self.bg_weight, 1.0], device=fs.device)
        for b in range(n):
            if int(batch["n_classes"][b]) != 1:
                raise ValueError("the compared heads train on binary episodes (max_classes 1)")
            mask = batch["support_masks"][b, 0]
            target = batch["query_label"][b : b + 1]
            outputs, aux = self.head.train_outputs(fs[b : b + 1], mask, fq[b : b + 1])
            seg_terms.append(self._seg(outputs, target, weight))
            if aux is not None:
                aux_terms.append(aux)
            logits = torch.stack(outputs).mean(0)
            pred = _upsample(logits.detach()[:, None], size)[0, 0] > 0
            if bool(pred.any()):
                back, _ = self.head.train_outputs(fq[b : b + 1], pred.float(), fs[b : b + 1])
                s_label = (mask > 0.5).long()[None]
                align_terms.append(self._seg(back, s_label, None))
            with torch.no_grad():
                d2 = squared_distance(fq[b : b + 1], class_prototypes(fs[b : b + 1], mask[None]))
                n_fg = int((target == 1).sum())
                idt = ideal_distance_threshold(_upsample(d2[:, :1], size), n_fg, squared=True)
                idts.append(float(idt.clamp(*IDT_CLIP)))
        zero = torch.zeros((), device=fs.device)
        seg = torch.stack(seg_terms).mean()
        align = torch.stack(align_terms).sum() / n if align_terms else zero
        extra = torch.stack(aux_terms).mean() if aux_terms else zero
        loss = seg + self.align_weight * align + extra
        return {
            "loss": loss,
            "seg": seg.detach(),
            "align": align.detach(),
            "t_loss": extra.detach(),  # the CSV's third column: the head's own loss
            "T": T.detach(),
            "idt": idts,
            "t_d": td_from_T(T.detach(), self.alpha),
        }


def episode_model(model, encoder: nn.Module, theta: float, head: str, **kwargs: Any):
    """The training objective for ``--head``: `EpisodeModel` (tpm) or `HeadEpisodeModel`.

    A head is created on ``model`` (``model.head``, saved with it) unless it already has one of
    that kind, e.g. when fine-tuning a head checkpoint.
    """
    from napari_tpm.tpm.heads import build_head

    current = getattr(model, "head", None)
    if head == "tpm":
        if current is not None:
            raise ValueError(f"this model has a {current.kind!r} head; train it with --head")
        return EpisodeModel(encoder, theta, **kwargs)
    if current is None:
        model.head = build_head(head, encoder.out_channels)
    elif current.kind != head:
        raise ValueError(f"this model has a {current.kind!r} head, not {head!r}")
    return HeadEpisodeModel(encoder, model.head, theta, **kwargs)
