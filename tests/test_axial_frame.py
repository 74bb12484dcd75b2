"""Position channels of slices cut along another axis take the axial slices' body frame."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_tpm import axial_frame
from napari_tpm._session_data import _encode_slices, _make_view
from napari_tpm.encoders.filterbank import FilterBankEncoder
from napari_tpm.session import SegmentationSession


def _raw_position(view, bank: FilterBankEncoder) -> np.ndarray:
    """(2, n, H, W): the view's position channels as raw coordinates on its native slices."""
    f = view.features.float()
    g = f * (bank.anchor / f[:, -1:])
    centre, scale = bank.group_stats["position"]
    raw = g[:, bank.group_channels("position")] * math.sqrt(2) / bank.group_weights["position"]
    raw = raw * scale + centre
    return np.moveaxis(view.grid.from_working(raw).numpy(), 1, 0)


def _body_cylinder() -> tuple[np.ndarray, tuple[float, float, float]]:
    """A body whose axial outline (an ellipse) is the same on every slice: on coronal slices
    its width changes from the back to the front, the case the axial frame is for."""
    z, y, x = 24, 64, 80
    yy, xx = np.mgrid[:y, :x]
    body = ((yy - 32) / 26.0) ** 2 + ((xx - 40) / 34.0) ** 2 <= 1.0
    rng = np.random.default_rng(0)
    noise = 0.05 * rng.standard_normal((z, y, x))
    vol = np.where(body, 1.0 + noise, -2.0)  # air at the slice floor, as on a CT
    return vol.astype(np.float32), (4.0, 1.5, 1.5)


@pytest.mark.parametrize("axis", [1, 2])
def test_coronal_and_sagittal_slices_read_the_axial_slices_position(axis: int) -> None:
    """Across the slice: the axial slice's own body-box coordinate (its columns for coronal
    slices, its rows for sagittal ones); along the scan's first axis: the place among its
    slices, the same on every slice."""
    vol, spacing = _body_cylinder()
    bank = FilterBankEncoder()
    axial = _make_view(vol, spacing, 0)
    _encode_slices(axial, np.arange(vol.shape[0]), bank, torch.device("cpu"))
    want = _raw_position(axial, bank)[2 - axis]  # (Z, Y, X): x_rel (coronal), y_rel (sagittal)

    other = _make_view(vol, spacing, axis)
    other.frame = axial_frame.axial_boxes(axial.slices, axial.grid, axial.pad_value, bank)
    n = other.slices.shape[0]
    _encode_slices(other, np.arange(n), bank, torch.device("cpu"))
    got = np.moveaxis(_raw_position(other, bank), 1, axis + 1)  # back to (2, Z, Y, X)

    inside = vol[0] > 0  # compare inside the body, away from the volume's first/last slices
    err = np.abs(got[1] - want)[2:-2][:, inside]
    assert np.percentile(err, 95) < 0.05, np.percentile(err, [50, 95, 100])
    z = np.linspace(-1, 1, vol.shape[0])[:, None]
    np.testing.assert_allclose(
        got[0][:, inside], np.broadcast_to(z, got[0][:, inside].shape), atol=0.05
    )

    # the bank's own channels across those slices put the same voxel somewhere else: the
    # body is narrower on a slice through its back than on one through its middle
    own = _make_view(vol, spacing, axis)
    _encode_slices(own, np.arange(n), bank, torch.device("cpu"))
    own_pos = np.moveaxis(_raw_position(own, bank), 1, axis + 1)[1]
    assert np.percentile(np.abs(own_pos - want)[2:-2][:, inside], 95) > 0.2


def test_every_view_shares_the_mended_axial_frame() -> None:
    vol, spacing = _body_cylinder()
    s = SegmentationSession("default", device="cpu")
    s.set_image(vol, spacing)
    assert s._view(0).frame is not None
    np.testing.assert_array_equal(s._view(0).frame, s._view(1).frame)
    np.testing.assert_array_equal(s._view(1).frame, s._view(2).frame)


def test_axial_positions_from_the_banks_own_boxes_are_its_own_channels() -> None:
    """With each slice's own box (none mended) the axial view's position channels are the
    bank's, so only a box edge put back changes a feature."""
    vol, spacing = _body_cylinder()
    vol[:, :, :30] += np.linspace(0, 1, vol.shape[0])[:, None, None]  # boxes differ by slice
    bank = FilterBankEncoder()
    own = _make_view(vol, spacing, 0)
    _encode_slices(own, np.arange(vol.shape[0]), bank, torch.device("cpu"))
    framed = _make_view(vol, spacing, 0)
    framed.frame = axial_frame.axial_boxes(framed.slices, framed.grid, framed.pad_value, bank)
    _encode_slices(framed, np.arange(vol.shape[0]), bank, torch.device("cpu"))
    np.testing.assert_allclose(
        framed.features.float().numpy(), own.features.float().numpy(), atol=2e-3
    )


