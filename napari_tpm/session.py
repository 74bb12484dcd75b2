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
``_session_encoding`` (the query's views and cached features), ``_session_paint`` (the
user's paint completed and its sections noted), ``_session_support`` (paint -> support),
``_session_steps`` with ``_session_scoring`` (prototypes, log-odds, calibration),
``_session_passes`` (refinement, smoothing, the narrow walk), ``_session_output`` (reading
results) with ``_session_labels`` (threshold and 3D clean-up), ``_session_contrast``
(another volume's paint: the second pass and the searches that place it), and
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
    _Job,
    _Support,
    _Volume,
    available_memory_bytes,
    resolve_device,
)
from napari_tpm._session_encoding import EncodingSteps
from napari_tpm._session_output import SessionOutputs
from napari_tpm._session_paint import PaintIntake
from napari_tpm._session_passes import FollowUpPasses
from napari_tpm._session_scoring import mine_negatives
from napari_tpm._session_support import build_support, check_paint_grid
from napari_tpm._threads import one_cpu_thread
from napari_tpm.checkpoint_checks import refuse_compared_head
from napari_tpm.checkpoints import TPMModel, load_model
from napari_tpm.footprint import Footprint
from napari_tpm.options import SegmentOptions
from napari_tpm.preprocess import normalise_intensity
from napari_tpm.progress import Progress
from napari_tpm.segment_checks import SESSION_BYTES_PER_VOXEL
from napari_tpm.slice_match import ct_profiles
from napari_tpm.support import (
    BACKGROUND_LABEL,
    DEFAULT_PROTOTYPES,
    SupportError,
    find_support_slice,
    parse_support,
)


class SegmentationSession(
    SessionOutputs, ContrastSearch, PaintIntake, FollowUpPasses, EncodingSteps
):
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
        refuse_compared_head(self.model, self.scores_with_head)
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
        #: the body's box per slice axis and slice of the normalised query, found as the
        #: footprints of another volume's paint need them (footprint.footprints' memo)
        self._body_boxes: dict[int, dict[int, tuple[float, float, float, float]]] = {}
        #: slice profiles of this CT per slice axis (slice_match), for another CT's paint
        self._profiles: dict[int, np.ndarray] = {}
        self._support: _Support | None = None
        self._prototypes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._negative: tuple[torch.Tensor, torch.Tensor] | None = None
        self._support_prototypes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._slice_bias: torch.Tensor | None = None  # (n, K) per-slice log prior ratios
        self._class_offsets: torch.Tensor | None = None  # (K,) per-class calibration
        #: (S, 2) painted slice index and its own boundary (``options.slice_boundaries``)
        self._slice_offsets: np.ndarray | None = None
        self.refine_trace: list[float] = []  # query log-likelihood per refinement step
        #: whether the last segment() ran a second pass from the first result's pseudo-paint
        #: (``options.bootstrap``); the support is then that pseudo-paint on this volume
        self.bootstrapped = False
        self._second_pass = False  # a second pass from pseudo-paint is running
        self._choosing = False  # another volume's paint is being placed (_place_other_paint)
        #: per label value, the change to another volume's painted intensities that the last
        #: segment() chose (``options.contrast_search``; :func:`napari_tpm.contrast.describe_step`)
        self.contrast_steps: dict[int, tuple[str, float]] = {}
        self._init_paint_reports()
        #: per label value, how well the last segment()'s result from another volume's paint
        #: fits that paint (:func:`napari_tpm.contrast.fit_score`; empty for paint on this volume)
        self.fit_scores: dict[int, float] = {}
        self._background_value: int | None = BACKGROUND_LABEL
        self._offset = 0.0
        self._low: torch.Tensor | None = None  # (n, K, h, w) float32 per-class log-odds
        self._score: np.ndarray | None = None  # native grid, slice axis first, float32
        self._best: np.ndarray | None = None  # native grid, slice axis first, uint8 class index
        #: (score, class index) of each voxel's second-best class (``options.second_choice``)
        self._runner_up: tuple[np.ndarray, np.ndarray] | None = None
        self._done: np.ndarray = np.zeros(0, bool)
        #: native-grid arrays of the run in progress, reused by its later passes
        self._run_arrays: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ image
    def set_model(self, model: TPMModel | str) -> None:
        """Use another model (e.g. one adapted to this volume); every feature cache is dropped.

        The image stays set, so the next :meth:`segment` re-encodes it with the new encoder.
        """
        model = load_model(model, device=self.device) if isinstance(model, str) else model
        refuse_compared_head(model, self.scores_with_head)
        model.encoder.to(self.device).eval()
        self.model = model
        self._views.clear()
        self._body_boxes.clear()
        self._normalised = None  # the new model may scale intensities differently
        self._reset_support()

    #: whether this session scores with a checkpoint's compared head (``train --head``); only
    #: the evaluation's ``HeadSession`` does, so everywhere else such a file is refused instead
    #: of being scored silently as plain TPM with a threshold it never learned
    scores_with_head: bool = False

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
        need = array.size * SESSION_BYTES_PER_VOXEL
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
        self._body_boxes.clear()
        self._profiles.clear()
        self._normalised: np.ndarray | None = None
        self._reset_support()
        self._new_run()  # the last run's arrays are the old image's

    # ---------------------------------------------------------------- support
    def _reset_support(self) -> None:
        self._support = None
        self._prototypes = []
        self._support_prototypes = []
        self._slice_bias = None
        self._slice_offsets = None
        self._negative = None
        self._low = None
        self._tracked = None
        self._score = None
        self._best = None
        self._runner_up = None
        self._done = np.zeros(0, bool)
        self._paint_footprints: dict[int, Footprint] = {}
        self._tip_cache = None
        self._floor_cache = None
        self._tip_labels = None
        self._class_tips = None
        self._fill_memo = None
        self._fill_pending = None
        self._measuring_tips = False
        self._user_outline = None  # (slice, value, paint) kept after an end pass
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
        several slices along one axis, and every painted pixel feeds the prototypes. A slice
        with one structure painted as a filled region is its outline there: the labels keep
        exactly that paint on it (``options.exact_paint``); paint that covers only part of its
        organ there (a stroke, a dab) is first completed to the organ's section
        (``options.complete_paint``, :attr:`completed`).
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
        self._new_run()
        self.bootstrapped = False
        paint = np.asarray(support_labels)
        same_volume = check_paint_grid(paint, image, support_image)
        parsed = parse_support(paint, background_label)
        self._background_value = background_label
        self.contrast_steps = {}
        self.fit_scores = {}
        if not self._second_pass:  # the user's paint, not a second pass's pseudo-paint
            paint = self._take_user_paint(paint, parsed, same_volume)
        other = None if same_volume else np.asarray(support_image)
        # paint on this volume has its spacing; another volume without its own shares it
        own = same_volume or support_spacing is None
        sspacing = self._spacing if own else tuple(support_spacing)
        profiles = None
        if other is not None and self.options.match_slices and self._is_ct():
            profiles = ct_profiles(other, sspacing, parsed.axis)
        job = _Job(paint, parsed, other, sspacing, k, background_label, support_profiles=profiles)
        if not self._second_pass:
            self._note_sections(paint, parsed, sspacing)
        if not same_volume and self.options.bootstrap:
            yield from self._place_other_paint(job)
            return
        yield from self._run(job, bootstrap=False)

    def _run(self, job: _Job, *, bootstrap: bool) -> Iterator[Progress]:
        """One segmentation from checked paint: support, prototypes, scores, clean-up.

        ``job.support_image`` None means the paint is on this volume. ``bootstrap`` adds the
        second pass from the first result (:meth:`_bootstrap`); without it, paint at an
        organ's end may take its own (``options.end_second_pass``, :meth:`_end_second_pass`).
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
            sview = self._cut(snorm, sspacing, axis, only=indices)
            sidx = np.arange(len(indices))
            if self.options.fit_component:
                self._paint_footprints = self._paint_target(job, snorm)
        self._encode(sview, sidx)
        feats = self._weighted(sview.features[torch.from_numpy(sidx)]).float()  # (S, C, h, w)
        pole = self.options.pole_features and not self._second_pass  # the user's own paint
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
            # a second pass's pseudo-paint is a core of the first result, not an outline
            outlines=not self._second_pass,
            small=self.small_sections if pole else (),
            slice_features=lambda i: self._slice_features(sview, i),
        )
        self.label_values = parsed.values
        yield Progress(0, query.slices.shape[0], "support", None)
        with one_cpu_thread(self.device):
            self._fit_prototypes(k)
            self._calibrate()
            # the painted slices' own look-alikes become background evidence: refit
            # (not a second pass's pseudo-paint: a core of the organ, not its outline)
            hard = self.options.hard_negatives and same_volume and not self._second_pass
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
        elif self._end_pass_applies(job):
            yield from self._end_second_pass(job)
        else:
            yield from self._track(query)

    def set_prototypes(self, k: int) -> None:
        """Refit ``k`` prototypes per class from the cached support features and rescore.

        Uses only cached features: the encoder is not called. After a second pass (another
        volume's paint, or paint at an organ's end: ``options.end_second_pass``) the support
        is that pass's pseudo-paint, refitted as it stands: the pass is not run again. Running
        the paint again with ``k`` (its start and its outline test depend on the first pass's
        prototypes) took 7 s on the 512 x 512 x 150 phantom against the selector's 1 s goal,
        for no better result: on the tuning volumes painted at 15 / 85 % of each organ, every
        result that took the second pass, K = 1 / 5 refitted scored BTCV 0.850 / 0.868 and
        CHAOS 0.849 / 0.839, segmented again 0.847 / 0.862 and 0.842 / 0.840
        (benchmarks/RESULTS-segment.md, "The prototype selector after a second pass").
        """
        k = _check_prototypes(k)
        s = self._require_support()
        query = self._view(s.axis)
        if not query.encoded.all():
            raise ValueError("the volume is not fully encoded yet: run segment() to the end first")
        self._new_run()
        with one_cpu_thread(self.device):
            self._fit_prototypes(k)
            self._calibrate()
        # nothing is shown between the two passes here, so a refined result is upsampled once
        for _ in self._score_all(query, start=0, native=self._refine_iterations() < 1):
            pass
        for _ in self._refine(query):
            pass
        for _ in self._smooth(query):
            pass
        if not self.bootstrapped:
            for _ in self._track(query):
                pass


__all__ = [
    "WORKING_SIZE",
    "SegmentationSession",
    "SupportError",
    "VolumeTooLargeError",
    "find_support_slice",
    "resolve_device",
]
