"""Several classes on one volume: voxels cut off from their best class's paint take their
second-best class (``SegmentOptions.second_choice``)."""

from __future__ import annotations

import numpy as np

from napari_tpm.options import SegmentOptions
from napari_tpm.phantom import make_phantom
from napari_tpm.session import SegmentationSession


def _four_organs_slice(labels: np.ndarray, values: tuple[int, ...]) -> int:
    """The slice showing most of ``values``, then the largest area of them (the benchmark's
    ``multi`` mode)."""
    shown = np.stack([(labels == v).any(axis=(1, 2)) for v in values]).sum(0)
    area = np.isin(labels, values).sum(axis=(1, 2))
    return int(np.lexsort((-np.arange(labels.shape[0]), area, shown))[-1])


def test_real_mr_kidney_painted_at_its_pole_keeps_what_the_spleen_outscored(shared_data):
    """CHAOS 33 (tuning volume), liver, kidneys and spleen painted on one slice, the left
    kidney's upper pole: below it the spleen's prototypes outscore the kidney's own, and those
    voxels, cut off from the spleen's paint, were dropped (left kidney Dice 0.43 -> 0.75)."""
    from session_helpers import read_case, segment_labels

    image, labels = read_case(shared_data / "chaos_t2spir", "chaos_t2_33", "mr")
    z = _four_organs_slice(labels, (1, 2, 3, 4))
    paint = np.zeros(labels.shape, np.uint8)
    paint[z] = np.where(np.isin(labels[z], (1, 2, 3, 4)), labels[z], 0)
    kidney = labels == 3
    found = {
        on: segment_labels(image, paint, SegmentOptions(second_choice=on)) for on in (True, False)
    }
    dice = {
        k: 2 * ((v == 3) & kidney).sum() / ((v == 3).sum() + kidney.sum()) for k, v in found.items()
    }
    assert dice[True] > 0.7 and dice[True] > dice[False] + 0.2, dice
    # the kidney's voxels now go to the kidney, not to nothing
    assert ((found[True] == 3) & kidney).sum() > 1.5 * ((found[False] == 3) & kidney).sum()


def test_the_runner_up_is_kept_for_several_classes_only():
    ph = make_phantom(shape=(24, 64, 64), seed=2)
    z = _four_organs_slice(ph.labels, (5, 2))
    one = np.zeros(ph.labels.shape, np.uint8)
    one[z][ph.labels[z] == 5] = 1
    two = one.copy()
    two[z][ph.labels[z] == 2] = 2
    for paint, options, kept in (
        (one, SegmentOptions(), False),
        (two, SegmentOptions(), True),
        (two, SegmentOptions(second_choice=False), False),
    ):
        session = SegmentationSession("filterbank", device="cpu", options=options)
        session.set_image(ph.image, ph.spacing)
        for _ in session.segment(paint):
            pass
        assert (session._runner_up is not None) == kept
        if kept:
            score, second = session._runner_up
            assert score.shape == second.shape == ph.labels.shape
            assert not np.any(second == session._best)  # the runner-up is another class
            assert np.isfinite(score).all()
        labels = session.labels(None)
        assert set(np.unique(labels)) <= {0, 1, 2}
