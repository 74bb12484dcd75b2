"""3D Felzenszwalb supervoxels: size floor, body coverage, determinism, edge weights, cache."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_tpm.phantom import make_phantom
from napari_tpm.train import _fh_kernels as kernels
from napari_tpm.train import supervoxels as sv


@pytest.fixture(scope="module")
def phantom_image() -> tuple[np.ndarray, tuple[float, float, float]]:
    p = make_phantom((12, 64, 64), seed=3)
    return p.image, p.spacing


def test_every_supervoxel_reaches_min_size_unless_its_body_component_is_smaller(phantom_image):
    image, spacing = phantom_image
    min_size = 150
    labels = sv.compute_supervoxels(image, spacing, min_size=min_size)
    body = sv.body_mask(sv.scale_to_255(image))
    components, _ = ndi.label(body, structure=np.ones((3, 3, 3)))
    comp_sizes = np.bincount(components.ravel())
    sizes = np.bincount(labels.ravel())
    ids = np.flatnonzero(sizes)[1:] if sizes[0] else np.flatnonzero(sizes)
    assert len(ids) > 3
    for i in ids:
        if sizes[i] >= min_size:
            continue
        comp = np.unique(components[labels == i])
        assert len(comp) == 1 and sizes[i] == comp_sizes[comp[0]], f"supervoxel {i} too small"


def test_supervoxels_cover_exactly_the_body_and_are_connected(phantom_image):
    image, spacing = phantom_image
    labels = sv.compute_supervoxels(image, spacing, min_size=100)
    body = sv.body_mask(sv.scale_to_255(image))
    np.testing.assert_array_equal(labels > 0, body)
    for i in np.unique(labels)[1:][:20]:
        _, n = ndi.label(labels == i, structure=np.ones((3, 3, 3)))
        assert n == 1


def test_supervoxels_are_deterministic(phantom_image):
    image, spacing = phantom_image
    a = sv.compute_supervoxels(image, spacing, min_size=100)
    b = sv.compute_supervoxels(image.copy(), spacing, min_size=100)
    np.testing.assert_array_equal(a, b)


def test_flat_regions_separated_by_an_edge_become_two_segments():
    image = np.zeros((4, 20, 20), np.float32)
    image[:, :, :10] = 100.0
    image[:, :, 10:] = 200.0
    labels = sv.felzenszwalb_3d(image, (1.0, 1.0, 1.0), min_size=50)
    assert set(np.unique(labels)) == {1, 2}
    assert len(np.unique(labels[:, :, :10])) == 1 and len(np.unique(labels[:, :, 10:])) == 1


def test_min_size_merges_a_small_region_into_its_cheapest_neighbour():
    image = np.zeros((3, 12, 12), np.float32)
    image[:, :, 6:] = 100.0
    image[1, 5, 2] = 60.0  # one odd voxel on the dark side, closer to the bright side
    labels = sv.felzenszwalb_3d(image, (1.0, 1.0, 1.0), min_size=10)
    assert len(np.unique(labels)) == 2
    assert labels[1, 5, 2] == labels[0, 0, 0]  # its only neighbours are dark


def test_edge_weights_follow_the_anisotropic_rule():
    s = 3.0
    w = sv.edge_weights((s, 1.0, 1.0)) ** 2
    for (dz, dy, dx), wi in zip(sv.DIRECTIONS, w):
        n_plane = int(dy != 0) + int(dx != 0)
        expected = 1.0 if dz == 0 else {0: s * s, 1: (1 + s * s) / 2, 2: (2 + s * s) / 3}[n_plane]
        assert wi == pytest.approx(expected, rel=1e-6)
    assert len(sv.DIRECTIONS) == 13


def test_radix_argsort_is_a_stable_sort():
    rng = np.random.default_rng(0)
    costs = rng.integers(0, 50, 5000).astype(np.float32) * 0.25
    order = kernels._radix_argsort(costs, np.empty(5000, np.int32), np.empty(5000, np.int32))
    np.testing.assert_array_equal(order, np.argsort(costs, kind="stable"))


def test_cache_is_written_once_and_reused(tmp_path, phantom_image, monkeypatch):
    image, spacing = phantom_image
    first = sv.cached_supervoxels(image, spacing, tmp_path, name="p", min_size=100)
    files = list(tmp_path.glob("p.sv100.*.npz"))
    assert len(files) == 1

    def boom(*args, **kwargs):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(sv, "compute_supervoxels", boom)
    again = sv.cached_supervoxels(image, spacing, tmp_path, name="p", min_size=100)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(AssertionError, match="recomputed"):  # other parameters: a new key
        sv.cached_supervoxels(image, spacing, tmp_path, name="p", min_size=101)


def test_kernels_release_the_gil():
    """The GUI thread must keep running while Adapt computes supervoxels in its worker."""
    if not sv.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    k = kernels
    compiled = [k._count_edges, k._build_edges, k._radix_argsort, k._find, k._merge]
    assert all(f.targetoptions.get("nogil") for f in compiled)
