"""Intensity normalisation and the working grid (resample, pad, and map back exactly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_tpm.phantom import make_phantom
from napari_tpm.preprocess import (
    CT_WINDOW,
    WorkingGrid,
    from_working_grid,
    guess_modality,
    normalise_intensity,
    to_working_grid,
)

SMALL = (12, 48, 56)


@pytest.fixture(scope="module")
def ct():
    return make_phantom(SMALL, seed=1, spacing=(8.0, 3.0, 3.0))


@pytest.fixture(scope="module")
def mr():
    return make_phantom(SMALL, seed=1, spacing=(8.0, 3.0, 3.0), modality="mr")


# ------------------------------------------------------------------------------------------
# modality and intensity


def test_guess_modality_on_phantoms(ct, mr) -> None:
    assert guess_modality(ct.image) == "ct"
    assert guess_modality(mr.image) == "mr"
    # already z-scored data has no Hounsfield signature
    assert guess_modality(normalise_intensity(ct.image, "ct")) == "mr"


def test_guess_modality_tight_ct_crop_with_air_and_bone() -> None:
    values = np.full((4, 10, 10), 40, dtype=np.int16)  # soft tissue, under 5 % air
    values[0, 0, :3] = -1000
    values[1, 5, 5] = 700
    assert guess_modality(values) == "ct"
    values[1, 5, 5] = 200  # air but no bone: not enough evidence
    assert guess_modality(values) == "mr"


@pytest.mark.realdata
def test_guess_modality_on_real_volumes(shared_data: Path) -> None:
    import SimpleITK as sitk

    folder = shared_data / "totalsegmentator"
    for name, expected in [("ts_ct_crop30_3mm_ct.nii.gz", "ct"), ("ts_mr_3mm_mr.nii.gz", "mr")]:
        path = folder / name
        if not path.is_file():
            pytest.skip(f"{name} absent")
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert guess_modality(array) == expected, name


def test_ct_normalisation_is_window_then_zscore(ct) -> None:
    out = normalise_intensity(ct.image, "ct")
    assert out.dtype == np.float32 and out.shape == ct.image.shape
    assert abs(float(out.mean())) < 1e-4
    assert float(out.std()) == pytest.approx(1.0, abs=1e-4)
    clipped = np.clip(ct.image.astype(np.float64), *CT_WINDOW)
    expected = (clipped - clipped.mean()) / clipped.std()
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_ct_values_outside_the_window_do_not_matter(ct) -> None:
    brighter_bone = ct.image.copy()
    brighter_bone[ct.image > 500] = 2000
    np.testing.assert_allclose(
        normalise_intensity(brighter_bone, "ct"), normalise_intensity(ct.image, "ct"), atol=1e-6
    )


def test_mr_normalisation_clips_outliers(mr) -> None:
    base = normalise_intensity(mr.image, "mr")
    assert abs(float(base.mean())) < 1e-4 and float(base.std()) == pytest.approx(1, abs=1e-4)
    spiked = mr.image.copy()
    spiked[3, 10, 10] = 1e6  # one hot voxel must not squash the whole volume
    out = normalise_intensity(spiked, "mr")
    assert float(out.max()) < 10
    keep = np.ones(out.shape, bool)
    keep[3, 10, 10] = False
    np.testing.assert_allclose(out[keep], base[keep], atol=0.05)


def test_auto_follows_the_guess(ct, mr) -> None:
    np.testing.assert_array_equal(
        normalise_intensity(ct.image), normalise_intensity(ct.image, "ct")
    )
    np.testing.assert_array_equal(
        normalise_intensity(mr.image), normalise_intensity(mr.image, "mr")
    )


def test_constant_and_bad_volumes() -> None:
    out = normalise_intensity(np.full((3, 4, 5), 7.0), "mr")
    assert out.dtype == np.float32 and np.all(out == 0)
    assert np.all(normalise_intensity(np.full((3, 4, 5), 900, np.int16), "ct") == 0)
    with pytest.raises(ValueError, match="NaN"):
        normalise_intensity(np.array([[[1.0, np.nan]]]))
    with pytest.raises(ValueError, match="modality"):
        normalise_intensity(np.zeros((2, 2, 2)), "pet")


# ------------------------------------------------------------------------------------------
# working grid


@pytest.mark.parametrize(
    ("shape", "spacing", "content", "offset"),
    [
        ((128, 128), (1.0, 1.0), (256, 256), (0, 0)),
        ((100, 200), (1.0, 1.0), (128, 256), (64, 0)),
        ((100, 100), (2.0, 1.0), (256, 128), (0, 64)),
        ((512, 384), (0.5, 0.8), (213, 256), (21, 0)),
    ],
)
def test_fit_keeps_physical_aspect(shape, spacing, content, offset) -> None:
    grid = WorkingGrid.fit(shape, spacing, size=256)
    assert grid.content_hw == content
    assert grid.offset == offset
    physical = shape[0] * spacing[0] / (shape[1] * spacing[1])
    assert content[0] / content[1] == pytest.approx(physical, rel=0.01)


def test_to_working_pads_with_given_or_minimum_value() -> None:
    grid = WorkingGrid.fit((30, 60), (1.0, 1.0), size=64)  # content (32, 64) at top 16
    slices = torch.rand(3, 1, 30, 60) + 1.0
    out = grid.to_working(slices, pad_value=-5.0)
    assert out.shape == (3, 1, 64, 64)
    assert torch.all(out[..., :16, :] == -5.0) and torch.all(out[..., 48:, :] == -5.0)
    assert torch.all(out[..., 16:48, :] >= 1.0)
    default = to_working_grid(slices, grid)
    assert torch.all(default[..., :16, :] == slices.min())


def _smooth(h: int, w: int, sy: float, sx: float) -> torch.Tensor:
    y = (torch.arange(h) + 0.5) * sy
    x = (torch.arange(w) + 0.5) * sx
    img = torch.sin(y[:, None] / 9.0) * torch.cos(x[None, :] / 13.0) + 0.01 * y[:, None]
    return img[None, None].float()


@pytest.mark.parametrize(
    ("shape", "spacing", "size"),
    [((90, 140), (1.2, 0.8), 256), ((140, 90), (0.8, 1.2), 128), ((64, 64), (1.0, 3.0), 256)],
)
def test_smooth_image_round_trip(shape, spacing, size) -> None:
    grid = WorkingGrid.fit(shape, spacing, size=size)
    native = _smooth(*shape, *spacing)
    back = grid.from_working(grid.to_working(native))
    assert back.shape == native.shape
    err = (back - native).abs()[..., 2:-2, 2:-2]  # border pixels see the clamped edge
    assert float(err.max()) < 0.03


def test_low_resolution_maps_land_on_the_right_pixels() -> None:
    """A linear ramp sampled at 1/8 resolution maps back exactly, fractional crop box included."""
    shape, spacing, size, stride = (70, 105), (1.0, 1.0), 256, 8
    grid = WorkingGrid.fit(shape, spacing, size=size)
    assert grid.offset[0] % stride != 0  # the crop box falls between map pixels
    h = size // stride
    centres = (torch.arange(h, dtype=torch.float64) + 0.5) * stride  # in working pixels
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    maps = torch.stack([ys, xs])[None].float()  # channel 0: working y, channel 1: working x
    back = from_working_grid(maps, grid)
    assert back.shape == (1, 2, *shape)
    top, left = grid.offset
    ch, cw = grid.content_hw
    expect_y = top + (torch.arange(shape[0]) + 0.5) * ch / shape[0]
    expect_x = left + (torch.arange(shape[1]) + 0.5) * cw / shape[1]
    # rows lie inside the map's pixel centres (the width fills the square: edges are clamped)
    np.testing.assert_allclose(back[0, 0, :, 0].numpy(), expect_y.numpy(), atol=1e-3)
    inner = (expect_x > stride / 2) & (expect_x < size - stride / 2)
    np.testing.assert_allclose(back[0, 1, 0, inner].numpy(), expect_x[inner].numpy(), atol=1e-3)


def test_batches_map_back_like_single_slices() -> None:
    grid = WorkingGrid.fit((50, 70), (1.0, 0.8), size=64)
    maps = torch.rand(3, 2, 8, 8)
    together = grid.from_working(maps)
    one_by_one = torch.cat([grid.from_working(maps[i : i + 1]) for i in range(3)])
    assert together.shape == (3, 2, 50, 70)
    torch.testing.assert_close(together, one_by_one)


def test_full_and_low_resolution_maps_agree() -> None:
    grid = WorkingGrid.fit((96, 72), (1.0, 1.5), size=128)
    native = _smooth(96, 72, 1.0, 1.5)
    working = grid.to_working(native)
    low = torch.nn.functional.avg_pool2d(working, 4)
    a, b = grid.from_working(working), grid.from_working(low)
    assert float((a - b).abs()[..., 4:-4, 4:-4].max()) < 0.1


def test_mask_centroid_maps_consistently() -> None:
    shape, spacing = (60, 100), (2.0, 0.9)
    grid = WorkingGrid.fit(shape, spacing, size=128)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[10:25, 55:80] = 3
    working = grid.to_working_mask(mask)
    assert working.shape == (128, 128) and working.dtype == np.uint8
    assert set(np.unique(working)) == {0, 3}
    rows, cols = np.nonzero(working)
    # back to native pixel units through the recorded offset and scale
    ch, cw = grid.content_hw
    native_r = (rows.mean() + 0.5 - grid.offset[0]) * shape[0] / ch - 0.5
    native_c = (cols.mean() + 0.5 - grid.offset[1]) * shape[1] / cw - 0.5
    r0, c0 = np.nonzero(mask)
    assert native_r == pytest.approx(r0.mean(), abs=0.5)
    assert native_c == pytest.approx(c0.mean(), abs=0.5)
    # the same answer through the image path
    soft = grid.to_working(torch.from_numpy(mask.astype(np.float32))[None, None], 0.0)[0, 0]
    wr = (soft.sum(1) * torch.arange(128)).sum() / soft.sum()
    assert float(wr) == pytest.approx(rows.mean(), abs=0.5)
    as_tensor = grid.to_working_mask(torch.from_numpy(mask))
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_array_equal(as_tensor.numpy(), working)


def test_wrong_slice_shape_is_refused() -> None:
    grid = WorkingGrid.fit((32, 40), (1.0, 1.0), size=64)
    with pytest.raises(ValueError, match="shape"):
        grid.to_working(torch.zeros(1, 1, 40, 32))
    with pytest.raises(ValueError, match="shape"):
        grid.to_working_mask(np.zeros((31, 40)))
    with pytest.raises(ValueError):
        WorkingGrid.fit((32, 40), (0.0, 1.0))