def test_mending_puts_back_a_box_edge_that_jumped_and_leaves_the_others() -> None:
    n = 21
    boxes = np.stack(
        [np.full(n, 10.0), np.linspace(200, 220, n), np.full(n, 5.0), np.full(n, 250.0)], 1
    )
    broken = boxes.copy()
    broken[9:12, 1] = (130, 120, 115)  # three slices lose the body's lower part
    mended = axial_frame.mend_boxes(broken, slice_mm=5.0)  # 15 mm: three slices each side
    # (the median of seven with three lost lies three slices' drift below the true edge)
    np.testing.assert_allclose(mended[9:12, 1], boxes[9:12, 1], atol=3.5)
    keep = np.ones(boxes.shape, bool)
    keep[9:12, 1] = False
    np.testing.assert_array_equal(mended[keep], broken[keep])  # the body's course as found
    # slices thicker than twice the run: nothing to take a median over
    np.testing.assert_array_equal(axial_frame.mend_boxes(broken, slice_mm=40.0), broken)


def test_a_slice_with_part_of_the_body_lost_keeps_its_neighbours_positions() -> None:
    """A slice on which the bank's body rule loses the body's back half (darkened below the
    floor the rule keeps) gets its neighbours' position channels in the session's view."""
    vol, spacing = _body_cylinder()
    vol = np.repeat(vol, 2, axis=0)[:32]  # 32 slices of 4 mm: 15 mm is 4 slices each side
    vol[16, 36:] = -2.0  # the back half of slice 16 reads as air
    s = SegmentationSession("default", device="cpu")
    s.set_image(vol, spacing)
    view = s._view(0)
    _encode_slices(view, np.arange(vol.shape[0]), s.model.encoder, torch.device("cpu"))
    bank = s.model.encoder
    pos = _raw_position(view, bank)  # (2, Z, Y, X)
    body = vol[15] > 0
    np.testing.assert_allclose(pos[:, 16][:, body], pos[:, 15][:, body], atol=0.02)

    own = _make_view(vol, spacing, 0)  # the bank's own boxes: slice 16 reads as elsewhere
    _encode_slices(own, np.arange(vol.shape[0]), bank, torch.device("cpu"))
    own_pos = _raw_position(own, bank)
    assert np.abs(own_pos[0, 16][body] - own_pos[0, 15][body]).max() > 0.2


def test_the_frame_is_for_the_other_axes_only() -> None:
    grid = _make_view(np.zeros((4, 8, 8), np.float32), (1.0, 1.0, 1.0), 0).grid
    with pytest.raises(ValueError, match="axis 1 or 2"):
        axial_frame.position_map(np.zeros((4, 4)), 0, grid, (4, 4), 4)


def test_real_ct_kidney_painted_on_a_coronal_slice_is_found_through_its_slices(
    shared_data, monkeypatch
):
    """BTCV 15's right kidney painted on its middle coronal slice (tuning volume): with each
    coronal slice's own body box, the kidney scored as background three slices away (Dice
    0.15); in the axial frame it is found through its slices."""
    from session_helpers import read_case

    image, labels = read_case(shared_data / "sabs_ct", "sabs_15", "ct")
    kidney = labels == 2
    coronal = np.moveaxis(kidney, 1, 0)
    zs = np.flatnonzero(coronal.any(axis=(1, 2)))
    paint = np.zeros(coronal.shape, np.uint8)
    paint[zs[len(zs) // 2]][coronal[zs[len(zs) // 2]]] = 1
    paint = np.moveaxis(paint, 0, 1)
    dice = {}
    for frame in (True, False):
        monkeypatch.setattr(axial_frame, "supports", lambda encoder, on=frame: on)
        s = SegmentationSession("filterbank", device="cpu")
        s.set_image(image.array, image.spacing)
        for _ in s.segment(paint):
            pass
        found = s.labels(None) > 0
        dice[frame] = 2 * (found & kidney).sum() / (found.sum() + kidney.sum())
    assert dice[True] > 0.65 and dice[True] > dice[False] + 0.3, dice


def test_real_ct_slices_whose_body_box_jumped_take_their_neighbours(shared_data):
    """BTCV 15 (tuning volume): the bank's body rule loses the body's lower part on slices
    83-85 (box edge at 113-141 of 256 between 209 and 213); the session's frame puts it back,
    and leaves the slices around them as the bank found them."""
    from session_helpers import read_case

    image, _ = read_case(shared_data / "sabs_ct", "sabs_15", "ct")
    s = SegmentationSession("filterbank", device="cpu")
    s.set_image(image.array, image.spacing)
    view = s._view(0)
    own = axial_frame.axial_boxes(view.slices, view.grid, view.pad_value, s.model.encoder)
    assert own[83:86, 1].max() < 150 and own[[81, 82, 86, 87], 1].min() > 200
    assert view.frame[83:86, 1].min() > 200
    np.testing.assert_array_equal(view.frame[70:83], own[70:83])
