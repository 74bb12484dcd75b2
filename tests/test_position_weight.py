"""The filter bank's position channels weigh less for a large painted organ (a liver)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_tpm.encoders.filterbank import FilterBankEncoder
from napari_tpm.position_weight import (
    FULL_WEIGHT_MM,
    MIN_SCALE,
    MIN_WEIGHT_MM,
    position_scale,
    reweight,
)
from napari_tpm.support import DEFAULT_PROTOTYPES


def _area(radius_mm: float) -> float:
    return math.pi * radius_mm**2


def test_small_sections_keep_the_full_weight_and_large_ones_get_less():
    assert position_scale({1: _area(25.0)}) == 1.0  # a kidney
    assert position_scale({1: _area(FULL_WEIGHT_MM)}) == 1.0
    assert position_scale({1: _area(MIN_WEIGHT_MM)}) == MIN_SCALE
    assert position_scale({1: _area(80.0)}) == MIN_SCALE  # a liver's widest section
    middle = position_scale({1: _area((FULL_WEIGHT_MM + MIN_WEIGHT_MM) / 2)})
    assert middle == pytest.approx((1.0 + MIN_SCALE) / 2)


def test_the_smallest_structure_decides_and_strokes_say_nothing():
    # a liver painted with a kidney: the joint model keeps the kidney's position weight
    assert position_scale({1: _area(80.0), 2: _area(25.0)}) == 1.0
    # a stroke's own area says nothing about the organ, so it neither lowers nor keeps it
    assert position_scale({1: _area(80.0), 2: None}) == MIN_SCALE
    assert position_scale({1: None}) == 1.0
    assert position_scale({}) == 1.0


def test_reweighting_the_cache_equals_encoding_with_that_weight():
    # the encoder's output is the unit-normalised concatenation of weighted groups, so scaling
    # one group of the cached output and normalising again is that group's weight times scale
    torch.manual_seed(0)
    x = torch.rand(2, 1, 64, 64)
    bank = FilterBankEncoder()
    channels = bank.group_channels("position")
    assert channels is not None and channels.stop - channels.start == 2
    weighted = FilterBankEncoder(group_weights={"position": 1.5 * 0.5})
    with torch.no_grad():
        expected = weighted(x)
        got = reweight(bank(x), channels, 0.5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # and the cache is left as it was: nothing to change returns the tensor itself
    cached = bank(x)
    assert reweight(cached, channels, 1.0) is cached
    assert reweight(cached, None, 0.5) is cached


def test_group_channels_follow_the_groups_in_order():
    bank = FilterBankEncoder(groups=("intensity", "position"))
    assert bank.group_channels("intensity") == slice(0, len(bank.scales))
    assert bank.group_channels("position") == slice(len(bank.scales), len(bank.scales) + 2)
    assert bank.group_channels("histogram") is None
    assert bank.out_channels == len(bank.scales) + 2 + 1  # the anchor last


def _body(seed: int) -> np.ndarray:
    """Six noisy 96 x 96 slices whose body fills most of each slice (2 mm pixels)."""
    image = np.random.default_rng(seed).normal(0.0, 1.0, (6, 96, 96)).astype(np.float32)
    image[:, 8:88, 8:88] += 3.0
    return image


def _disk_paint(radius_px: int) -> np.ndarray:
    """Label 1 on a disk of ``radius_px`` pixels (2 mm each) in the middle of slice 3."""
    paint = np.zeros((6, 96, 96), np.uint8)
    yy, xx = np.mgrid[:96, :96]
    paint[3][(yy - 48) ** 2 + (xx - 48) ** 2 <= radius_px**2] = 1
    return paint


def _segmented(image: np.ndarray, paint: np.ndarray, k: int = DEFAULT_PROTOTYPES, **options):
    """A filter-bank session that has segmented ``paint`` on ``image`` with ``k`` prototypes.

    The paint is used as drawn (``complete_paint`` off unless given): a disk inside a uniform
    body is a dab in its tissue, which the session would complete to the whole body."""
    from napari_tpm.session import SegmentationSession

    options.setdefault("complete_paint", False)
    session = SegmentationSession("filterbank", device="cpu", **options)
    session.set_image(image, (4.0, 2.0, 2.0))
    for _ in session.segment(paint, n_prototypes=k):
        pass
    return session


def test_the_session_weighs_position_by_the_painted_section_and_keeps_its_cache():
    image = _body(0)
    paint = _disk_paint(38)  # radius 38 px of 2 mm: 76 mm
    results = {}
    for on in (True, False):
        session = _segmented(image, paint, scale_position=on)
        results[on] = (session.position_scale, session._view(0).features.clone())
    assert results[True][0] == MIN_SCALE and results[False][0] == 1.0
    # the cached features are the encoder's own either way
    torch.testing.assert_close(results[True][1], results[False][1])
    # a small section on the same image keeps the full weight
    assert _segmented(image, _disk_paint(10)).position_scale == 1.0


def test_real_ct_liver_keeps_its_left_lobe(shared_data):
    """BTCV 17's liver painted on its middle slice, low in the organ: above it the left lobe
    reaches across the midline, where the painted section never was (tuning volume; Dice 0.74
    with the full position weight, 0.86 with half of it)."""
    from session_helpers import read_case, section_paint, segment_labels

    from napari_tpm.options import SegmentOptions

    image, labels = read_case(shared_data / "sabs_ct", "sabs_17", "ct")
    liver = labels == 1
    paint = section_paint(liver, 1)
    found = [
        segment_labels(image, paint, SegmentOptions(scale_position=on)) == 1 for on in (True, False)
    ]
    dice = [2 * (v & liver).sum() / (v.sum() + liver.sum()) for v in found]
    assert dice[0] > 0.83 and dice[0] > dice[1] + 0.08, dice


def test_a_prototype_change_reads_the_weighted_volume_kept_on_the_view():
    image, paint = _body(1), _disk_paint(38)  # 76 mm: half the position weight
    session = _segmented(image, paint)
    view = session._view(0)
    assert view.weighted is not None and view.weighted[0] == MIN_SCALE
    assert view.weighted[1].dtype == view.features.dtype
    session.set_prototypes(1)
    # the same as segmenting with one prototype from the start, in a fresh session
    fresh = _segmented(image, paint, k=1)
    np.testing.assert_array_equal(session.labels(None), fresh.labels(None))
