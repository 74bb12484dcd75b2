"""The segmentation session: one image, one painted slice, the whole volume.

This is the small verb API that the CLI, the napari widget, the evaluation and the test-time
adaptation all share. Each stage caches its output, keyed by what it depends on, so a change
only recomputes what lies downstream of it:

    image ------------------> features       (encoder; the only expensive step)
    painted slice + K ------> prototypes     (masked average or EM on the support pixels)
    features + prototypes --> scores         (per-class log-odds at prior 0.5, working grid,
                                              and the best class + score on the native grid)
    scores + prior ---------> labels         (one comparison per voxel: the live slider)

Scores are log-odds ``s = log h_F - log h_B`` so that ``P(F|x) = sigmoid(s + logit(prior))``
and the label at a prior is ``s > -logit(prior)``; see docs/architecture.md.

This module holds the caches and the order of the stages; the work lives in private modules:
``_session_support`` (paint -> support), ``_session_scoring`` (prototypes, log-odds,
calibration), ``_session_output`` (reading results) with ``_session_labels`` (threshold and 3D
clean-up), ``_session_contrast`` (another volume's paint tried at several intensities), and
``_session_data`` (records and small helpers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from napari_tpm._session_contrast import ContrastSearch
from napari_tpm._session_data import (
    WORKING_SIZE,
    VolumeTooLargeError,
    _check_image,
    _check_prototypes,
    _check_voxels,
    _content_mask,
    _encode_slices,
    _Job,
    _make_view,
    _outward_batches,
    _smooth_sigma,
    _start_slice,
    _Support,
    _Volume,
    available_memory_bytes,
    resolve_device,
)
from napari_tpm._session_output import SessionOutputs
from napari_tpm._session_scoring import (
    calibrate,
    fit_prototypes,
    low_scores,
    mine_negatives,
    refine_gate,
)
from napari_tpm._session_support import build_support, check_paint_grid
from napari_tpm._threads import one_cpu_thread
from napari_tpm.bootstrap import pseudo_paint
from napari_tpm.checkpoints import TPMModel, load_model
from napari_tpm.contrast import Footprint, footprints, pixel_area
from napari_tpm.options import SegmentOptions
from napari_tpm.postprocess import smooth_scores
from napari_tpm.preprocess import normalise_intensity
from napari_tpm.progress import Progress
from napari_tpm.support import (
    BACKGROUND_LABEL,
    DEFAULT_PROTOTYPES,
    SupportError,
    find_support_slice,
    parse_support,
)
from napari_tpm.tpm import l2_normalize
from napari_tpm.tpm.transductive import TransductiveResult, transductive_tpm

#: bytes per voxel the session holds for a query volume (normalised copy, score, class, output).
_BYTES_PER_VOXEL = 20  # measured: 18.6 bytes per voxel held by a session (2026-12-02)


class SegmentationSession(SessionOutputs, ContrastSearch):
    """Segment one volume from one painted slice, with every stage cached.

    Args:
        model: a loaded :class:`TPMModel`, or a name/path understood by
            :func:`napari_tpm.checkpoints.load_model` ("default", "filterbank", a zoo name, a file).
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda" or "mps".
        batch_size: slices per encoder call; default 32 on GPU and 8 on CPU, which bounds the
            peak memory of the encoder's activations.
    """

    def __init__(
        self,
        model: TPMModel | str = "default",
        device: str | torch.device = "auto",
        *,
        batch_size: int | None = None,
        options: SegmentOptions | None = None,
        **overrides: Any,
    ) -> None:
        base = options or SegmentOptions()
        self.options = dataclasses.replace(base, **overrides) if overrides else base
        self.device = resolve_device(device)
        self.model = load_model(model, device=self.device) if isinstance(model, str) else model
        self._check_head(self.model)
        self.model.encoder.to(self.device).eval()
        if batch_size is None:
            batch_size = 32 if self.device.type == "cuda" else 8
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.encoder_calls = 0
        self.label_values: tuple[int, ...] = ()
        self.n_prototypes = 1
        self._image: np.ndarray | None = None
        self._spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
        self._modality = "auto"
        self._views: dict[int, _Volume] = {}
        self._support: _Support | None = None
        self._prototypes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._negative: tuple[torch.Tensor, torch.Tensor] | None = None
        self._support_prototypes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._slice_bias: torch.Tensor | None = None  # (n, K) per-slice log prior ratios
        self._class_offsets: torch.Tensor | None = None  # (K,) per-class calibration
        self.refine_trace: list[float] = []  # query log-likelihood per refinement step
        #: whether the last segment() ran a second pass from the first result's pseudo-paint
        #: (``options.bootstrap``); the support is then that pseudo-paint on this volume
        self.bootstrapped = False
        #: per label value, the change to another volume's painted intensities that the last
        #: segment() chose (``options.contrast_search``; :func:`napari_tpm.contrast.describe_step`)
        self.contrast_steps: dict[int, tuple[str, float]] = {}
        self._background_value: int | None = BACKGROUND_LABEL
        self._offset = 0.0
        self._low: torch.Tensor | None = None  # (n, K, h, w) float32 per-class log-odds
        self._score: np.ndarray | None = None  # native grid, slice axis first, float32
        self._best: np.ndarray | None = None  # native grid, slice axis first, uint8 class index
        self._done: np.ndarray = np.zeros(0, bool)

    # ------------------------------------------------------------------ image
    def set_model(self, model: TPMModel | str) -> None:
        """Use another model (e.g. one adapted to this volume); every feature cache is dropped.

        The image stays set, so the next :meth:`segment` re-encodes it with the new encoder.
        """
        model = load_model(model, device=self.device) if isinstance(model, str) else model
        self._check_head(model)
        model.encoder.to(self.device).eval()
        self.model = model
        self._views.clear()
        self._normalised = None  # the new model may scale intensities differently
        self._reset_support()

    #: whether this session scores with a checkpoint's compared head (``train --head``); only
    #: the evaluation's ``HeadSession`` does, so everywhere else such a file is refused instead
    #: of being scored silently as plain TPM with a threshold it never learned
    scores_with_head: bool = False

    def _check_head(self, model: TPMModel) -> None:
        head = getattr(model, "head", None)
        if head is not None and not self.scores_with_head:
            kind = getattr(head, "kind", None) or type(head).__name__
            raise ValueError(
                f"this checkpoint scores with a compared '{kind}' head (train --head), which only "
                "`python -m napari_tpm.evaluate paper` uses; segment with a model trained "
                "without --head"
            )

    def set_image(
        self,
        image: np.ndarray,
        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
        *,
        modality: str = "auto",
        max_bytes: int | None = None,
        check_range: bool = True,
    ) -> None:
        """Use ``image`` (z, y, x) as the query volume; a different image drops every cache.

        Raises ValueError for images that are not 3D or hold NaN/inf, and
        VolumeTooLargeError when the caches would not fit in ``max_bytes`` (default: the
        memory available now). ``check_range=False`` skips the constant/overflow check
        (``preprocess.check_intensity_range``) for a caller that already made it with its own
        message, as the segment CLI does before loading the model.
        """
        array = np.asarray(image)
        spacing = _check_image(array, spacing)
        if (
            self._image is not None
            and self._image.shape == array.shape
            and self._spacing == spacing
            and self._modality == modality
            and (self._image is array or np.array_equal(self._image, array))
        ):
            return
        need = array.size * _BYTES_PER_VOXEL
        limit = available_memory_bytes() if max_bytes is None else int(max_bytes)
        if need > limit:
            raise VolumeTooLargeError(
                f"the volume {array.shape} needs about {need / 2**30:.1f} GiB but only "
                f"{limit / 2**30:.1f} GiB of memory is available"
            )
        _check_voxels(array, check_range=check_range)
        self._image = array
        self._spacing = spacing
        self._modality = modality
        self._views.clear()
        self._normalised: np.ndarray | None = None
        self._reset_support()

    @property
    def _working_mm(self) -> float | None:
        """The encoder's fixed working pixel size in mm, if it asks for one."""
        return getattr(self.model.encoder, "working_mm", None)

    def _view(self, axis: int) -> _Volume:
        """The query volume along ``axis``, normalised once and built on first use."""
        if axis not in self._views:
            image = self._require_image()
            if self._normalised is None:
                self._normalised = normalise_intensity(
                    image, modality=self._modality, method=self.model.normalisation
                )
            self._views[axis] = _make_view(
                self._normalised, self._spacing, axis, mm=self._working_mm
            )
        return self._views[axis]

    # --------------------------------------------------------------- encoding
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

    # ---------------------------------------------------------------- support
    def _reset_support(self) -> None:
        self._support = None
        self._prototypes = []
        self._support_prototypes = []
        self._slice_bias = None
        self._negative = None
        self._low = None
        self._score = None
        self._best = None
        self._done = np.zeros(0, bool)
        self._paint_footprints: dict[int, Footprint] = {}
        self.label_values = ()

    def segment(
        self,
        support_labels: np.ndarray,
        *,
        support_image: np.ndarray | None = None,
        support_spacing: tuple[float, float, float] | None = None,
        n_prototypes: int = DEFAULT_PROTOTYPES,
        background_label: int | None = BACKGROUND_LABEL,
    ) -> Iterator[Progress]:
        """Segment the query volume from painted slices (generator yielding Progress).

        Labels 1..N give N classes segmented jointly; they may be painted on one slice or on
        several slices along one axis, and every painted pixel feeds the prototypes.
        ``background_label`` (default :data:`BACKGROUND_LABEL`) marks background strokes: those
        voxels are never labelled, and their features become background evidence (a voxel that
        looks like them is pushed towards background). The painted slices are encoded first,
        then the query slices in batches outward from the middle painted slice (or from the
        matching relative position when the support is another volume); every yielded
        ``Progress.slices`` range is final, so a viewer can show it at once (with another
        volume's support and ``options.bootstrap`` a second pass from the first result follows
        and rewrites them). Features stay cached: painting more and calling this again does not
        re-encode the volume.
        """
        image = self._require_image()
        k = _check_prototypes(n_prototypes)
        self.bootstrapped = False
        paint = np.asarray(support_labels)
        same_volume = check_paint_grid(paint, image, support_image)
        parsed = parse_support(paint, background_label)
        self._background_value = background_label
        self.contrast_steps = {}
        other = None if same_volume else np.asarray(support_image)
        # another volume without its own spacing is taken to share this one's
        sspacing = self._spacing if support_spacing is None else tuple(support_spacing)
        job = _Job(paint, parsed, other, sspacing, k, background_label)
        if not same_volume and self.options.bootstrap:
            if len(parsed.values) > 1 and self.options.classes_apart:
                yield from self._segment_classes_apart(job)
                return
            if self.options.contrast_search:
                yield from self._search_contrast(job)
                return
        yield from self._run(job, bootstrap=not same_volume and self.options.bootstrap)

    def _run(self, job: _Job, *, bootstrap: bool) -> Iterator[Progress]:
        """One segmentation from checked paint: support, prototypes, scores, clean-up.

        ``job.support_image`` None means the paint is on this volume. ``bootstrap`` adds the
        second pass from the first result (:meth:`_bootstrap`).
        """
        paint, parsed, support_image = job.paint, job.parsed, job.support_image
        k, background_label = job.k, job.background_label
        image = self._require_image()
        same_volume = support_image is None
        axis, indices = parsed.axis, parsed.indices
        self._reset_support()
        query = self._view(axis)
        sspacing = job.support_spacing
        if same_volume:
            sview, sidx = query, np.asarray(indices)
        else:
            snorm = normalise_intensity(
                np.asarray(support_image), modality=self._modality, method=self.model.normalisation
            )
            sview = _make_view(snorm, sspacing, axis, only=indices, mm=self._working_mm)
            sidx = np.arange(len(indices))
            if self.options.fit_component:
                self._paint_footprints = footprints(
                    np.moveaxis(paint, axis, 0),
                    np.moveaxis(snorm, axis, 0),
                    parsed.values,
                    pixel_area(sspacing, axis),
                )
        self._encode(sview, sidx)
        feats = sview.features[torch.from_numpy(sidx)].float()  # (S, C, h, w)
        self._support = support = build_support(
            paint,
            parsed,
            feats,
            sview.grid,
            sspacing,
            background_label,
            raw_image=image if same_volume else None,
            stroke_scores=self._stroke_scores if self.options.grow_scribbles else None,
            device=self.device,
        )
        self.label_values = parsed.values
        yield Progress(0, query.slices.shape[0], "support", None)
        with one_cpu_thread(self.device):
            self._fit_prototypes(k)
            self._calibrate()
            # the painted slices' own look-alikes become background evidence: refit
            hard = self.options.hard_negatives and same_volume
            if hard and mine_negatives(
                support, lambda f: self._calibrated_scores(f, self._prototypes)
            ):
                self._fit_prototypes(k)
                self._calibrate()
        yield from self._score_all(query, start=self._start_index(query))
        yield from self._refine(query)
        yield from self._smooth(query)
        if bootstrap:
            yield from self._bootstrap(k, background_label)

    def _bootstrap(
        self, k: int, background_label: int | None, first: np.ndarray | None = None
    ) -> Iterator[Progress]:
        """Segment again from the first result's most confident slice (``options.bootstrap``).

        The first pass, from another volume's paint, only has to find the organ; the second
        starts from its pseudo-paint on this volume (:func:`napari_tpm.bootstrap.pseudo_paint`)
        and runs the same-scan pipeline. Nothing found: the first result stays. ``first`` is
        the first result's ``labels(None)`` when the caller already has it.
        """
        s = self._require_support()
        assert self._score is not None
        first = self.labels(None) if first is None else first
        paint = pseudo_paint(np.moveaxis(first, s.axis, 0), self._score, s.label_values)
        if paint is None:
            return
        yield from self.segment(
            np.moveaxis(paint, 0, s.axis), n_prototypes=k, background_label=background_label
        )
        self.bootstrapped = True

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

    def _refine(self, query: _Volume) -> Iterator[Progress]:
        """Transductive TPM on the finished first pass, then rescore (no encoder call)."""
        opts = self.options
        s = self._require_support()
        iterations = opts.refine if s.same_volume else opts.refine_atlas
        if iterations < 1:
            return
        n = query.slices.shape[0]
        yield Progress(n, n, "refine", None)
        with one_cpu_thread(self.device):
            result = self._transduce(query, iterations)
        self.refine_trace = result.log_likelihood
        self._prototypes = result.prototypes
        self._slice_bias = result.slice_bias if opts.slice_priors else None
        if opts.recalibrate:
            self._calibrate()
        yield from self._score_all(query, start=self._start_index(query))

    def _transduce(self, query: _Volume, iterations: int) -> TransductiveResult:
        """EM of :func:`transductive_tpm` on the cached query features (see ``_refine``).

        Only the first pass's 3D components at the paint teach the prototypes (``refine_gate``).
        """
        opts = self.options
        s = self._require_support()
        assert self._low is not None
        return transductive_tpm(
            query.features,
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
        )

    def _stroke_scores(self, feats: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """(h, w) log-odds of one slice against the mean of a stroke's pixel features."""
        proto = l2_normalize(pixels.mean(0, keepdim=True), dim=1)
        return self._low_scores(feats, [(proto, torch.ones(1))])[0, 0]

    def _start_index(self, query: _Volume) -> int:
        """The slice scoring streams outward from: the painted one, or its relative place."""
        return _start_slice(self._require_support(), query.slices.shape[0])

    def _fit_prototypes(self, k: int) -> None:
        """Prototypes per class: the masked average (k = 1) or an EM mixture (k > 1)."""
        s = self._support
        assert s is not None
        self.n_prototypes = k
        self._prototypes, self._negative = fit_prototypes(s, k, self.model.sigma_f)
        self._support_prototypes = list(self._prototypes)
        self._slice_bias = None

    def _low_scores(
        self, feats: torch.Tensor, prototypes: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> torch.Tensor:
        """Per-class log-odds at prior 0.5 for features (B, C, h, w) -> (B, K, h, w).

        ``prototypes`` defaults to the session's own; the background strokes' mixture is
        always the session's. Subclasses override this to score with another head.
        """
        prototypes = self._prototypes if prototypes is None else prototypes
        return low_scores(self.model, feats, prototypes, self._negative)

    def _calibrated_scores(
        self, feats: torch.Tensor, prototypes: list[tuple[torch.Tensor, torch.Tensor]] | None
    ) -> torch.Tensor:
        """Class log-odds with the calibration (shared and per-class offsets) applied."""
        low = self._low_scores(feats, prototypes) + self._offset
        if self._class_offsets is not None:
            low = low + self._class_offsets[None, :, None, None]
        return low

    def _calibrate(self) -> None:
        """Offset added to every score so that prior 0.5 reproduces the paint on its slices.

        A trained checkpoint carries a learned threshold (T_D) and needs no offset. A model
        without one (the training-free filter bank) has no meaningful distance scale, so its
        decision boundary is placed where the painted slices' predicted foreground count equals
        the painted count: the ideal class prior of the support itself.
        """
        self._offset = 0.0
        self._class_offsets = None
        if self.model.calibrated:
            return
        s = self._support
        assert s is not None
        # without the background strokes' evidence: calibrating with it would move the boundary
        # until the painted count is reproduced again and so cancel most of the strokes' push
        # on look-alikes elsewhere (with several prototypes nearly all of it). Mined look-alikes
        # (``hard_negatives``) sit next to the organ on its own slice and were measured with
        # the boundary recalibrated over them, so they keep it.
        negative = self._negative
        if not self.options.hard_negatives:
            self._negative = None
        try:
            self._offset, self._class_offsets = calibrate(
                s, self._low_scores, self.options.class_boundaries
            )
        finally:
            self._negative = negative

    def _score_all(self, query: _Volume, *, start: int) -> Iterator[Progress]:
        n = query.slices.shape[0]
        native = (n, *query.slices.shape[1:])
        self._score = np.full(native, -np.inf, dtype=np.float32)
        self._best = np.zeros(native, dtype=np.uint8)
        self._done = np.zeros(n, bool)
        low = None
        for lo, hi in _outward_batches(n, start, self.batch_size):
            idx = np.arange(lo, hi)
            self._encode(query, idx)
            with one_cpu_thread(self.device):
                batch = self._calibrated_scores(query.features[lo:hi], self._prototypes)
                if self._slice_bias is not None:
                    batch = batch + self._slice_bias[lo:hi, :, None, None]
                if low is None:
                    low = torch.zeros((n, *batch.shape[1:]), dtype=torch.float32)
                low[lo:hi] = batch
                self._to_native(query, batch, lo, hi)
            yield Progress(int(self._done.sum()), n, "segment", (lo, hi))
        self._low = low

    def _to_native(self, query: _Volume, low: torch.Tensor, lo: int, hi: int) -> None:
        """Upsample per-class scores of slices lo..hi to the native grid; keep best class.

        With relaxed per-class boundaries the class is chosen on the shared scores and only
        its boundary against the background is its own: relaxing the liver must not let it
        take pixels the kidney wins on the shared scores.
        """
        up = query.grid.from_working(low)  # (b, K, H, W)
        if self._class_offsets is not None and self.options.class_boundaries == "relax":
            index = (up - self._class_offsets[None, :, None, None]).argmax(1)
            self._score[lo:hi] = up.gather(1, index[:, None])[:, 0].numpy()
            self._best[lo:hi] = index.to(torch.uint8).numpy()
        else:
            best = up.max(1)
            self._score[lo:hi] = best.values.numpy()
            self._best[lo:hi] = best.indices.to(torch.uint8).numpy()
        self._done[lo:hi] = True

    def set_prototypes(self, k: int) -> None:
        """Refit ``k`` prototypes per class from the cached support features and rescore.

        Uses only cached features: the encoder is not called.
        """
        k = _check_prototypes(k)
        s = self._require_support()
        query = self._view(s.axis)
        if not query.encoded.all():
            raise ValueError("the volume is not fully encoded yet: run segment() to the end first")
        with one_cpu_thread(self.device):
            self._fit_prototypes(k)
            self._calibrate()
        for _ in self._score_all(query, start=0):
            pass
        for _ in self._refine(query):
            pass
        for _ in self._smooth(query):
            pass


__all__ = [
    "WORKING_SIZE",
    "SegmentationSession",
    "SupportError",
    "VolumeTooLargeError",
    "find_support_slice",
    "resolve_device",
]
