"""The session's query views and their encoding: the one expensive stage, cached per axis.

:class:`EncodingSteps` is a mixin of :class:`napari_tpm.session.SegmentationSession`: the query
volume normalised once, its slice views along each axis resampled to the working grid, and
their features, encoded on first use and kept for the session (painting again never
re-encodes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_tpm import axial_frame
from napari_tpm._session_data import (
    WORKING_SIZE,
    _encode_slices,
    _make_view,
    _outward_batches,
    _Volume,
)
from napari_tpm.position_weight import reweight
from napari_tpm.preprocess import guess_modality, normalise_intensity
from napari_tpm.progress import Progress

if TYPE_CHECKING:
    from napari_tpm.checkpoints import TPMModel


class EncodingSteps:
    """Query image -> normalised slice views -> cached features."""

    # provided by SegmentationSession
    model: TPMModel
    device: torch.device
    batch_size: int
    encoder_calls: int
    _spacing: tuple[float, float, float]
    _modality: str
    _views: dict[int, _Volume]
    _normalised: np.ndarray | None
    position_scale: float

    if TYPE_CHECKING:

        def _require_image(self) -> np.ndarray: ...

    @property
    def _working_mm(self) -> float | None:
        """The encoder's fixed working pixel size in mm, if it asks for one."""
        return getattr(self.model.encoder, "working_mm", None)

    def _is_ct(self) -> bool:
        """Whether the query is CT: the modality set, or the one its values show."""
        if self._modality != "auto":
            return self._modality == "ct"
        return guess_modality(self._require_image()) == "ct"

    def _view(self, axis: int) -> _Volume:
        """The query volume along ``axis``, normalised once and built on first use."""
        if axis not in self._views:
            image = self._require_image()
            if self._normalised is None:
                self._normalised = normalise_intensity(
                    image, modality=self._modality, method=self.model.normalisation
                )
            frame = next((v.frame for v in self._views.values() if v.frame is not None), None)
            self._views[axis] = self._cut(self._normalised, self._spacing, axis, frame=frame)
        return self._views[axis]

    def _cut(
        self,
        normalised: np.ndarray,
        spacing: tuple[float, float, float],
        axis: int,
        only: tuple[int, ...] | None = None,
        frame: np.ndarray | None = None,
    ) -> _Volume:
        """``normalised`` seen along ``axis`` (``only`` those slices), on the encoder's grid.

        Along axis 1 or 2, the filter bank's view takes the axial frame
        (:mod:`napari_tpm.axial_frame`): the axis-0 slices' body boxes for its position
        channels (``frame``, when they are at hand), and the axis-0 view's working pixel size,
        so its scales span the same millimetres as on the axial slices. Along axis 0 it takes
        the same boxes for its own slices, a box edge that jumped put back
        (:func:`napari_tpm.axial_frame.mend_boxes`).
        """
        mm = self._working_mm
        framed = axial_frame.supports(self.model.encoder)
        moved = axis != 0 and framed
        if moved and mm is None:
            mm = axial_frame.working_mm(normalised.shape, spacing, WORKING_SIZE)
        view = _make_view(normalised, spacing, axis, only=only, mm=mm)
        if moved:
            view.frame = frame if frame is not None else self._axial_boxes(normalised, spacing)
        elif framed:  # the axial view: its own slices' boxes, an edge that jumped put back
            boxes = self._axial_boxes(normalised, spacing, view if only is None else None)
            view.frame = boxes if only is None else boxes[list(only)]
        return view

    def _axial_boxes(
        self,
        normalised: np.ndarray,
        spacing: tuple[float, float, float],
        axial: _Volume | None = None,
    ) -> np.ndarray:
        """The body boxes of ``normalised``'s axis-0 slices, an edge that jumped along that
        axis put back (:func:`napari_tpm.axial_frame.mend_boxes`): the frame of every view's
        position channels (:mod:`napari_tpm.axial_frame`). ``axial``: that volume's whole
        axial view, when it is at hand (a view of some slices only is not)."""
        if axial is None and normalised is self._normalised:
            axial = self._views.get(0)
            if axial is not None and axial.frame is not None:
                return axial.frame
        if axial is None:
            axial = _make_view(normalised, spacing, 0, mm=self._working_mm)
        boxes = axial_frame.axial_boxes(
            axial.slices, axial.grid, axial.pad_value, self.model.encoder
        )
        return axial_frame.mend_boxes(boxes, float(spacing[0]))

    def _encode(self, view: _Volume, indices: np.ndarray) -> None:
        """Encode the slices of ``view`` listed in ``indices`` that are not cached yet."""
        self.encoder_calls += _encode_slices(view, indices, self.model.encoder, self.device)

    def encode(self, axis: int = 0, *, start: int | None = None) -> Iterator[Progress]:
        """Encode every slice along ``axis`` (generator). Features stay cached for the session."""
        view = self._view(axis)
        n = view.slices.shape[0]
        for lo, hi in _outward_batches(n, n // 2 if start is None else start, self.batch_size):
            self._encode(view, np.arange(lo, hi))
            yield Progress(int(view.encoded.sum()), n, "encode", (lo, hi))

    def _slice_features(self, view: _Volume, index: int) -> torch.Tensor:
        """(1, C, h, w) float32 features of slice ``index`` of ``view``, encoded if need be."""
        self._encode(view, np.array([index]))
        return self._weighted(view.features[index : index + 1]).float()

    def _weighted(self, features: torch.Tensor) -> torch.Tensor:
        """Cached features as the scoring reads them: the filter bank's position channels
        weighted for the painted organ's size (:mod:`napari_tpm.position_weight`), in the
        cache's dtype, so a batch and the whole volume read alike; the cache itself stays
        unweighted, so other paint never re-encodes."""
        position = self.model.encoder.group_channels("position")
        return reweight(features, position, self.position_scale).to(features.dtype)

    def _weighted_view(self, view: _Volume) -> torch.Tensor | None:
        """All of ``view``'s features weighted as :meth:`_weighted` does, kept on the view for
        the current scale (float16, as the cache): the refinement and every later rescoring
        (``set_prototypes``) read the whole volume, and reweighting it on each read cost
        0.3-0.9 s on a 512 x 512 x 150 CT. None while slices are still to be encoded."""
        if view.features is None or not view.encoded.all():
            return None
        scale = self.position_scale
        if view.weighted is None or view.weighted[0] != scale:
            view.weighted = (scale, self._weighted(view.features))
        return view.weighted[1]
