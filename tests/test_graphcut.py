"""Graph-cut probe (benchmarks/accuracy_graphcut.py): measured, not used by the product."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("maxflow")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from accuracy_graphcut import edge_sigma, graph_cut


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _sphere(n: int = 32, r: float = 9.0) -> np.ndarray:
    z, y, x = np.mgrid[:n, :n, :n]
    c = (n - 1) / 2
    return (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 < r**2


def test_noisy_sphere_gets_cleaner_with_the_pairwise_term():
    rng = np.random.default_rng(0)
    truth = _sphere()
    log_odds = np.where(truth, 1.0, -1.0) + rng.normal(0, 1.5, truth.shape)
    image = np.where(truth, 100.0, 0.0) + rng.normal(0, 5, truth.shape)
    plain = _dice(log_odds > 0, truth)
    cut = graph_cut(log_odds, image, (1, 1, 1), weight=1.0)
    assert cut.dtype == bool and cut.shape == truth.shape
    assert plain < 0.6 and _dice(cut, truth) > 0.9


def test_weight_zero_is_exactly_the_threshold():
    rng = np.random.default_rng(1)
    log_odds = rng.normal(-0.5, 1.0, (12, 14, 16)).astype(np.float32)
    log_odds[0] = -np.inf  # slices never scored
    log_odds[5, 5, 5] = 0.0  # a tie is background, as in labels()
    image = rng.normal(0, 1, log_odds.shape)
    np.testing.assert_array_equal(graph_cut(log_odds, image, (3, 1, 1), weight=0), log_odds > 0)


def _gap(image_in_gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confident foreground split by a weakly negative 2-voxel slab; image given in the slab."""
    log_odds = np.full((16, 16, 16), 3.0)
    gap = np.zeros(log_odds.shape, bool)
    gap[:, :, 7:9] = True
    log_odds[gap] = -0.5
    image = np.where(gap, image_in_gap, 0.0)
    return log_odds, image, gap


def test_an_image_edge_stops_foreground_from_crossing_it():
    log_odds, flat, gap = _gap(0.0)
    across_flat = graph_cut(log_odds, flat, (1, 1, 1), weight=1.0, sigma=10.0)
    _, edged, _ = _gap(100.0)
    across_edge = graph_cut(log_odds, edged, (1, 1, 1), weight=1.0, sigma=10.0)
    assert across_flat[gap].mean() > 0.9  # flat tissue: the cut closes the weak gap
    assert across_edge[gap].mean() < 0.1  # a strong edge: the cut follows it
    assert (across_edge == (log_odds > 0)).all()


def test_box_region_and_seeds():
    log_odds = np.full((20, 20, 20), -2.0)
    log_odds[2:5, 2:5, 2:5] = 4.0  # a far false positive
    log_odds[12:16, 12:16, 12:16] = 4.0
    region = np.zeros(log_odds.shape, bool)
    region[12:16, 12:16, 12:16] = True
    seeds = np.zeros(log_odds.shape, bool)
    seeds[10, 10, 10] = True  # forced although its log-odds say background
    image = np.zeros(log_odds.shape)
    out = graph_cut(
        log_odds, image, (1, 1, 1), weight=0.1, bbox_margin_mm=2, region=region, seeds=seeds
    )
    assert not out[2:5, 2:5, 2:5].any()  # outside the box: background
    assert out[12:16, 12:16, 12:16].all() and out[10, 10, 10]
    assert not graph_cut(np.full((4, 4, 4), -1.0), image[:4, :4, :4], (1, 1, 1), weight=1).any()


def test_the_box_face_pays_for_the_edge_to_the_outside():
    # foreground fills the whole box: with the outside edges counted the cut shrinks it like the
    # same cut on the full volume (a box is a constraint, not a free boundary)
    log_odds = np.full((30, 30, 30), -5.0)
    log_odds[10:20, 10:20, 10:20] = 0.2
    image = np.zeros(log_odds.shape)
    boxed = graph_cut(log_odds, image, (1, 1, 1), weight=2.0, bbox_margin_mm=0)
    full = graph_cut(log_odds, image, (1, 1, 1), weight=2.0, bbox_margin_mm=100)
    np.testing.assert_array_equal(boxed, full)
    assert not full.any()  # 0.2 per voxel does not pay for the surface at weight 2


def test_edge_sigma():
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 4.0, (20, 20, 20))
    assert 4.0 < edge_sigma(noise) < 8.0  # steps of N(0, 4) noise spread sqrt(2) x 4
    assert edge_sigma(np.zeros((5, 5, 5))) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"log_odds": np.zeros((4, 4))}, "3D"),
        ({"image": np.zeros((4, 4, 5))}, "image has shape"),
        ({"log_odds": np.full((4, 4, 4), np.nan)}, "NaN"),
        ({"spacing": (1, 1)}, "spacing"),
        ({"spacing": (1, 0, 1)}, "spacing"),
        ({"weight": -1.0}, "weight"),
        ({"weight": math.inf}, "weight"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma_scale": -1.0}, "sigma_scale"),
        ({"bbox_margin_mm": -1.0}, "bbox_margin_mm"),
        ({"region": np.zeros((4, 4, 3), bool)}, "region has shape"),
        ({"seeds": np.zeros((3, 4, 4), bool)}, "seeds has shape"),
        ({"image": np.full((4, 4, 4), np.inf)}, "image holds"),
    ],
)
def test_bad_input_is_refused(kwargs, message):
    args = {
        "log_odds": np.ones((4, 4, 4)),
        "image": np.zeros((4, 4, 4)),
        "spacing": (1, 1, 1),
        "weight": 1.0,
    }
    args.update(kwargs)
    log_odds, image, spacing = args.pop("log_odds"), args.pop("image"), args.pop("spacing")
    with pytest.raises(ValueError, match=message):
        graph_cut(log_odds, image, spacing, **args)


def test_end_to_end_on_the_phantom():
    from napari_tpm.phantom import make_phantom
    from napari_tpm.session import SegmentationSession

    ph = make_phantom(shape=(24, 96, 96), seed=3)
    truth = ph.labels == 5
    paint = np.zeros(truth.shape, np.uint8)
    paint[12][truth[12]] = 1
    session = SegmentationSession("filterbank", device="cpu")
    session.set_image(ph.image, ph.spacing)
    list(session.segment(paint))
    p = session.auto_prior()
    default = session.labels(p) > 0
    log_odds = session.scores() + math.log(p / (1 - p))
    cut = graph_cut(log_odds, ph.image, ph.spacing, weight=1.0, region=default, seeds=paint > 0)
    assert cut[paint > 0].all()
    assert _dice(cut, truth) > 0.8
    assert _dice(cut, truth) > _dice(default, truth) - 0.05
