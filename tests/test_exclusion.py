"""Background strokes remove the region they mark (napari_tpm.exclusion)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm.exclusion import STROKE_MARGIN, drop_stroked


def _organ_and_neighbour() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two cylinders side by side (the organ, slices 0-19; a neighbour, slices 12-29) that
    touch over a broad contact: one 3D region."""
    shape = (30, 60, 90)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    organ = np.zeros(shape, bool)
    other = np.zeros(shape, bool)
    organ[:20] = (yy - 30) ** 2 + (xx - 30) ** 2 <= 15**2
    other[12:] = ((yy - 30) ** 2 + (xx - 58) ** 2 <= 14**2) & ~organ[12:]
    return organ, other, organ | other


def test_a_stroke_on_the_neighbour_removes_it_and_keeps_the_organ():
    organ, other, result = _organ_and_neighbour()
    paint = np.zeros_like(result)
    paint[5] = organ[5]
    strokes = np.zeros_like(result)
    strokes[18, 30, 50:66] = True  # one line across the neighbour where it joins the result
    out = drop_stroked(result, paint, strokes, (3.0, 1.0, 1.0))
    assert out[organ].mean() > 0.95
    assert out[other].mean() < 0.1
    assert out[paint].all()


def test_nothing_changes_without_a_stroke_on_the_result_or_without_paint():
    organ, _other, result = _organ_and_neighbour()
    paint = np.zeros_like(result)
    paint[5] = organ[5]
    away = np.zeros_like(result)
    away[5, 2, 2:6] = True  # outside the result
    assert (drop_stroked(result, paint, away, (3.0, 1.0, 1.0)) == result).all()
    on = np.zeros_like(result)
    on[24, 30, 50:66] = True
    assert (drop_stroked(result, np.zeros_like(result), on, (3.0, 1.0, 1.0)) == result).all()


@pytest.mark.parametrize(
    ("shapes", "spacing", "match"),
    [
        (((4, 5, 6), (4, 5, 6), (4, 5, 7)), (1.0, 1.0, 1.0), "one shape"),
        (((5, 6), (5, 6), (5, 6)), (1.0, 1.0), "3-D"),
        (((4, 5, 6),) * 3, (1.0, 0.0, 1.0), "positive"),
    ],
)
def test_bad_input_is_refused(shapes, spacing, match):
    arrays = [np.zeros(s, bool) for s in shapes]
    with pytest.raises(ValueError, match=match):
        drop_stroked(*arrays, spacing)


def test_tissue_scoring_far_above_the_stroked_stays_with_the_paint():
    """A stroke on a leak beside the organ's far end claims that end, nearer to it than the
    paint; with the scores, what scores STROKE_MARGIN above the stroked pixels stays."""
    shape = (30, 40, 60)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    organ = np.zeros(shape, bool)
    organ[:] = (yy - 20) ** 2 + (xx - 25) ** 2 <= 10**2
    leak = np.zeros(shape, bool)
    leak[20:30] = ((yy - 20) ** 2 + (xx - 40) ** 2 <= 6**2) & ~organ[20:30]
    result = organ | leak
    paint = np.zeros_like(result)
    paint[2] = organ[2]
    strokes = np.zeros_like(result)
    strokes[26, 20, 38:44] = True  # along the leak, next to the organ's far end
    spacing = (3.0, 1.0, 1.0)
    plain = drop_stroked(result, paint, strokes, spacing)
    assert plain[organ][-10 * organ[0].sum() :].mean() < 0.9  # the far end went with the leak
    score = np.where(organ, 4.0, 1.0)
    kept = drop_stroked(result, paint, strokes, spacing, score)
    assert kept[organ].all()
    # the leak is shared out: its part nearer the stroke goes, the rest (against the organ,
    # now a seed) stays; without the scores all of it went, with the organ's far end
    assert not kept[strokes].any() and kept[leak].mean() < 0.7
    level = np.where(organ, 1.0 + STROKE_MARGIN - 0.5, 1.0)  # the organ scores like the leak
    np.testing.assert_array_equal(drop_stroked(result, paint, strokes, spacing, level), plain)
