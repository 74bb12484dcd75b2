"""The session's scoring stages: prototypes, calibration, scoring.

:class:`ScoringSteps` is a mixin of :class:`napari_tpm.session.SegmentationSession`: the steps
that turn a support into the cached per-class log-odds (``_low`` on the working grid, ``_score``
and ``_best`` on the native grid). The maths lives in :mod:`napari_tpm._session_scoring`; these
methods hold the order and the caches, and stay methods so that a subclass that scores with
another head (``HeadSession`` overrides ``_low_scores``) is the one asked everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_tpm._session_data import (
    _outward_batches,
    _start_slice,
    _Support,
    _Volume,
)
from napari_tpm._session_scoring import (
    calibrate,
    fit_prototypes,
    low_scores,
    painted_scores,
    slice_offsets,
)
from napari_tpm._threads import one_cpu_thread
from napari_tpm.options import SegmentOptions
from napari_tpm.progress import Progress
from napari_tpm.tpm import l2_normalize

if TYPE_CHECKING:
    from napari_tpm.checkpoints import TPMModel


class ScoringSteps:
    """Support -> prototypes -> calibrated class log-odds over the volume."""

    # provided by SegmentationSession
    model: TPMModel
    options: SegmentOptions
    device: torch.device
    batch_size: int
    n_prototypes: int
    _second_pass: bool
    _support: _Support | None
    _prototypes: list[tuple[torch.Tensor, torch.Tensor]]
    _support_prototypes: list[tuple[torch.Tensor, torch.Tensor]]
    _negative: tuple[torch.Tensor, torch.Tensor] | None
    _slice_bias: torch.Tensor | None
    _slice_offsets: np.ndarray | None
    _class_offsets: torch.Tensor | None
    _offset: float
    _low: torch.Tensor | None
    _score: np.ndarray | None
    _tip_cache: float | None
    _tip_labels: tuple[float, np.ndarray] | None
    _class_tips: np.ndarray | None
    _fill_memo: dict[int, np.ndarray] | None
    _fill_pending: dict[int, np.ndarray] | None
    _floor_cache: tuple[float, float] | None
    _best: np.ndarray | None
    _runner_up: tuple[np.ndarray, np.ndarray] | None
    _done: np.ndarray
    _run_arrays: dict[str, np.ndarray]
    _tracked: list[tuple[int, np.ndarray, torch.Tensor]] | None

    if TYPE_CHECKING:

        def _weighted(self, features: torch.Tensor) -> torch.Tensor: ...

        def _weighted_view(self, view: _Volume) -> torch.Tensor | None: ...

        def _require_support(self) -> _Support: ...

        def _encode(self, view: _Volume, indices: np.ndarray) -> None: ...

        def labels(self, prior: float | None = None) -> np.ndarray: ...

        def auto_prior(self) -> float: ...

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
        self._slice_offsets = None
        if self.model.calibrated:
            return
        s = self._support
        assert s is not None
        # without the background strokes' evidence: calibrating with it would move the boundary
        # until the painted count is reproduced again and so cancel most of the strokes' push
        # on look-alikes elsewhere (with several prototypes nearly all of it). Mined look-alikes
        # (``hard_negatives``) sit next to the organ on its own slice and were measured with
        # the boundary recalibrated over them, so where they were found they keep it.
        negative = self._negative
        if s.mined_features is None:
            self._negative = None
        try:
            painted = painted_scores(s, self._low_scores)  # one scoring for both
            self._offset, self._class_offsets = calibrate(s, painted, self.options.class_boundaries)
            # the user's own paint on several slices (a second pass paints one)
            if self.options.slice_boundaries and s.same_volume and not self._second_pass:
                self._slice_offsets = slice_offsets(s, painted, self._offset)
        finally:
            self._negative = negative

    def _score_all(
        self,
        query: _Volume,
        *,
        start: int,
        scores: torch.Tensor | None = None,
        native: bool = True,
    ) -> Iterator[Progress]:
        """Score every slice (encoding what is missing) and write the native-grid scores.

        ``scores``: the calibrated class log-odds of the whole volume with the current
        prototypes, when the caller has them already (the refinement's last scoring).
        ``native=False`` keeps only the working-grid scores: for a pass that nobody sees
        because the refinement rescores it at once (upsampling is a third of a pass's time).
        """
        n = query.slices.shape[0]
        if native:  # else the native arrays wait for the pass that fills them
            grid = (n, *query.slices.shape[1:])
            self._score = self._run_array("score", grid, np.float32, -np.inf)
            self._best = self._run_array("best", grid, np.uint8, 0)
            self._runner_up = None
            if len(self.label_values) > 1 and self.options.second_choice:
                self._runner_up = (
                    self._run_array("runner_up", grid, np.float32, -np.inf),
                    self._run_array("runner_up_best", grid, np.uint8, 0),
                )
            self._done = np.zeros(n, bool)
        low = None
        whole = self._weighted_view(query)  # None while slices are still to be encoded
        for lo, hi in _outward_batches(n, start, self.batch_size):
            idx = np.arange(lo, hi)
            self._encode(query, idx)
            with one_cpu_thread(self.device):
                if scores is not None:
                    batch = scores[lo:hi]
                else:
                    feats = self._weighted(query.features[lo:hi]) if whole is None else whole[lo:hi]
                    batch = self._calibrated_scores(feats, self._prototypes)
                if self._slice_bias is not None:
                    batch = batch + self._slice_bias[lo:hi, :, None, None]
                if self._slice_offsets is not None:
                    batch = batch + self._slice_boundaries(lo, hi)[:, None, None, None]
                if low is None:
                    low = torch.zeros((n, *batch.shape[1:]), dtype=torch.float32)
                low[lo:hi] = batch
                if native:
                    self._to_native(query, batch, lo, hi)
            yield Progress(int(self._done.sum()), n, "segment", (lo, hi))
        self._low = low

    def _run_array(self, key: str, shape: tuple[int, ...], dtype: type, fill: float) -> np.ndarray:
        """A native-grid array for one pass, filled with ``fill``: this run's own earlier one
        refilled in place, else a new one.

        Why: a run scores the volume several times (the refinement; another volume's paint
        five candidates of up to three passes each), and new pages of a 512 x 512 x 150
        float32 array cost 0.4-0.9 s to fault in on the 2-core sandbox, a tenth of the CLI's
        time. Only arrays of the same run are reused: :meth:`_new_run` empties the pool when
        a run starts, so a finished run's arrays, which the widget's background relabel may
        still be reading (``napari_tpm/_widget/_relabel.py``), are never written again.
        """
        array = self._run_arrays.get(key)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = np.full(shape, fill, dtype=dtype)
            self._run_arrays[key] = array
        else:
            array.fill(fill)
        return array

    def _new_run(self) -> None:
        """A run starts: later passes may reuse its own arrays only (:meth:`_run_array`)."""
        self._run_arrays = {}

    def _slice_boundaries(self, lo: int, hi: int) -> torch.Tensor:
        """(hi - lo,) the painted slices' own boundaries (``options.slice_boundaries``) at
        slices lo..hi: linear between painted slices, the nearest one's beyond them."""
        assert self._slice_offsets is not None
        index, own = self._slice_offsets.T
        return torch.from_numpy(np.interp(np.arange(lo, hi), index, own)).float()

    def _to_native(self, query: _Volume, low: torch.Tensor, lo: int, hi: int) -> None:
        """Upsample per-class scores of slices lo..hi to the native grid; keep best class.

        With relaxed per-class boundaries the class is chosen on the shared scores and only
        its boundary against the background is its own: relaxing the liver must not let it
        take pixels the kidney wins on the shared scores.
        """
        self._tip_cache = None  # the scores change: the tip shift is measured again
        self._tracked = None  # ... and the walk past the result's ends is taken again
        self._floor_cache = None
        self._tip_labels = None
        self._class_tips = None
        self._fill_memo = None  # the fill is taken again on the new scores
        self._fill_pending = None
        up = query.grid.from_working(low)  # (b, K, H, W)
        if self._class_offsets is not None and self.options.class_boundaries == "relax":
            chooser = up - self._class_offsets[None, :, None, None]
            index = chooser.argmax(1)
            self._score[lo:hi] = up.gather(1, index[:, None])[:, 0].numpy()
            self._best[lo:hi] = index.to(torch.uint8).numpy()
            self._keep_runner_up(up, chooser, lo, hi)
        elif up.shape[1] == 1:  # one class: a max over one channel costs as much as the upsampling
            self._score[lo:hi] = up[:, 0].numpy()
            self._best[lo:hi] = 0
        else:
            best = up.max(1)
            self._score[lo:hi] = best.values.numpy()
            self._best[lo:hi] = best.indices.to(torch.uint8).numpy()
            self._keep_runner_up(up, up, lo, hi)
        self._done[lo:hi] = True

    def _keep_runner_up(self, up: torch.Tensor, chooser: torch.Tensor, lo: int, hi: int) -> None:
        """Each voxel's second-best class and its score (``options.second_choice``)."""
        if self._runner_up is None or up.shape[1] < 2:
            return
        second = chooser.topk(2, dim=1).indices[:, 1]
        self._runner_up[0][lo:hi] = up.gather(1, second[:, None])[:, 0].numpy()
        self._runner_up[1][lo:hi] = second.to(torch.uint8).numpy()
