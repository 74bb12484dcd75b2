"""Paint inside the organ (a stroke, a dab) is completed to the organ on its slice before it
defines the prototype."""

from __future__ import annotations

import numpy as np
from skimage.draw import disk, line

from napari_tpm.phantom import make_phantom
from napari_tpm.scribble import (
    FAR_RATIO,
    FAR_RING_SIMILAR_SHARE,
    PARTIAL_RATIO,
    RING_SIMILAR_SHARE,
    complete_section,
    drawn_as_strokes,
    grow_scribbles,
    is_scribble,
)
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


def test_a_thin_section_of_an_outlined_structure_is_not_grown_as_a_stroke():
    import torch

    masks = torch.zeros((2, 64, 64), dtype=torch.int64)
    masks[0][torch.from_numpy(_disc(64, 15))] = 1  # outlined as a filled region here
    masks[1][torch.from_numpy(_line(64))] = 1  # thin on this slice: the organ's tail
    masks[1][torch.from_numpy(_line(64, shift=10))] = 2  # another structure, strokes only
    assert drawn_as_strokes(masks) == {2}
    calls = []

    def score_fn(feats, pix):
        calls.append(1)
        return torch.linspace(5, -5, 16)[:, None].expand(16, 16)  # the upper half is organ

    grown = grow_scribbles(masks, torch.zeros((2, 4, 16, 16)), score_fn)
    assert torch.equal(grown == 1, masks == 1)  # the outlined structure's tail kept as painted
    assert (grown == 2).sum() > (masks == 2).sum()  # the stroke-only structure grew
    assert len(calls) == 1


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
        s = SegmentationSession(
            "filterbank", device="cpu", grow_scribbles=grow, complete_paint=False
        )
        s.set_image(ph.image, ph.spacing)
        list(s.segment(paint))
        result = s.labels(0.5)
        scores[grow] = dice(result == LIVER, truth)
        assert (result[paint == LIVER] == LIVER).all()  # the stroke itself is kept
    assert scores[True] > 0.7
    assert scores[True] > scores[False] + 0.2


