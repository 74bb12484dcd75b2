"""Background strokes remove the region they mark (napari_tpm.exclusion)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm.exclusion import drop_stroked


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
