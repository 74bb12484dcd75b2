"""What the session records about the user's own paint before it segments from it.

:class:`PaintIntake` is a mixin of :class:`napari_tpm.session.SegmentationSession`. Before the
first pass, paint on this volume that covers only part of its organ is completed to the organ's
section (``options.complete_paint``, :func:`napari_tpm._session_support.complete_paint`), and the
painted sections' areas are kept: the front ends warn about small ones and the position weight
scales with them. A second pass's pseudo-paint is none of the user's, so it never comes here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_tpm._session_support import complete_paint
from napari_tpm._threads import one_cpu_thread
from napari_tpm.paint_size import section_areas, small_among
from napari_tpm.position_weight import position_scale
from napari_tpm.support import SupportSlices, plane_spacing

if TYPE_CHECKING:
    from napari_tpm._session_data import _Volume
    from napari_tpm.options import SegmentOptions


class PaintIntake:
    """The user's paint -> completed paint, and what front ends report about it."""

    # provided by SegmentationSession and its other mixins
    options: SegmentOptions
    device: torch.device
    _spacing: tuple[float, float, float]
    _negative: tuple[torch.Tensor, torch.Tensor] | None

    if TYPE_CHECKING:

        def _view(self, axis: int) -> _Volume: ...
        def _encode(self, view: _Volume, indices: np.ndarray) -> None: ...
        def _stroke_scores(self, feats: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor: ...

    def _init_paint_reports(self) -> None:
        #: per label value, the painted slices where the last segment() completed paint that
        #: covered part of the organ (``options.complete_paint``)
        self.completed: dict[int, tuple[int, ...]] = {}
        #: per painted structure, its largest section (mm²; None: a stroke), of the user's
        #: paint (:func:`napari_tpm.paint_size.section_areas`)
        self.section_areas: dict[int, float | None] = {}
        #: per label value painted only on sections under
        #: :data:`napari_tpm.paint_size.SMALL_SECTION_MM2`, its largest section (mm²), for the
        #: last segment(): front ends warn (:func:`napari_tpm.paint_size.small_section_message`)
        self.small_sections: dict[int, float] = {}
        #: the factor on the filter bank's position weight for the last segment()'s paint
        #: (``options.scale_position``, :func:`napari_tpm.position_weight.position_scale`)
        self.position_scale = 1.0

    def _take_user_paint(
        self, paint: np.ndarray, parsed: SupportSlices, same_volume: bool
    ) -> np.ndarray:
        """The user's paint as the run uses it: completed where it covered part of its organ
        (paint on this volume only: another volume's is placed by its own search)."""
        self.completed = {}
        if same_volume and self.options.complete_paint:
            paint, self.completed = self._complete_paint(paint, parsed)
        return paint

    def _note_sections(
        self, paint: np.ndarray, parsed: SupportSlices, spacing: tuple[float, ...]
    ) -> None:
        """Record the painted sections' areas, the small ones and the position weight's factor."""
        self.section_areas = areas = section_areas(paint, parsed, spacing)
        self.small_sections = small_among(areas)
        self.position_scale = position_scale(areas) if self.options.scale_position else 1.0

    def _complete_paint(
        self, paint: np.ndarray, parsed: SupportSlices
    ) -> tuple[np.ndarray, dict[int, tuple[int, ...]]]:
        """``options.complete_paint``: paint on this volume that covers part of its organ
        completed on its slice (:func:`complete_paint`), from the painted slices' own
        features (unweighted: the position weight follows from the completed sections)."""
        view = self._view(parsed.axis)
        idx = np.asarray(parsed.indices)
        self._encode(view, idx)
        self._negative = None  # no earlier paint's background strokes score the new paint
        plane_mm = plane_spacing(self._spacing, parsed.axis)
        feats = view.features[torch.from_numpy(idx)].float()
        with one_cpu_thread(self.device):
            return complete_paint(
                paint, parsed, view.slices[idx], feats, view.grid, plane_mm, self._stroke_scores
            )
