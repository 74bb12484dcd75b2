"""Feature helpers: normalisation, masked prototypes (with bilinear upsampling), distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tpm.tpm import l2_normalize, masked_average, squared_distance, support_pixel_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bilinear_sample(feat: np.ndarray, y: int, x: int, out_hw: tuple[int, int]) -> np.ndarray:
    """Value of the align_corners=False bilinear upsampling at output pixel (y, x), by hand."""
    _, h, w = feat.shape
    H, W = out_hw

    def src(i, n_out, n_in):
        s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(s)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        return i0, i1, s - i0

    y0, y1, fy = src(y, H, h)
    x0, x1, fx = src(x, W, w)
    top = (1 - fx) * feat[:, y0, x0] + fx * feat[:, y0, x1]
    bottom = (1 - fx) * feat[:, y1, x0] + fx * feat[:, y1, x1]
    return (1 - fy) * top + fy * bottom


def test_l2_normalize_gives_unit_norm_and_keeps_zero_vectors_finite():
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    x[0, :, 0, 0] = 0.0
    y = l2_normalize(x)
    norms = torch.linalg.vector_norm(y, dim=1)
    assert torch.allclose(norms[norms > 0], torch.ones(()).double())
    assert torch.equal(y[0, :, 0, 0], torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(y[1, :, 2, 3], x[1, :, 2, 3] / x[1, :, 2, 3].norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_average_same_size_is_the_plain_mean(dtype):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 6, 8, 9, generator=g, dtype=dtype)
    mask = torch.rand(2, 8, 9, generator=g) > 0.6
    proto = masked_average(f, mask)
    assert proto.shape == (2, 6) and proto.dtype == dtype
    for b in range(2):
        expected = f[b][:, mask[b]].mean(dim=1)
        torch.testing.assert_close(proto[b], expected)


@pytest.mark.parametrize("pixel", [(0, 0), (13, 22), (31, 31), (5, 30)])
def test_masked_average_upsamples_bilinearly_without_corner_alignment(pixel):
    g = torch.Generator().manual_seed(1)
    f = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64)
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[0, pixel[0], pixel[1]] = True
    expected = _bilinear_sample(f[0].numpy(), pixel[0], pixel[1], (32, 32))
    np.testing.assert_allclose(masked_average(f, mask)[0].numpy(), expected, rtol=1e-12)


def test_masked_average_is_per_item_and_accepts_soft_masks():
    f = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    f[:, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.25], [0.0, 0.75]]], dtype=torch.float64)
    torch.testing.assert_close(
        masked_average(f, mask)[:, 0], torch.tensor([1.0, 0.25 * 2 + 0.75 * 4]).double()
    )


def test_masked_average_refuses_empty_and_mismatched_masks():
    f = torch.randn(3, 4, 5, 5)
    mask = torch.ones(3, 10, 10, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"no foreground.*\[1\]"):
        masked_average(f, mask)
    with pytest.raises(ValueError, match="batch size"):
        masked_average(f, torch.ones(2, 10, 10))
    with pytest.raises(ValueError, match="dims"):
        masked_average(f, torch.ones(10, 10))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_squared_distance_is_chord_distance_on_the_sphere(dtype):
    g = torch.Generator().manual_seed(2)
    f = torch.randn(2, 8, 3, 4, generator=g, dtype=dtype) * 5.0  # not normalised on purpose
    protos = torch.randn(3, 8, generator=g, dtype=dtype)
    d2 = squared_distance(f, protos)
    assert d2.shape == (2, 3, 3, 4) and d2.dtype == dtype
    fn = f.double().numpy()
    pn = protos.double().numpy()
    for b, k, y, x in [(0, 0, 0, 0), (1, 2, 2, 3), (1, 1, 0, 2)]:
        u = fn[b, :, y, x] / np.linalg.norm(fn[b, :, y, x])
        v = pn[k] / np.linalg.norm(pn[k])
        assert float(d2[b, k, y, x]) == pytest.approx(float(np.sum((u - v) ** 2)), abs=1e-5)
    assert float(d2.min()) >= 0.0 and float(d2.max()) <= 4.0


def test_squared_distance_extremes_and_per_item_prototypes():
    f = torch.zeros(2, 2, 1, 2, dtype=torch.float64)
    f[:, 0, 0, 0] = 1.0  # pixel 0 along e0
    f[:, 0, 0, 1] = -1.0  # pixel 1 along -e0
    protos = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    d2 = squared_distance(f, protos)
    assert d2[0, 0, 0].tolist() == [0.0, 4.0]
    per_item = torch.stack([protos, -protos])  # [B, K, C]
    d2b = squared_distance(f, per_item)
    assert d2b[0, 0, 0].tolist() == [0.0, 4.0] and d2b[1, 0, 0].tolist() == [4.0, 0.0]


def test_support_pixel_features_are_the_unit_painted_pixels():
    g = torch.Generator().manual_seed(3)
    f = torch.randn(6, 5, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(5, 7, generator=g) > 0.5
    x = support_pixel_features(f, mask)
    assert x.shape == (int(mask.sum()), 6)
    expected = l2_normalize(f, dim=0)[:, mask].T
    torch.testing.assert_close(x, expected)
    up = support_pixel_features(f, torch.ones(20, 28, dtype=torch.bool))
    assert up.shape == (20 * 28, 6)
    torch.testing.assert_close(torch.linalg.vector_norm(up, dim=1), torch.ones(560).double())
    with pytest.raises(ValueError, match="no foreground"):
        support_pixel_features(f, torch.zeros(5, 7))


def test_channel_products_match_their_sums_written_out() -> None:
    """The matrix-product forms give the per-pixel dot products and the weighted sums by hand."""
    from napari_tpm.tpm.features import channel_dot, weighted_channel_sums

    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, 5, 4, 6, generator=g, dtype=torch.float64)
    p = torch.randn(2, 5, generator=g, dtype=torch.float64)
    per_item = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    w = torch.rand(3, 2, 4, 6, generator=g, dtype=torch.float64)
    by_hand = (f[:, None] * p[None, :, :, None, None]).sum(2)
    assert torch.allclose(channel_dot(f, p), by_hand)
    by_hand_items = (f[:, None] * per_item[:, :, :, None, None]).sum(2)
    assert torch.allclose(channel_dot(f, per_item), by_hand_items)
    sums = (w[:, :, None] * f[:, None]).sum((0, 3, 4))
    assert torch.allclose(weighted_channel_sums(w, f), sums)
    with pytest.raises(ValueError, match="vectors must be"):
        channel_dot(f, p[0])
