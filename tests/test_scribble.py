"""A stroke inside the organ is grown to the organ on its slice before it defines the prototype."""

from __future__ import annotations

import numpy as np
from skimage.draw import disk, line

from napari_tpm.phantom import make_phantom
from napari_tpm.scribble import is_scribble
from napari_tpm.session import SegmentationSession

SHAPE = (24, 96, 96)
LIVER = 5


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_thin_long_strokes_are_scribbles_filled_regions_are_not():
    stroke = np.zeros((64, 64), bool)
    stroke[line(10, 10, 50, 40)] = True
    filled = np.zeros((64, 64), bool)
    filled[disk((32, 32), 15)] = True
    small = np.zeros((64, 64), bool)
    small[disk((32, 32), 2)] = True  # a small structure painted whole
    assert is_scribble(stroke)
    assert not is_scribble(filled) and not is_scribble(small)
    assert not is_scribble(np.zeros((8, 8), bool))


def test_a_scribble_through_the_liver_segments_the_liver():
    ph = make_phantom(shape=SHAPE, seed=3)
    truth = ph.labels == LIVER
    z = int(np.nonzero(truth.any(axis=(1, 2)))[0].mean())
    ys, xs = np.nonzero(truth[z])
    # a stroke across the organ's middle row, inside the organ
    row = int(np.median(ys))
    cols = xs[ys == row]
    paint = np.zeros(SHAPE, np.uint8)
    paint[z, row, cols.min() + 2 : cols.max() - 1] = LIVER
    scores = {}
    for grow in (False, True):
        s = SegmentationSession("filterbank", device="cpu", grow_scribbles=grow)
        s.set_image(ph.image, ph.spacing)
        list(s.segment(paint))
        result = s.labels(0.5)
        scores[grow] = dice(result == LIVER, truth)
        assert (result[paint == LIVER] == LIVER).all()  # the stroke itself is kept
    assert scores[True] > 0.7
    assert scores[True] > scores[False] + 0.2
