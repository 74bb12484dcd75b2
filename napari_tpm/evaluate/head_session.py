"""Scoring with a compared head (``train --head dspnet|mper``) in the evaluation protocols.

`HeadSession` is a `SegmentationSession` whose one-class scores come from the checkpoint's head
(`napari_tpm.tpm.heads`) instead of TPM's tied Gaussians: the head is prepared once from the
cached support features and the painted mask, then scores every query batch as log-odds at
prior 0.5, so CE-T (threshold 0), OCP and the Dice-vs-prior curve read it like TPM's scores.
Everything else (encoding, caching, upsampling to the native grid) is the session's own.
Several painted classes, background strokes and the refinement passes fall back to TPM.
"""

from __future__ import annotations

import torch

from napari_tpm.checkpoints import TPMModel, load_model
from napari_tpm.session import SegmentationSession, resolve_device

from .common import Options, SessionFactory


class HeadSession(SegmentationSession):
    """A session that scores one painted class with ``model.head``."""

    scores_with_head = True

    _head_state: dict[str, torch.Tensor] | None = None

    def _fit_prototypes(self, k: int) -> None:
        super()._fit_prototypes(k)
        self._head_state = None
        s = self._support
        head = self.model.head
        if head is None or s is None or len(s.label_values) != 1 or self._negative is not None:
            return
        with torch.no_grad():
            mask = (s.masks_working == 1).float()
            self._head_state = head.prepare(s.features.float().to(self.device), mask)

    def _low_scores(self, feats: torch.Tensor, prototypes=None) -> torch.Tensor:
        own = prototypes is None or prototypes is self._prototypes
        if self._head_state is None or not own:
            return super()._low_scores(feats, prototypes)
        with torch.no_grad():
            scores = self.model.head.score(self._head_state, feats.float().to(self.device))
        return scores[:, None].float().cpu()


def head_name(model: TPMModel) -> str:
    """ "tpm", or the kind of the model's compared head."""
    head = getattr(model, "head", None)
    return "tpm" if head is None else str(head.kind)


def session_factory(options: Options) -> SessionFactory:
    """Like `common.default_session_factory`, with `HeadSession` for checkpoints with a head."""

    def make(checkpoint: str) -> SegmentationSession:
        model = load_model(checkpoint, device=resolve_device(options.device))
        cls = HeadSession if model.head is not None else SegmentationSession
        return cls(model, options.device, batch_size=options.batch_size, options=options.segment)

    return make


__all__ = ["HeadSession", "head_name", "session_factory"]