def _disc(size: int, radius: int) -> np.ndarray:
    out = np.zeros((size, size), bool)
    out[disk((size // 2, size // 2), radius)] = True
    return out


def _line(size: int, shift: int = 0) -> np.ndarray:
    out = np.zeros((size, size), bool)
    out[line(10 + shift, 5, 20 + shift, 55)] = True
    return out


def _disc_slice(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright disc (the organ) on a darker, noisy slice; coarse scores that blur its edge."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    organ = np.zeros((96, 96), bool)
    organ[disk((48, 48), 20)] = True
    image = np.where(organ, 1.0, 0.2) + rng.normal(0, 0.03, organ.shape)
    scores = ndimage.gaussian_filter(np.where(organ, 5.0, -5.0), 4)  # the edge blurred
    return image.astype(np.float32), scores.astype(np.float32), organ


def test_a_dab_is_completed_to_the_organ_a_filled_section_is_not():
    image, scores, organ = _disc_slice()
    dab = np.zeros_like(organ)
    dab[disk((44, 50), 4)] = True
    region = complete_section(image, scores, dab)
    assert region is not None and region[dab].all()
    assert dice(region, organ) > 0.95  # the image's edge, not the blurred scores'
    assert complete_section(image, scores, organ) is None  # already the outline
    # nothing scored low enough to mark background: no completion rather than the whole slice
    assert complete_section(image, np.full_like(scores, 3.0), dab) is None


def test_a_stroke_beside_a_vessel_is_completed_a_dab_there_is_not():
    """A vessel runs along the paint (about a third of the ring around it is darker than the
    paint): that fails the strict ring test, which a stroke far smaller than its region is
    spared; a dab is not, since a small round paint is also how a vessel is outlined."""
    from scipy import ndimage

    def paint_beside_a_vessel(shape: str) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(0)
        organ = np.zeros((96, 96), bool)
        organ[disk((48, 48), 20)] = True
        image = np.where(organ, 1.0, 0.2) + rng.normal(0, 0.03, organ.shape)
        paint = np.zeros_like(organ)
        vessel = np.zeros_like(organ)
        if shape == "stroke":
            paint[47:50, 36:60] = True
            vessel[50:52, 38:50] = True
        else:
            paint[disk((48, 49), 4)] = True
            vessel[:, 52:55] = True
        image[vessel & organ & ~paint] = 0.6
        ring = ndimage.binary_dilation(paint, iterations=2) & ~paint
        lo, hi = np.percentile(image[paint], [5, 95])
        share = ((image[ring] >= lo) & (image[ring] <= hi)).mean()
        assert FAR_RING_SIMILAR_SHARE <= share < RING_SIMILAR_SHARE
        scores = ndimage.gaussian_filter(np.where(organ, 5.0, -5.0), 4).astype(np.float32)
        return complete_section(image.astype(np.float32), scores, paint), paint, organ

    region, stroke, organ = paint_beside_a_vessel("stroke")
    assert region is not None and region.sum() >= FAR_RATIO * stroke.sum()
    assert dice(region, organ) > 0.95
    region, dab, organ = paint_beside_a_vessel("dab")
    assert organ.sum() >= FAR_RATIO * dab.sum()
    assert region is None


def test_completion_never_takes_blocked_pixels():
    image, scores, organ = _disc_slice(1)
    dab = np.zeros_like(organ)
    dab[disk((48, 40), 3)] = True
    other = np.zeros_like(organ)
    other[40:56, 58:66] = True  # another structure's paint (or a background stroke)
    region = complete_section(image, scores, dab, blocked=other)
    assert region is not None
    assert not (region & other).any()
    assert region.sum() >= PARTIAL_RATIO * dab.sum()


def test_a_dab_in_the_liver_segments_the_liver_and_filled_paint_is_unchanged():
    ph = make_phantom(shape=SHAPE, seed=3)
    truth = ph.labels == LIVER
    z = int(np.nonzero(truth.any(axis=(1, 2)))[0].mean())
    inside = np.argwhere(truth[z])
    cy, cx = inside[len(inside) // 2]
    dab = np.zeros(SHAPE, np.uint8)
    dab[z][disk((cy, cx), 2, shape=SHAPE[1:])] = LIVER
    dab[z][~truth[z]] = 0
    filled = np.where(truth & (np.arange(SHAPE[0]) == z)[:, None, None], LIVER, 0).astype(np.uint8)
    results = {}
    for complete in (False, True):
        s = SegmentationSession("filterbank", device="cpu", complete_paint=complete)
        s.set_image(ph.image, ph.spacing)
        list(s.segment(dab))
        results["dab", complete] = s.labels(None) == LIVER
        assert s.completed == ({LIVER: (z,)} if complete else {})
        list(s.segment(filled))
        results["filled", complete] = s.labels(None) == LIVER
        assert s.completed == {}
    assert dice(results["dab", True], truth) > 0.7
    assert dice(results["dab", True], truth) > dice(results["dab", False], truth) + 0.3
    assert (results["filled", True] == results["filled", False]).all()


def test_an_outline_against_a_look_alike_neighbour_is_not_completed():
    """The watershed from an outlined section floods into a touching neighbour of the same
    look (a kidney against the liver): the region is far larger than the paint, but the
    outline ends at the image's edge on most of its length, so the paint stays as drawn; a dab
    inside that neighbour is completed to it."""
    from scipy import ndimage

    rng = np.random.default_rng(2)
    organ = np.zeros((96, 96), bool)
    organ[disk((48, 30), 10)] = True
    neighbour = np.zeros_like(organ)
    neighbour[20:80, 39:90] = True  # touches the organ's right side
    image = np.where(organ | neighbour, 1.0, 0.2) + rng.normal(0, 0.03, organ.shape)
    scores = ndimage.gaussian_filter(np.where(organ | neighbour, 5.0, -5.0), 3)
    outlined = complete_section(image.astype(np.float32), scores, organ)
    assert outlined is None
    dab = np.zeros_like(organ)
    dab[disk((50, 65), 4)] = True
    region = complete_section(image.astype(np.float32), scores, dab)
    assert region is not None and dice(region, neighbour | organ) > 0.9
