"""The auto prior: where a session's boundary sits before the user moves the slider.

:class:`AutoPrior` is a mixin of :class:`napari_tpm.session.SegmentationSession` (through
:class:`napari_tpm._session_output.SessionOutputs`): the calibration (or a trained model's
estimators), the floor under another volume's first pass, the second pass's outward shift, and
the tip shifts for paint near an organ's end (one class on the auto prior, several classes each
on its own boundary; :mod:`napari_tpm.paint_position`). Its only state is what it measures on
first use, caches the scoring stages reset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_tpm import bootstrap
from napari_tpm._session_data import _Support
from napari_tpm._session_scoring import auto_prior
from napari_tpm.checkpoints import TPMModel
from napari_tpm.footprint import Footprint, pixel_area
from napari_tpm.options import SegmentOptions
from napari_tpm.paint_position import side_balance, tip_logit_shift
from napari_tpm.tpm.posterior import logit, sigmoid


class AutoPrior:
    """The auto prior and the tip shifts of a session's current scores."""

    # filled by SegmentationSession (see its __init__ for what each holds)
    model: TPMModel
    options: SegmentOptions
    n_prototypes: int
    _spacing: tuple[float, float, float]
    _low: torch.Tensor | None
    _score: np.ndarray | None
    _paint_footprints: dict[int, Footprint]
    _tip_cache: float | None  # the tip shift of the current scores (None: not measured yet)
    _tip_labels: tuple[float, np.ndarray] | None  # (prior, labels) at the auto prior, reused
    _class_tips: np.ndarray | None  # per class: the tip shifts of several classes on one slice
    _fill_memo: dict[int, np.ndarray] | None  # the concavity fill's pixels at the auto prior
    _fill_pending: dict[int, np.ndarray] | None  # ... a tip measurement's, until known auto
    _measuring_tips: bool
    _floor_cache: tuple[float, float] | None  # (calibrated, floored) prior of the scores
    bootstrapped: bool

    if TYPE_CHECKING:

        def _require_support(self) -> _Support: ...

        def labels(self, prior: float | None = None, **kwargs: object) -> np.ndarray: ...

    def auto_prior(self) -> float:
        """The class prior the model suggests for this support.

        Trained checkpoints carry AvgEst/LinEst statistics (tpm-method.md §7.2): LinEst from the
        support's painted fraction and slice location when it was fitted for this number of
        prototypes, else AvgEst, else 0.5 (the learned threshold, "CE-T"). A model without
        statistics is calibrated on the support slice itself, where 0.5 is the natural choice.
        After a second pass (:attr:`bootstrapped`) the support is a core of the first result,
        so the boundary moves out by :data:`napari_tpm.bootstrap.CORE_LOGIT_SHIFT`. One slice
        painted near the organ's end moves it out too (``options.tip_shift``,
        :mod:`napari_tpm.paint_position`); the first call after a segmentation measures that
        on the result at the calibrated prior (one :meth:`labels`), later calls reuse it.
        """
        p = self._calibrated_prior()
        return self._moved_out(p, 0.0 if self.bootstrapped else self._tip_shift(p))

    def auto_prior_preview(self) -> float:
        """:meth:`auto_prior` without labelling the volume: exact, except while one slice painted
        near the organ's end still awaits its tip-shift measurement, where it is the calibrated
        prior (the auto prior of paint mid-organ, the usual case). A dock draws the displayed
        slice at it while the exact value is measured."""
        p = self._calibrated_prior()
        return self._moved_out(p, self._tip_cache or 0.0)  # None (not measured): no shift

    def _moved_out(self, p: float, tip_shift: float) -> float:
        """The prior ``p`` with the second pass's shift, or else ``tip_shift`` (log-odds)."""
        if self.bootstrapped:
            return sigmoid(float(logit(p)) + bootstrap.CORE_LOGIT_SHIFT)
        return p if tip_shift == 0.0 else sigmoid(float(logit(p)) + tip_shift)

    @property
    def auto_prior_moved(self) -> bool:
        """Whether :meth:`auto_prior` stands away from the support's own calibration: after a
        second pass, or for paint near the organ's end. A dock then places its manual slider
        there, as the CLI's ``--prior auto`` has it."""
        return abs(self.auto_prior() - self._calibrated_prior()) > 1e-9

    def _tips_apply(self, *, several: bool) -> bool:
        """Whether a tip shift is measured: paint on this volume, on one slice, of one class
        (``several``: of several), not a second pass's, and a model that calibrates on the
        support slice (a learned threshold or LinEst already knows the slice's place)."""
        s = self._require_support()
        return (
            self.options.tip_shift > 0
            and s.same_volume
            and len(s.indices) == 1
            and (len(s.label_values) > 1) == several
            and not self.bootstrapped
            and not self.model.calibrated
            and not self.model.estimators
            and self._low is not None
        )

    def _measuring_labels(self, calibrated: float) -> np.ndarray:
        """``labels(calibrated)`` for a tip measurement: the auto prior is not known while it
        runs, so what its concavity fill adds waits in ``_fill_pending``."""
        self._measuring_tips = True
        try:
            return self.labels(calibrated)
        finally:
            self._measuring_tips = False

    def _keep_pending_fill(self, auto: bool) -> None:
        """The measurement's fill record becomes the auto labelling's when ``auto`` (no
        shift: its labels are the auto labels)."""
        if auto and self._fill_pending is not None:
            self._fill_memo = self._fill_pending
        self._fill_pending = None

    def _tip_shift(self, calibrated: float) -> float:
        """The outward shift for one slice painted near the organ's end (0: none applies,
        :meth:`_tips_apply`)."""
        s = self._require_support()
        if not self._tips_apply(several=False):
            return 0.0
        if self._tip_cache is None:
            labelled = self._measuring_labels(calibrated)
            balance = side_balance(np.moveaxis(labelled, s.axis, 0), s.indices)
            self._tip_cache = tip_logit_shift(balance, self.options.tip_shift)
            # no shift (paint mid-organ, the usual case): the auto labels are these ones, so
            # the caller's labels(None) reuses them instead of labelling the volume twice
            self._tip_labels = (calibrated, labelled) if self._tip_cache == 0.0 else None
            self._keep_pending_fill(self._tip_cache == 0.0)
        return self._tip_cache

    def _class_tip_shifts(self) -> np.ndarray | None:
        """Per class, the outward shift (log-odds) for several classes painted on one slice,
        each measured on its own result (None: not several classes on one slice of this
        volume, or a model that does not calibrate on the support)."""
        s = self._require_support()
        if not self._tips_apply(several=True):
            return None
        if self._class_tips is None:
            calibrated = self._calibrated_prior()
            self._class_tips = np.zeros(len(s.label_values), dtype=np.float32)  # measure unshifted
            labelled = self._measuring_labels(calibrated)
            moved = np.moveaxis(labelled, s.axis, 0)
            self._class_tips = np.array(
                [
                    tip_logit_shift(side_balance(moved == v, s.indices), self.options.tip_shift)
                    for v in s.label_values
                ],
                dtype=np.float32,
            )
            # no shift (every class painted mid-organ): the caller's labels(None) reuses these
            self._tip_labels = None if self._class_tips.any() else (calibrated, labelled)
            self._keep_pending_fill(not self._class_tips.any())
        return self._class_tips

    def _calibrated_prior(self) -> float:
        """:meth:`auto_prior` without the second pass's shift: where the calibration (or the
        model's estimators) put the boundary for the support as it is. For one organ painted
        on another volume, before the second pass, no stricter than lets a region of the
        organ's size show (:func:`napari_tpm.bootstrap.count_floor_prior`); several classes
        painted on one slice (each searched alone first) keep the calibration: the floor was
        measured for one organ only (RESULTS-accuracy.md, "A floor under the first pass")."""
        s = self._require_support()
        p = auto_prior(self.model.estimators, s, self.n_prototypes)
        if s.same_volume or self.bootstrapped or len(s.label_values) != 1 or self._score is None:
            return p
        target = self._paint_footprints.get(s.label_values[0])
        if target is None or not target.widest:
            return p
        if self._floor_cache is None or self._floor_cache[0] != p:
            floor = bootstrap.count_floor_prior(
                self._score,
                p,
                target.area_mm2,
                pixel_area(self._spacing, s.axis),
                float(self._spacing[s.axis]),
            )
            self._floor_cache = (p, floor)
        return self._floor_cache[1]
