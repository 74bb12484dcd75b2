"""Reordering another volume's voxels to the query's axes (napari_tpm.orientation)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm.io import Volume
from napari_tpm.orientation import orientation_code, reorient_like, support_like

LPS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # a NIfTI "RAS" file, in ITK's LPS world
LAS = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
XZ_SWAPPED = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0)


def _ramp(shape=(3, 4, 5), dtype=np.int16) -> np.ndarray:
    return np.arange(np.prod(shape)).reshape(shape).astype(dtype)


def test_codes_name_where_each_axis_points():
    assert [orientation_code(d) for d in (LPS, RAS, LAS)] == ["LPS", "RAS", "LAS"]


def test_a_left_right_mirror_is_undone_without_resampling():
    a = _ramp()
    out, spacing = reorient_like(a, (3.0, 2.0, 1.0), LAS, RAS)
    np.testing.assert_array_equal(out, a[:, :, ::-1])
    assert spacing == (3.0, 2.0, 1.0) and out.dtype == a.dtype


def test_swapped_axes_are_transposed_with_their_voxel_size():
    a = _ramp()
    out, spacing = reorient_like(a, (3.0, 2.0, 1.0), XZ_SWAPPED, LPS)
    np.testing.assert_array_equal(out, a.transpose(2, 1, 0))
    assert spacing == (1.0, 2.0, 3.0)


def test_same_orientation_returns_the_array_itself():
    a = _ramp()
    out, spacing = reorient_like(a, (1, 1, 1), RAS, RAS)
    assert out is a and spacing == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.float32])
def test_paint_and_image_move_together_and_keep_their_types(dtype):
    image = Volume(_ramp(dtype=np.float32), (2.0, 1.0, 1.0), direction=LAS)
    paint = Volume(np.zeros((3, 4, 5), dtype), (2.0, 1.0, 1.0), direction=LAS)
    paint.array[1, 2, 0] = 1
    query = Volume(np.zeros((1, 1, 1)), direction=RAS)
    moved, moved_paint, change = support_like(image, paint, query)
    assert change == "LAS -> RAS"
    assert moved_paint.array.dtype == np.dtype(dtype)
    assert np.argwhere(moved_paint.array).tolist() == [[1, 2, 4]]
    assert moved.array[1, 2, 4] == image.array[1, 2, 0]
    same = support_like(image, paint, Volume(np.zeros((1, 1, 1)), direction=LAS))
    assert same[0] is image and same[1] is paint and same[2] == ""


def test_evaluation_reorders_a_support_case_like_its_query():
    from napari_tpm.evaluate.datasets import LoadedCase

    image, labels = _ramp(dtype=np.float32), np.zeros((3, 4, 5), np.uint8)
    labels[0, 1, 1] = 3
    support = LoadedCase("s", image, labels, (2.0, 1.0, 1.0), LAS)
    query = LoadedCase("q", image, labels, (2.0, 1.0, 1.0), RAS)
    moved = support.like(query)
    np.testing.assert_array_equal(moved.image, image[:, :, ::-1])
    assert np.argwhere(moved.labels).tolist() == [[0, 1, 3]]
    assert moved.direction == RAS and moved.spacing == (2.0, 1.0, 1.0)
    assert support.like(LoadedCase("q2", image, labels, (1, 1, 1), LAS)) is support
