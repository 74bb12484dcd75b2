"""Reading a session's results: labels, probabilities, scores and the support's numbers.

:class:`SessionOutputs` is the read side of :class:`napari_tpm.session.SegmentationSession`
(which inherits it): everything here only reads the caches the pipeline filled, so the live
prior slider, the widget and the evaluation can be read apart from the encoding, scoring and
refinement that write them. The auto prior it labels at, and the tip shifts measured on first
use for paint near an organ's end, are :mod:`napari_tpm._session_prior`'s.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_tpm._session_data import _check_prior, _outward_batches, _Support, _Volume
from napari_tpm._session_labels import clean_3d, keep_outline, write_labels
from napari_tpm._session_prior import AutoPrior
from napari_tpm.concavity import asks_for_fill
from napari_tpm.footprint import Footprint, keep_fitting_component, pixel_area
from napari_tpm.options import SegmentOptions
from napari_tpm.preprocess import WorkingGrid
from napari_tpm.tpm.posterior import logit


class SessionOutputs(AutoPrior):
    """The session's read-only results; a mixin of the caches ``SegmentationSession`` fills."""

    # filled by SegmentationSession (see its __init__ for what each holds)
    options: SegmentOptions
    _image: np.ndarray | None
    _spacing: tuple[float, float, float]
    _modality: str
    _views: dict[int, _Volume]
    _support: _Support | None
    _user_outline: tuple[int, int, np.ndarray] | None
    _prototypes: list[tuple[torch.Tensor, torch.Tensor]]
    _background_value: int | None
    _offset: float
    _low: torch.Tensor | None
    _score: np.ndarray | None
    _best: np.ndarray | None
    _runner_up: tuple[np.ndarray, np.ndarray] | None
    _normalised: np.ndarray | None
    _paint_footprints: dict[int, Footprint]
    _body_boxes: dict[int, dict[int, tuple[float, float, float, float]]]
    # (prior, labels): a whole labelling at the auto prior that a step inside segment() made
    # (the tip measurement, the walk, the end pass), which the caller's labels(None) reuses
    _tip_labels: tuple[float, np.ndarray] | None
    _class_tips: np.ndarray | None  # per class: the tip shifts of several classes on one slice
    # per class, what the concavity fill added on the labelling at the auto prior ((3, n)
    # coordinates, slice axis first); every other prior puts those pixels back
    _fill_memo: dict[int, np.ndarray] | None
    _fill_pending: dict[int, np.ndarray] | None  # the tip measurement's, until it is the auto
    _measuring_tips: bool  # a tip measurement's labelling is running: the auto prior is unknown
    _choosing: bool  # another volume's paint is being placed: intermediate results only
    _tracked: list[tuple[int, np.ndarray, torch.Tensor]] | None  # track_ends' walks
    bootstrapped: bool

    if TYPE_CHECKING:

        def _view(self, axis: int) -> _Volume: ...

    # ------------------------------------------------------------------ image
    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return None if self._image is None else tuple(self._image.shape)

    @property
    def image(self) -> np.ndarray | None:
        """The query volume (z, y, x) as given to :meth:`set_image`, or None."""
        return self._image

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self._spacing

    @property
    def modality(self) -> str:
        return self._modality

    def _require_image(self) -> np.ndarray:
        if self._image is None:
            raise ValueError("no image: call set_image() first")
        return self._image

    def _require_support(self) -> _Support:
        if self._support is None:
            raise ValueError("nothing segmented yet: call segment() first")
        return self._support

    # ----------------------------------------------------------------- output
    @property
    def axis(self) -> int:
        return self._require_support().axis

    @property
    def support_slices(self) -> tuple[int, ...]:
        """The painted slices along :attr:`axis` (after a second pass: its pseudo-paint's)."""
        return self._require_support().indices

    @property
    def pole_slices(self) -> dict[int, int]:
        """Per structure painted only on a pole's small section, the slice its prototypes came
        from (``options.pole_features``, :mod:`napari_tpm.paint_size`); empty before a run."""
        return dict(self._support.pole_slices) if self._support is not None else {}

    def _native_to_volume(self, array: np.ndarray) -> np.ndarray:
        """Move the slice axis back to where it was in the user's volume (a view, no copy)."""
        return np.moveaxis(array, 0, self.axis)

    def labels(
        self,
        prior: float | None = None,
        *,
        out: np.ndarray | None = None,
        z_range: tuple[int, int] | None = None,
        connected: bool | None = None,
        keep_paint: bool = True,
        slices: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Label volume at ``prior`` (None: :meth:`auto_prior`), with the paint's label values.

        Only the cached scores are read, so this is fast enough for a live slider. ``out`` (an
        integer array on the image's grid, e.g. a Labels layer's buffer) is overwritten in place.
        ``z_range`` keeps slices lo..hi (inclusive) along the slice axis; ``connected`` keeps the
        3D components that touch the painted region (the largest one when the support came from
        another volume); None takes ``options.connected``. ``keep_paint`` writes the user's paint
        over the result on the painted slices (background strokes as 0); the paper's protocol
        scores those slices with the model like any other, so the evaluation turns it off. After
        a second pass (:attr:`bootstrapped`) the support is pseudo-paint taken from the first
        result, not the user's, so it is never written over: the prior moves that slice too;
        the user's own outline on this volume, whose end took that pass, is still kept on its
        slice (:func:`napari_tpm._session_labels.keep_outline`).
        ``slices=(lo, hi)`` rewrites only those slices along the slice axis (inclusive) and
        skips the 3D connectivity step: a live slider redraws the displayed slice in
        milliseconds, and a full call follows when it rests. Slices not computed yet are 0.
        """
        s = self._require_support()
        if self._score is None:
            raise ValueError("nothing segmented yet: iterate segment() first")
        p = self.auto_prior() if prior is None else _check_prior(prior)
        shape = self._require_image().shape
        if out is not None and out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, the image {shape}")
        whole = z_range is None or _covers(z_range, shape[s.axis])
        plain = whole and keep_paint and slices is None
        # several classes' tip shifts: measured on the first whole labelling (it may fill
        # _tip_labels); the live slider's slices take them as measured, else none
        shifts = self._class_tips if slices is not None else self._class_tip_shifts()
        if plain and connected in (None, self.options.connected) and self._tip_labels is not None:
            measured_at, measured = self._tip_labels
            if measured_at == p:  # auto_prior() just labelled at this prior to measure the tip
                if out is None:
                    out = measured.copy()
                else:
                    out[...] = measured  # a dock's relabel at that prior: no second 3D clean-up
                self._add_tracked(np.moveaxis(out, s.axis, 0), -float(logit(p)), None, None)
                return out
        threshold: float | np.ndarray = -float(logit(p))
        if shifts is not None and shifts.any():
            threshold = (threshold - shifts).astype(np.float32)
        if out is None:
            dtype = np.uint8 if max(s.label_values) < 256 else np.uint16
            out = np.zeros(shape, dtype=dtype)
        full = np.moveaxis(out, s.axis, 0)
        if slices is None:
            lo_s, hi_s = 0, full.shape[0] - 1
        else:  # the live slider: only the displayed slices, no 3D step
            lo_s, hi_s = sorted(min(max(int(i), 0), full.shape[0] - 1) for i in slices)
            connected = False
        if connected is None:
            connected = self.options.connected
        fill = self._fill_mode(p, plain) if connected and slices is None else None
        write_labels(
            full,
            slice(lo_s, hi_s + 1),
            self._score,
            self._best,
            s,
            self._background_value,
            threshold,
            keep_paint=keep_paint and not self.bootstrapped,
            z_range=z_range,
            runner_up=self._runner_up if slices is None else None,
            clean_3d=partial(self._clean_3d, fill=fill) if connected else None,
        )
        if keep_paint and self.bootstrapped and self._user_outline is not None:
            keep_outline(full, (lo_s, hi_s), z_range, self._user_outline)
        self._add_tracked(full, -float(logit(p)), z_range, (lo_s, hi_s))
        return out

    def _add_tracked(
        self,
        full: np.ndarray,
        threshold: float,
        z_range: tuple[int, int] | None,
        slices: tuple[int, int] | None,
    ) -> None:
        """Write the walks past the result's ends (``options.track_ends``, each structure its
        own) into ``full`` (slice axis first) where their scores pass ``threshold``, on
        unlabelled voxels of the slices ``slices`` and ``z_range`` keep (inclusive; None:
        all): after the 3D steps, which never see them (:meth:`_track`)."""
        if self._tracked is None:
            return
        grid = self._view(self._require_support().axis).grid
        for value, reached, scores in self._tracked:
            keep = np.ones(len(reached), bool)
            for bound in (slices, z_range):
                if bound is not None:
                    keep &= (reached >= min(bound)) & (reached <= max(bound))
            if not keep.any():
                continue
            up = grid.from_working(scores[torch.from_numpy(keep)])[:, 0].numpy() > threshold
            for z, passed in zip(reached[keep], up, strict=True):
                full[z][passed & (full[z] == 0)] = value

    def _fill_mode(self, p: float, plain: bool) -> tuple[dict | None, dict | None] | None:
        """How this whole labelling at ``p`` fills concavities: (pixels to put back, dict to
        record into), or None to fill as measured here (another volume's or a second pass's
        paint, which the fill leaves alone, or a tip measurement in progress, whose record
        waits in ``_fill_pending`` until it proves to be the auto labelling).

        The fill is taken once, on the labelling at the auto prior, and put back at every
        other prior, so that labelling is the one the fill always gave and the slider, moving
        up, only adds voxels wherever the other 3D steps do."""
        s = self._require_support()
        if not (
            self.options.fill_concave
            and s.same_volume
            and not self._choosing
            and not self.bootstrapped
        ):
            return None
        if self._fill_memo is None and not _may_fill(s):
            self._fill_memo = {}  # no paint asks for the fill: nothing to take or put back
        if self._fill_memo is not None:
            return self._fill_memo, None
        if self._measuring_tips:
            self._fill_pending = {}
            return None, self._fill_pending
        auto = self.auto_prior()
        if self._fill_memo is not None:  # auto_prior() measured the tip just now
            return self._fill_memo, None
        if plain and p == auto:
            self._fill_memo = {}
            return None, self._fill_memo
        self.labels(auto)  # the auto labelling records what the fill adds
        return (self._fill_memo, None) if self._fill_memo is not None else None

    def _clean_3d(
        self, view: np.ndarray, fill: tuple[dict | None, dict | None] | None = None
    ) -> None:
        """The 3D steps of :meth:`labels`, in place on the whole volume ``view`` (axis first).

        Connected components, neck cut and outline snap: see
        :func:`napari_tpm._session_labels.clean_3d`.
        """
        s = self._require_support()
        pick = None
        if self._paint_footprints and not s.same_volume:
            assert self._normalised is not None  # set with the query's view in segment()
            normalised = np.moveaxis(self._normalised, s.axis, 0)
            area = pixel_area(self._spacing, s.axis)
            pick = partial(
                keep_fitting_component,
                image=normalised,
                target=self._paint_footprints,
                pixel_area_mm2=area,
                score=self._score,
                boxes=self._body_boxes.setdefault(s.axis, {}),
            )
        # While another volume's paint is placed, results are compared and seed the second
        # pass; those steps were chosen on the regions the model finds, and the outline's
        # growth (a pixel or two) only moved near-tied choices. So it waits for the result,
        # and so does the slice walk's end on a covered footprint: ending a candidate's walk
        # changed which candidate fitted (BTCV 19's right kidney from BTCV 21, 0.94 -> 0.00).
        options = self.options
        if self._choosing and (options.halfway_edge or options.continuity_end):
            options = replace(options, halfway_edge=False, continuity_end=False)
        # The walk's footprint follows the organ's drift, and the 3D parts that run on past
        # the painted one go, from the user's own paint only. The drift: from
        # a second pass's pseudo-paint it followed a spleen's end into the kidney below
        # (BTCV 15's spleen from BTCV 21, 0.83 -> 0.60), and over every ordered tuning pair
        # with another patient's paint it gained little (BTCV 0.794 -> 0.795, CHAOS
        # 0.755 -> 0.756).
        clean_3d(
            view,
            s,
            self._background_value,
            self._spacing,
            self._require_image(),
            options,
            pick,
            own_paint=not (self._choosing or self.bootstrapped),
            score=self._score,
            fill_added=None if fill is None else fill[0],
            fill_record=None if fill is None else fill[1],
        )

    def probabilities(self, prior: float | None = None) -> np.ndarray:
        """P(any foreground | x) on the image's grid (float32), at ``prior``.

        On the slices a walk past a narrow structure's ends reached (``options.track_ends``),
        a pixel takes the walk's score where that is higher: :meth:`labels` adds the walk's
        pixels where its score passes the boundary, so the map then says "over one half"
        wherever the labels' walk does, instead of showing the structure cut off where the
        painted prototypes stop.
        """
        s = self._require_support()
        if self._low is None:
            raise ValueError("the segmentation has not finished: iterate segment() to the end")
        p = self.auto_prior() if prior is None else _check_prior(prior)
        query = self._view(s.axis)
        n = query.slices.shape[0]
        any_fg = torch.logsumexp(self._low, 1, keepdim=True)
        for _, reached, scores in self._tracked or ():
            index = torch.from_numpy(reached)
            any_fg[index] = torch.maximum(any_fg[index], scores.to(any_fg.dtype))
        out = np.empty(query.slices.shape, dtype=np.float32)
        prior_logit = float(logit(p))
        for lo, hi in _outward_batches(n, 0, 16):
            up = query.grid.from_working(any_fg[lo:hi])[:, 0]
            out[lo:hi] = torch.sigmoid(up + prior_logit).numpy()
        return self._native_to_volume(out)

    # ------------------------------------------------------- read-only accessors
    def best_class(self) -> np.ndarray:
        """0-based index of the best class per voxel on the image's grid (a view of the cache)."""
        self._require_support()
        if self._best is None:
            raise ValueError("nothing segmented yet: iterate segment() first")
        return self._native_to_volume(self._best)

    @property
    def support_fraction(self) -> float:
        """Painted fraction of the working grid on the middle painted slice (LinEst's size)."""
        return self._require_support().fraction

    @property
    def support_location(self) -> float:
        """Middle painted slice index / (slices - 1) in the support volume (LinEst's loc)."""
        s = self._require_support()
        return s.index / max(s.n_slices - 1, 1)

    def features(self) -> torch.Tensor:
        """Cached query features (n, C, h, w) along the slice axis, float16 on the CPU."""
        view = self._views.get(self.axis)
        if view is None or view.features is None or not view.encoded.all():
            raise ValueError("the query is not fully encoded: drain segment() first")
        return view.features

    @property
    def working_grid(self) -> WorkingGrid:
        """How the query's slices map onto the encoder's square working grid."""
        return self._view(self.axis).grid

    @property
    def prototypes(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per class ``(means [K, C], weights [K])``, in the order of :attr:`label_values`."""
        self._require_support()
        return list(self._prototypes)

    @property
    def score_offset(self) -> float:
        """The self-calibration offset added to every score (0 for calibrated checkpoints)."""
        self._require_support()
        return self._offset

    def scores(self) -> np.ndarray:
        """Best-class log-odds at prior 0.5 on the image's grid (a view of the cache)."""
        self._require_support()
        if self._score is None:
            raise ValueError("nothing segmented yet")
        return self._native_to_volume(self._score)


def _covers(z_range: tuple[int, int], n: int) -> bool:
    """Whether the inclusive slice range keeps every one of ``n`` slices."""
    lo, hi = sorted(int(z) for z in z_range)
    return lo <= 0 and hi >= n - 1


def _may_fill(support: _Support) -> bool:
    """Whether any structure's paint is solid enough to ask for the concavity fill
    (:func:`napari_tpm.concavity.asks_for_fill`); if none is, no prior fills anything."""
    planes = list(support.masks_native.values())
    return any(asks_for_fill(planes, v) is not None for v in support.label_values)
