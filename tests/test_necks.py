"""Cutting thin necks between the painted organ and touching look-alike tissue."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_tpm.necks import (
    MAX_NECK_MM,
    MIN_NECK_MM,
    cut_necks,
    inscribed_radius_mm,
    neck_radius_mm,
)


def _dumbbell(neck: int = 2) -> np.ndarray:
    """Two 10x30x20 blocks (value 1) joined by a bar ``neck`` voxels thick and 10 long."""
    a = np.zeros((20, 40, 60), np.uint8)
    a[5:15, 5:35, 5:25] = 1
    a[5:15, 5:35, 35:55] = 1
    a[10 - neck // 2 : 10 - neck // 2 + neck, 19 - neck // 2 : 19 - neck // 2 + neck, 25:35] = 1
    return a


def _seed_at(shape, where, value=1) -> np.ndarray:
    seeds = np.zeros(shape, np.uint8)
    seeds[where] = value
    return seeds


def test_neck_cut_keeps_the_seeded_block_whole():
    a = _dumbbell()
    out = cut_necks(a, _seed_at(a.shape, (10, 20, 10)), (1.0, 1.0, 1.0), 3.0)
    assert (out[:, :, :25] == a[:, :, :25]).all()  # the painted block, corners included
    assert not out[:, :, 35:].any()  # the block beyond the neck is gone
    assert out[:, :, 25:35].sum() < a[:, :, 25:35].sum()  # the neck is cut


def test_seed_picks_the_side():
    a = _dumbbell()
    out = cut_necks(a, _seed_at(a.shape, (10, 20, 45)), (1.0, 1.0, 1.0), 3.0)
    assert (out[:, :, 35:] == a[:, :, 35:]).all()
    assert not out[:, :, :25].any()


def test_thick_bridge_is_kept():
    a = _dumbbell(neck=10)
    out = cut_necks(a, _seed_at(a.shape, (10, 20, 10)), (1.0, 1.0, 1.0), 3.0)
    assert (out == a).all()


def test_no_seed_keeps_the_largest_part():
    a = _dumbbell()
    a[5:15, 5:35, 50:55] = 0  # right block smaller
    out = cut_necks(a, None, (1.0, 1.0, 1.0), 3.0)
    assert out[:, :, :25].sum() == a[:, :, :25].sum()
    assert not out[:, :, 36:].any()


def test_spacing_is_in_millimetres():
    a = _dumbbell()
    seeds = _seed_at(a.shape, (10, 20, 10))
    # in mm the neck (2 voxels of 0.5 mm) is 1 mm thick; the blocks are >= 5 mm thick
    out = cut_necks(a, seeds, (0.5, 0.5, 0.5), 1.5)
    assert not out[:, :, 35:].any()
    # the same voxels at 0.1 mm: every part is thinner than 2r, nothing to grow back from
    assert (cut_necks(a, seeds, (0.1, 0.1, 0.1), 1.5) == a).all()


def test_each_value_on_its_own_radius():
    a = _dumbbell()
    b = np.where(a > 0, 2, 0).astype(np.uint8)
    both = np.concatenate([a, b], axis=0)
    seeds = np.zeros(both.shape, np.uint8)
    seeds[10, 20, 10] = 1
    seeds[30, 20, 10] = 2
    out = cut_necks(both, seeds, (1.0, 1.0, 1.0), {1: 3.0, 2: 0.0})
    assert not out[:20, :, 35:].any()  # value 1 cut
    assert (out[20:] == b).all()  # value 2 has radius 0: untouched
    assert (both == np.concatenate([a, b], axis=0)).all()  # input untouched


def test_bad_input():
    a = _dumbbell()
    with pytest.raises(ValueError, match="integer"):
        cut_necks(a.astype(float), None, (1, 1, 1), 3.0)
    with pytest.raises(ValueError, match="seeds shape"):
        cut_necks(a, np.zeros((2, 2, 2), np.uint8), (1, 1, 1), 3.0)
    with pytest.raises(ValueError, match="spacing"):
        cut_necks(a, None, (1, 1), 3.0)
    with pytest.raises(ValueError, match="spacing"):
        cut_necks(a, None, (1, 0, 1), 3.0)
    with pytest.raises(ValueError, match="2-D"):
        inscribed_radius_mm(a, (1, 1))


def test_inscribed_radius_and_bounds():
    yy, xx = np.mgrid[:101, :101]
    disc = (yy - 50) ** 2 + (xx - 50) ** 2 <= 20**2
    assert inscribed_radius_mm(disc, (0.5, 0.5)) == pytest.approx(10.5, abs=0.6)
    assert inscribed_radius_mm(np.zeros((5, 5), bool), (1, 1)) == 0.0
    assert neck_radius_mm(40.0, 0.25) == 10.0 == MAX_NECK_MM
    assert neck_radius_mm(1.0, 0.25) == MIN_NECK_MM
    assert neck_radius_mm(16.0, 0.25) == pytest.approx(4.0)


def test_session_cuts_necks_only_when_asked():
    from napari_tpm.phantom import make_phantom
    from napari_tpm.session import SegmentationSession

    ph = make_phantom(shape=(24, 96, 96), seed=3)
    zs = np.flatnonzero((ph.labels == 5).any(axis=(1, 2)))
    paint = np.zeros(ph.labels.shape, np.uint8)
    z = int(zs[len(zs) // 2])
    paint[z][ph.labels[z] == 5] = 5
    session = SegmentationSession("filterbank", device="cpu", neck=0.0)
    session.set_image(ph.image, ph.spacing)
    for _ in session.segment(paint):
        pass
    plain = session.labels(0.5)
    session.options = dataclasses.replace(session.options, neck=0.25)
    cut = session.labels(0.5)
    assert (cut[plain == 0] == 0).all()  # only ever removes
    assert (cut[paint == 5] == 5).all()  # never the paint
    truth = ph.labels == 5

    def dice(m):
        return 2 * (m & truth).sum() / (m.sum() + truth.sum())

    assert dice(cut == 5) >= dice(plain == 5) - 0.02


def test_coarse_grid_decides_like_the_fine_one():
    a = np.repeat(np.repeat(np.repeat(_dumbbell(), 3, 0), 3, 1), 3, 2)  # 1/3 mm voxels
    seeds = np.zeros(a.shape, np.uint8)
    seeds[30, 60, 30] = 1
    out = cut_necks(a, seeds, (1 / 3, 1 / 3, 1 / 3), 3.0)  # blocks of 3 voxels
    assert (out[:, :, :75] == a[:, :, :75]).all()
    assert not out[:, :, 105:].any()
