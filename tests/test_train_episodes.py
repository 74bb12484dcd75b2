"""Supervoxel episodes and their augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tpm.phantom import make_phantom_dataset
from napari_tpm.train.augment import (
    AugmentConfig,
    _reflect,
    gamma_transform,
    random_geometric,
    warp,
)
from napari_tpm.train.episodes import EpisodeConfig, EpisodeDataset
from napari_tpm.train.volumes import volume_from_array

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def volumes():
    phantoms = make_phantom_dataset(2, shape=(12, 48, 48), seed=10)
    return [
        volume_from_array(p.image, p.spacing, name=f"p{i}", size=48, min_size=60)
        for i, p in enumerate(phantoms)
    ]


def test_volumes_are_on_the_working_grid_and_normalised(volumes):
    v = volumes[0]
    assert v.image.shape == (12, 48, 48) and v.image.dtype == np.float32
    assert abs(float(v.image.mean())) < 0.3  # z-scored (padding shifts it a little)
    assert v.supervoxels.shape == v.image.shape and v.supervoxels.max() > 3


def test_episodes_pair_neighbouring_slices_of_one_supervoxel(volumes):
    cfg = EpisodeConfig(min_support_px=25, augment=False)
    data = EpisodeDataset(volumes, cfg, seed=1)
    for i in range(15):
        ep = data[i]
        vol = volumes[int(ep["volume"])]
        zs, zq = int(ep["z_support"]), int(ep["z_query"])
        mask = ep["support_masks"][0].numpy() > 0
        ids = np.unique(vol.supervoxels[zs][mask])
        assert len(ids) == 1 and ids[0] > 0  # one supervoxel exactly
        sid = ids[0]
        query = ep["query_label"].numpy()
        np.testing.assert_array_equal(query == 1, vol.supervoxels[zq] == sid)
        on = np.flatnonzero((vol.supervoxels == sid).sum(axis=(1, 2)) > cfg.min_slice_px)
        pos_s, pos_q = np.searchsorted(on, zs), np.searchsorted(on, zq)
        assert abs(pos_s - pos_q) == 1  # consecutive slices of the supervoxel's run
        assert int(ep["n_classes"]) == 1
        assert float(ep["loc"]) == pytest.approx(zs / (vol.n_slices - 1))


def test_the_support_meets_the_minimum_area_before_the_swap(volumes):
    cfg = EpisodeConfig(min_support_px=40, augment=False)
    data = EpisodeDataset(volumes, cfg, seed=2)
    areas = []
    for i in range(30):
        ep = data[i]
        s = float(ep["support_masks"][0].sum())
        q = float((ep["query_label"] == 1).sum())
        areas.append(max(s, q))  # one of the two was the pre-swap support
        assert min(s, q) > cfg.min_slice_px
    assert min(areas) >= 40


def test_episodes_are_a_function_of_seed_rank_and_index(volumes):
    a = EpisodeDataset(volumes, EpisodeConfig(min_support_px=25), seed=5, rank=0)
    b = EpisodeDataset(volumes, EpisodeConfig(min_support_px=25), seed=5, rank=0)
    c = EpisodeDataset(volumes, EpisodeConfig(min_support_px=25), seed=5, rank=1)
    for key in ("support", "query", "support_masks", "query_label"):
        torch.testing.assert_close(a[7][key], b[7][key])
    differs = any(not torch.equal(a[i]["query"], c[i]["query"]) for i in range(4))
    assert differs


def test_multi_foreground_episodes_have_up_to_max_classes(volumes):
    cfg = EpisodeConfig(max_classes=4, min_support_px=20)
    data = EpisodeDataset(volumes, cfg, seed=3)
    seen = set()
    for i in range(12):
        ep = data[i]
        k = int(ep["n_classes"])
        seen.add(k)
        assert 1 <= k <= 4
        assert ep["support_masks"].shape[0] == 4
        areas = ep["support_masks"].sum(dim=(1, 2))
        assert (areas[:k] >= 20).all() and (areas[k:] == 0).all()
        assert int(ep["query_label"].max()) <= k
        overlap = ep["support_masks"][:k].sum(0).max()
        assert float(overlap) <= 1.0
    assert max(seen) > 1


def test_gamma_keeps_the_range_and_is_monotone():
    x = torch.linspace(-2, 3, 100).reshape(1, 10, 10)
    y = gamma_transform(x, 0.6)
    assert float(y.min()) == pytest.approx(-2) and float(y.max()) == pytest.approx(3)
    assert (y.flatten().diff() >= 0).all()
    assert float(y.mean()) > float(x.mean())  # gamma < 1 brightens


def test_identity_warp_changes_nothing():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.normal(size=(1, 20, 24)).astype(np.float32))
    masks = (img > 0.5).float()
    out, m = warp(img, masks, np.eye(3), np.zeros((2, 20, 24), np.float32), pad_value=-5.0)
    torch.testing.assert_close(out, img, atol=1e-5, rtol=0)
    torch.testing.assert_close(m, masks)


def test_translation_moves_content_and_pads_with_the_given_value():
    img = torch.zeros(1, 10, 10)
    img[0, 4, 4] = 1.0
    shift = np.array([[1, 0, 2], [0, 1, 0], [0, 0, 1]], dtype=float)  # +2 px in x
    out, _ = warp(img, torch.zeros(1, 10, 10), shift, None, pad_value=-1.0)
    assert float(out[0, 4, 6]) == pytest.approx(1.0)
    assert float(out[0, 5, 0]) == pytest.approx(-1.0) and float(out[0, 5, 1]) == pytest.approx(-1)


def test_random_geometric_keeps_masks_binary_and_close():
    rng = np.random.default_rng(1)
    img = torch.randn(1, 64, 64)
    masks = torch.zeros(2, 64, 64)
    masks[0, 20:40, 20:40] = 1
    masks[1, 45:55, 10:30] = 1
    out, m = random_geometric(img, masks, rng, AugmentConfig())
    assert out.shape == img.shape and m.shape == masks.shape
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    ratio = float(m[0].sum() / masks[0].sum())
    assert 0.6 < ratio < 1.6 and float((m[0] * masks[0]).sum()) > 0


def test_reflect_mirrors_without_repeating_the_edge():
    c = torch.tensor([-2.0, -1.0, 0.0, 4.0, 5.0, 6.0])
    torch.testing.assert_close(_reflect(c, 5), torch.tensor([2.0, 1.0, 0.0, 4.0, 3.0, 2.0]))
