"""Snapping a result's outline to the organ's intensity at native resolution."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm.boundary import grow_to_edge, intensity_model, snap_to_intensity


def _scene(seed: int = 0):
    """A bright disc (100) on a dark background (0) in 6 slices, with a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 <= 15**2
    truth = np.repeat(disc[None], 6, axis=0)
    image = np.where(truth, 100.0, 0.0) + rng.normal(0, 3, truth.shape)
    return truth, image.astype(np.float32)


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_shrunk_result_grows_back_to_the_edge():
    truth, image = _scene()
    yy, xx = np.mgrid[:64, :64]
    small = np.repeat(((yy - 32) ** 2 + (xx - 32) ** 2 <= 13**2)[None], 6, 0).astype(np.uint8)
    out = snap_to_intensity(small, image, (3.0, 1.0, 1.0), band_mm=3.0)
    assert _dice(out > 0, truth) > max(0.92, _dice(small > 0, truth) + 0.05)
    assert out.dtype == small.dtype and small.max() == 1  # input untouched


def test_grown_result_is_trimmed_and_a_painted_model_is_used():
    truth, image = _scene()
    yy, xx = np.mgrid[:64, :64]
    big = np.repeat(((yy - 32) ** 2 + (xx - 32) ** 2 <= 17**2)[None], 6, 0).astype(np.uint8)
    out = snap_to_intensity(big, image, (3.0, 1.0, 1.0), {1: (100.0, 3.0)}, band_mm=3.0)
    assert _dice(out > 0, truth) > max(0.92, _dice(big > 0, truth) + 0.04)
    assert not out[:, (yy - 32) ** 2 + (xx - 32) ** 2 > 15**2].any()  # nothing outside


def test_only_the_band_changes_and_other_labels_are_never_taken():
    truth, image = _scene()
    labels = np.zeros(truth.shape, np.uint8)
    yy, xx = np.mgrid[:64, :64]
    labels[:, ((yy - 32) ** 2 + (xx - 32) ** 2 <= 12**2)] = 1
    labels[:, 30:34, 45:48] = 2  # another organ inside the true disc, within 3 px of 1's edge
    out = snap_to_intensity(labels, image, (3.0, 1.0, 1.0), {1: (100.0, 3.0)}, band_mm=3.0)
    assert (out[labels == 2] == 2).all()
    far = (yy - 32) ** 2 + (xx - 32) ** 2 >= 16**2  # more than 3 px outside value 1
    assert (out[:, far & (labels[0] == 0)] == 0).all()
    assert (snap_to_intensity(labels, image, (3, 1, 1), band_mm=0.0) == labels).all()


def test_intensity_model_and_errors():
    assert intensity_model(np.arange(5)) is None
    med, sig = intensity_model(np.full(50, 7.0))
    assert med == 7.0 and sig > 0
    truth, image = _scene()
    lab = truth.astype(np.uint8)
    with pytest.raises(ValueError, match="one 3-D grid"):
        snap_to_intensity(lab[0], image[0], (1, 1, 1))
    with pytest.raises(ValueError, match="integer"):
        snap_to_intensity(lab.astype(float), image, (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        snap_to_intensity(lab, image, (1, 1))
    with pytest.raises(ValueError, match="band_mm"):
        snap_to_intensity(lab, image, (1, 1, 1), band_mm=-1)


def _partial_volume_scene():
    """A disc of 100 on 0 whose edge pixels hold about 75 % organ (partial volume), labelled in.

    Its edge pixels lie far outside the organ's own spread (sigma 3), so a fixed tolerance
    leaves them out, as the snap does; manual labels include them.
    """
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    truth = np.repeat((r <= 15.5)[None], 4, axis=0)
    edge = np.repeat(((r > 14.5) & (r <= 15.5))[None], 4, axis=0)
    rng = np.random.default_rng(1)
    image = np.where(truth, 100.0, 0.0) + rng.normal(0, 3, truth.shape)
    image[edge] = 75.0 + rng.normal(0, 3, int(edge.sum()))
    core = np.repeat((r <= 14.5)[None], 4, axis=0)
    return truth, core, image.astype(np.float32)


def test_grow_to_edge_takes_the_partial_volume_ring():
    truth, core, image = _partial_volume_scene()
    labels = core.astype(np.uint8)
    ring = truth & ~core
    snapped = snap_to_intensity(labels, image, (3, 1, 1), {1: (100.0, 3.0)})
    assert (snapped[ring] == 1).mean() < 0.1  # the fixed tolerance leaves the edge out
    out = grow_to_edge(labels, image, (3.0, 1.0, 1.0), {1: (100.0, 3.0)}, band_mm=3.0)
    assert (out[ring] == 1).mean() > 0.95  # the edge ring joined
    assert not out[~truth].any()  # and nothing beyond it: the background is the far side
    assert labels.max() == 1 and (labels == core).all()  # input untouched


def test_grow_to_edge_stops_at_a_look_alike_and_at_other_labels():
    truth, core, image = _partial_volume_scene()
    image[:, 8:57, 47:] = 100.0  # a broad touching neighbour as bright as the organ
    labels = core.astype(np.uint8)
    labels[:, 20:24, 15:18] = 2  # another structure in the ring on the left side
    out = grow_to_edge(labels, image, (3.0, 1.0, 1.0), {1: (100.0, 3.0)}, band_mm=3.0)
    assert not (out == 1)[:, 28:37, 47:].any()  # no growth into the look-alike
    assert (out[labels == 2] == 2).all()
    left = truth & ~core
    left[:, :, 32:] = False
    left &= labels == 0
    assert (out[left] == 1).mean() > 0.9  # where the edge is real it still grows
    assert (grow_to_edge(labels, image, (3, 1, 1), band_mm=0.0) == labels).all()
    strokes = np.zeros(labels.shape, bool)
    strokes[:, 40:, :] = True  # the user's background strokes over the lower part
    kept_out = grow_to_edge(labels, image, (3, 1, 1), {1: (100.0, 3.0)}, blocked=strokes)
    assert not ((kept_out == 1) & (labels != 1) & strokes).any()
    assert ((kept_out == 1) & (labels != 1) & ~strokes).any()
    with pytest.raises(ValueError, match="blocked"):
        grow_to_edge(labels, image, (3, 1, 1), blocked=strokes[0])
    with pytest.raises(ValueError, match="integer"):
        grow_to_edge(labels.astype(float), image, (1, 1, 1))
    with pytest.raises(ValueError, match="band_mm"):
        grow_to_edge(labels, image, (1, 1, 1), tolerance=0)
