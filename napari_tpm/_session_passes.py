"""The passes after the first scoring: transductive refinement, 3D smoothing, the narrow walk.

:class:`FollowUpPasses` extends :class:`napari_tpm._session_steps.ScoringSteps` as a mixin of
:class:`napari_tpm.session.SegmentationSession`. Each pass reads the cached per-class log-odds
that the first scoring left (``_low``) and the cached features, never the encoder: the
refinement refits the prototypes on the query's own features and rescores, the smoothing
averages the log-odds over millimetres in 3D, and the walk follows a narrow painted structure
past its result's ends. A prototype change (``set_prototypes``) runs them again from the cache;
a slider move only re-thresholds.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from napari_tpm._session_data import (
    _content_mask,
    _outward_batches,
    _smooth_sigma,
    _Volume,
)
from napari_tpm._session_scoring import refine_gate
from napari_tpm._session_steps import ScoringSteps
from napari_tpm._threads import one_cpu_thread
from napari_tpm.postprocess import smooth_scores
from napari_tpm.progress import Progress
from napari_tpm.tpm.posterior import logit
from napari_tpm.tpm.transductive import TransductiveResult, transductive_tpm
from napari_tpm.tracking import grid_mask, is_narrow, walk_scores


class FollowUpPasses(ScoringSteps):
    """Cached class log-odds -> refined, smoothed, and walked past a narrow structure's ends
    (after :class:`ScoringSteps`' first scoring, whose stages they run again)."""

    # provided by SegmentationSession
    label_values: tuple[int, ...]
    refine_trace: list[float]
    bootstrapped: bool
    _spacing: tuple[float, float, float]
    section_areas: dict[int, float | None]

    def _smooth(self, query: _Volume) -> Iterator[Progress]:
        """3D Gaussian smoothing of the cached class log-odds (``options.smooth_mm``).

        Scores are computed slice by slice; an organ is smooth across slices, so averaging the
        log-odds over a few millimetres in 3D removes single-slice speckle and fills one-slice
        gaps. Sigma is set in millimetres and converted per axis (feature pixels in-plane,
        slices across), so it means the same on any scan.
        """
        mm = self.options.smooth_mm
        if mm <= 0 or self._low is None:
            return
        n, _, h, _ = self._low.shape
        sigma = _smooth_sigma(mm, self._spacing, self._require_support().axis, query.grid, h)
        low = torch.from_numpy(smooth_scores(self._low.numpy(), sigma))
        self._low = low
        for lo, hi in _outward_batches(n, self._start_index(query), self.batch_size):
            self._to_native(query, low[lo:hi], lo, hi)
            yield Progress(n, n, "smooth", (lo, hi))

    def _track(self, query: _Volume) -> Iterator[Progress]:
        """Follow each narrow structure painted on this volume past its result's ends, slice by
        slice (``options.track_ends``, :mod:`napari_tpm.tracking`), at the auto prior: each
        whose largest painted section (:attr:`section_areas`; a stroke's says nothing, so
        never) has an equivalent radius up to :data:`napari_tpm.tracking.NARROW_MM`
        (:func:`napari_tpm.tracking.walk_scores`), on its own class's scores and prototypes.

        The walk's scores are kept apart (``_tracked``) and :meth:`labels` adds what passes
        the boundary after its 3D steps: raised in the score cache, a tracked piece touching
        a look-alike joined the two in 3D and the steps then kept the wrong one (CHAOS 33's
        left kidney painted at 85 %: 0.91 -> 0.35, the spleen in, the kidney's lower half
        out). Not for a second pass (pseudo-paint), with background strokes (a stroke's
        evidence is not in the tracked score, so a stroke would not hold it) or for paint on
        a slice across axis 1 or 2: the vessels it is for run along the scan's first axis,
        and walking sideways across sagittal slices took AMOS 0013's spleen, whose sagittal
        section in that 11-slice slab is narrow, into its neighbours (0.82 -> 0.63).
        """
        self._tracked = None
        s = self._require_support()
        if (
            not self.options.track_ends
            or not s.same_volume
            or s.axis != 0
            or self._second_pass
            or s.negative_features is not None
            or self._low is None
        ):
            return
        features = self._weighted_view(query)
        narrow = [
            (k, value)
            for k, value in enumerate(self.label_values)
            if is_narrow(self.section_areas.get(value))
        ]
        if features is None or not narrow:
            return
        prior = self.auto_prior()
        threshold = -float(logit(prior))
        labelled = self.labels(prior)
        # the result without the walk at the auto prior: the caller's labels(None) reuses it
        # and adds the walk on top, instead of labelling the volume a second time
        self._tip_labels = (prior, labelled)
        labels = np.moveaxis(labelled, s.axis, 0)
        walks = []
        planes = s.masks_native
        for k, value in narrow:
            # the middle painted slice fits the walk's scale, or where this structure is not
            # painted there, the painted slice showing the most of it
            painted = s.index
            if not (planes[painted] == value).any():
                painted = max(planes, key=lambda i: int((planes[i] == value).sum()))
            found = grid_mask(labels == value, query.grid, features)
            low = self._low[:, k].numpy()
            walk = walk_scores(features, low, found, painted, self._prototypes[k][0], threshold)
            if walk is not None:
                walks.append((value, *walk))
        if not walks:
            return
        self._tracked = walks
        reached = np.concatenate([w[1] for w in walks])
        n = self._low.shape[0]
        yield Progress(n, n, "track", (int(reached.min()), int(reached.max()) + 1))

    def _refine(self, query: _Volume) -> Iterator[Progress]:
        """Transductive TPM on the finished first pass, then rescore (no encoder call)."""
        opts = self.options
        iterations = self._refine_iterations()
        if iterations < 1:
            return
        n = query.slices.shape[0]
        yield Progress(n, n, "refine", None)
        with one_cpu_thread(self.device):
            result = self._transduce(query, iterations)
        self.refine_trace = result.log_likelihood
        self._prototypes = result.prototypes
        self._slice_bias = result.slice_bias if opts.slice_priors else None
        scores = result.scores  # the refined prototypes' scores: reused unless recalibrated
        if opts.recalibrate:
            self._calibrate()
            scores = None
        yield from self._score_all(query, start=self._start_index(query), scores=scores)

    def _refine_iterations(self) -> int:
        """EM steps of the refinement for the current support (0: none)."""
        opts = self.options
        if not self._require_support().same_volume:
            return opts.refine_atlas
        # pseudo-paint of a second pass: see ContrastSearch._second_pass_from
        return 0 if self._second_pass or self.bootstrapped else opts.refine

    def _transduce(self, query: _Volume, iterations: int) -> TransductiveResult:
        """EM of :func:`transductive_tpm` on the cached query features (see ``_refine``).

        Only the first pass's 3D components at the paint teach the prototypes (``refine_gate``).
        """
        opts = self.options
        s = self._require_support()
        assert self._low is not None
        features = self._weighted_view(query)
        assert features is not None  # the first pass encoded every slice before this runs
        return transductive_tpm(
            features,
            self._support_prototypes,
            [x.shape[0] for x in s.pixel_features],
            lambda f, p: self._calibrated_scores(f, p),
            sigma_f=float(self.model.sigma_f),
            sigma_b=float(self.model.sigma_b),
            n_iter=iterations,
            support_weight=opts.refine_weight,
            slice_priors=opts.slice_priors,
            smoothing=opts.prior_smoothing,
            valid=_content_mask(query.grid, query.features.shape[-2:]),
            gate=refine_gate(self._low, s) if opts.refine_gate else None,
            # the first pass scored the volume with these very prototypes (no slice priors yet)
            initial_scores=self._low if self._slice_bias is None else None,
        )
