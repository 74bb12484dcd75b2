"""Following a structure slice by slice past its painted prototypes (napari_tpm.tracking)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tpm.tracking import (
    GROWTH,
    GROWTH_PIXELS,
    MARGIN,
    distance_scale,
    is_narrow,
    track_ends,
)


def _tube(n: int = 30, h: int = 16, drift: float = 0.08) -> tuple[torch.Tensor, np.ndarray]:
    """Features ``[n, 3, h, h]`` of a square tube along axis 0 whose look drifts steadily
    (channel 1 grows by ``drift`` a slice) in a background far from it, and the tube's mask."""
    tube = np.zeros((n, h, h), bool)
    tube[:, 6:10, 6:10] = True
    f = np.zeros((n, 3, h, h), np.float32)
    f[:, 2] = 1.0  # background
    z = np.arange(n, dtype=np.float32)[:, None, None]
    f[:, 0] = np.where(tube, 1.0, 0.0)
    f[:, 1] = np.where(tube, drift * (z - n // 2), 0.0)
    f[:, 2] = np.where(tube, 0.0, 1.0)
    return torch.from_numpy(f), tube


def _scores(f: torch.Tensor, means: torch.Tensor, a: float = -5.0, b: float = 2.0) -> np.ndarray:
    """Log-odds falling linearly with the squared distance to the nearest prototype (the
    painted prototypes' scores; the walks below score on the steeper scale (-40, 2), so the
    painted ones fall slowly enough to stay within MARGIN of the boundary)."""
    n, c, h, w = f.shape
    flat = f.permute(0, 2, 3, 1).reshape(-1, c)
    d2 = torch.cdist(flat, means).pow(2).min(1).values
    return (a * d2 + b).reshape(n, h, w).numpy()


def test_distance_scale_recovers_the_line_and_refuses_a_rising_one() -> None:
    rng = np.random.default_rng(0)
    f = torch.from_numpy(rng.normal(size=(1, 4, 12, 12)).astype(np.float32) * 0.2)
    means = torch.from_numpy(rng.normal(size=(3, 4)).astype(np.float32) * 0.2)
    scores = _scores(f, means, a=-10.0, b=1.0)
    assert distance_scale(f[0], scores[0], means, threshold=-2.0) == pytest.approx((-10.0, 1.0))
    assert distance_scale(f[0], -scores[0], means, threshold=2.0) is None  # rises with distance
    assert distance_scale(f[0], scores[0], means, threshold=50.0) is None  # nothing near it


def test_the_walk_follows_a_drifting_tube_to_its_ends() -> None:
    f, tube = _tube()
    means = f[15, :, 8, 8][None]  # the painted slice's prototype
    scores = _scores(f, means)
    found = (scores > 0) & tube
    # the painted prototype reaches only slices within sqrt(2 / 5) / 0.08 ~ 7.9 of 15
    assert np.flatnonzero(found.any((1, 2))).tolist() == list(range(8, 23))
    tracked, kept = track_ends(f, scores, found, (-40.0, 2.0), 0.0)
    assert (kept | found).any((1, 2)).all()  # every slice of the tube
    assert not (kept & ~tube).any()  # nothing outside it
    assert not kept[8:23].any() and np.isnan(tracked[8:23]).all()  # the result's own slices
    assert (tracked[kept] > 0).all()


def test_the_walk_ends_where_the_section_joins_a_neighbour() -> None:
    f, tube = _tube()
    # from slice 26 up, a neighbour of the tube's own look lies against it: its section
    # would grow more than GROWTH times at once
    neighbour = np.zeros_like(tube)
    neighbour[26:, 2:6, 2:14] = True
    g = torch.where(torch.from_numpy(neighbour)[:, None], f[:, :, 8:9, 8:9], f)
    scores = _scores(g, g[15, :, 8, 8][None])
    found = (scores > 0) & tube
    _, kept = track_ends(g, scores, found, (-40.0, 2.0), 0.0)
    reached = np.flatnonzero(kept.any((1, 2)))
    assert reached.max() == 25  # stopped before the slice where it would widen
    assert reached.min() == 0  # the other way, nothing joins: it runs to the volume's end
    assert not (kept & neighbour).any()
    assert (neighbour[26] | tube[26]).sum() > GROWTH * tube[25].sum() + GROWTH_PIXELS


def test_from_a_sliver_end_the_walk_may_grow_to_the_painted_section() -> None:
    f, tube = _tube()
    scores = _scores(f, f[15, :, 8, 8][None])
    found = (scores > 0) & tube
    found[22] = False
    found[22, 7, 7] = True  # the result's end slice: a sliver where the score faded
    _, kept = track_ends(f, scores, found, (-40.0, 2.0), 0.0)
    assert not kept[23:].any()  # against the sliver alone, the full section looks like a join
    _, kept = track_ends(f, scores, found, (-40.0, 2.0), 0.0, section=int(found[15].sum()))
    assert np.flatnonzero(kept.any((1, 2))).max() == 29
    assert not (kept & ~tube).any()
    # a neighbour joining still widens the section past the painted one
    neighbour = np.zeros_like(tube)
    neighbour[26:, 2:6, 2:14] = True
    g = torch.where(torch.from_numpy(neighbour)[:, None], f[:, :, 8:9, 8:9], f)
    _, kept = track_ends(g, scores, found, (-40.0, 2.0), 0.0, section=int(found[15].sum()))
    assert np.flatnonzero(kept.any((1, 2))).max() == 25


def test_the_walk_ends_where_the_painted_prototypes_score_it_far_under_the_boundary() -> None:
    """A walk that followed the structure into other tissue: the painted prototypes score
    the piece more than MARGIN under the boundary there."""
    f, tube = _tube()
    scores = _scores(f, f[15, :, 8, 8][None])
    found = (scores > 0) & tube
    low = scores.copy()
    low[24:] = -(MARGIN + 1.0)  # from slice 24 on, the painted prototypes reject it
    _, kept = track_ends(f, low, found, (-40.0, 2.0), 0.0)
    assert np.flatnonzero(kept.any((1, 2))).max() == 23
    _, kept = track_ends(f, scores, found, (-40.0, 2.0), 0.0)
    assert np.flatnonzero(kept.any((1, 2))).max() == 29


def test_nothing_found_walks_nowhere() -> None:
    f, _ = _tube()
    tracked, kept = track_ends(
        f, np.zeros((30, 16, 16)), np.zeros((30, 16, 16), bool), (-40.0, 2.0), 0.0
    )
    assert not kept.any() and np.isnan(tracked).all()


def test_narrow_is_the_largest_painted_sections_equivalent_radius() -> None:
    # 800 mm2: radius 15.96 mm; 805 mm2: 16.01 mm
    assert is_narrow(800.0)
    assert not is_narrow(805.0)
    assert not is_narrow(None)  # a stroke: its own area says nothing of the structure's


def _phantom_session(monkeypatch, narrow_mm: float = 1e9, spleen: bool = False, **options):
    """A filter-bank session on the phantom's liver painted on its middle slice (and its
    spleen on the same slice, ``spleen``), whose walk (``track_ends``, patched) keeps a block
    on the first slice past one of each result's ends (a block further right on each call)."""
    from napari_tpm import tracking
    from napari_tpm.phantom import make_phantom
    from napari_tpm.session import SegmentationSession

    phantom = make_phantom(shape=(24, 96, 96), seed=3)
    liver = phantom.labels == 5
    zs = np.flatnonzero(liver.any((1, 2)))
    paint = np.zeros(liver.shape, np.uint8)
    paint[zs[len(zs) // 2]][liver[zs[len(zs) // 2]]] = 5
    if spleen:
        paint[zs[len(zs) // 2]][phantom.labels[zs[len(zs) // 2]] == 1] = 1
    walks = []

    def walk(features, scores, found, scale, threshold, section=0):
        n, _, h, w = features.shape
        along = np.flatnonzero(found.any((1, 2)))
        top = int(along[-1]) + 1 if along[-1] + 1 < n else int(along[0]) - 1
        tracked = np.full((n, h, w), np.nan, np.float32)
        kept = np.zeros((n, h, w), bool)
        x = 4 + 10 * len(walks)
        tracked[top] = -5.0
        tracked[top, 4:12, x : x + 8] = 5.0
        kept[top, 4:12, x : x + 8] = True
        walks.append(top)
        return tracked, kept

    monkeypatch.setattr(tracking, "track_ends", walk)
    monkeypatch.setattr(tracking, "distance_scale", lambda *a: (-1.0, 0.0))
    # the phantom's liver is wide: let the session walk for it unless told otherwise
    monkeypatch.setattr(tracking, "NARROW_MM", narrow_mm)
    session = SegmentationSession("filterbank", device="cpu", **options)
    session.set_image(phantom.image, phantom.spacing)
    return session, paint, walks


def test_the_session_adds_the_walk_after_its_3d_steps_at_the_sliders_boundary(
    monkeypatch,
) -> None:
    off, paint, _ = _phantom_session(monkeypatch, track_ends=False)
    for _ in off.segment(paint):
        pass
    base = off.labels(None)
    session, _, walks = _phantom_session(monkeypatch)
    for _ in session.segment(paint):
        pass
    assert len(walks) == 1
    top = walks[0]
    result = session.labels(None)
    added = (result != base).nonzero()
    assert set(added[0]) == {top} and (result[added] == 5).all()
    assert not base[top].any()
    block = result[top] == 5
    assert block.sum() > 20  # the block, upsampled to the native grid
    # the probability map says "over one half" where the walk labels (bilinear upsampling
    # of the larger score may fall a hair under at the block's rim), and did not without it
    assert (session.probabilities(None)[top][block] > 0.5).mean() > 0.9
    assert (off.probabilities(None)[top][block] <= 0.5).all()
    # the slider: a boundary above the walk's score drops it; the live slice path keeps it
    assert not session.labels(1e-4)[top].any()
    assert (session.labels(None, slices=(top, top))[top] == 5).sum() == block.sum()
    assert not session.labels(None, z_range=(0, top - 1))[top].any()
    # choosing another number of prototypes walks again
    session.set_prototypes(2)
    assert len(walks) == 2 and (session.labels(None)[top] == 5).sum() == block.sum()


def test_each_of_several_structures_takes_its_own_walk(monkeypatch) -> None:
    off, paint, _ = _phantom_session(monkeypatch, spleen=True, track_ends=False)
    for _ in off.segment(paint):
        pass
    base = off.labels(None)
    session, _, walks = _phantom_session(monkeypatch, spleen=True)
    for _ in session.segment(paint):
        pass
    assert len(walks) == 2  # one walk per painted structure
    result = session.labels(None)
    changed = result != base
    assert set(np.unique(result[changed])) == {1, 5}
    for value, top in zip((1, 5), walks, strict=True):  # classes in label order
        assert set(np.flatnonzero((changed & (result == value)).any((1, 2)))) == {top}


def test_no_walk_for_paint_on_a_coronal_slice(monkeypatch) -> None:
    session, paint, walks = _phantom_session(monkeypatch)
    liver = np.moveaxis(paint, 0, 1).any((1, 2))  # coronal slices the axial paint crosses
    y = int(np.flatnonzero(liver)[len(np.flatnonzero(liver)) // 2])
    coronal = np.zeros_like(paint)
    z = int(np.flatnonzero(paint.any((1, 2)))[0])
    coronal[z - 2 : z + 3, y, 30:60] = 5  # a block on one coronal slice
    for _ in session.segment(coronal):
        pass
    assert session.axis == 1 and walks == []


def test_no_walk_for_a_wide_structure(monkeypatch) -> None:
    from napari_tpm.tracking import NARROW_MM

    session, paint, walks = _phantom_session(monkeypatch, narrow_mm=NARROW_MM)
    for _ in session.segment(paint):
        pass
    assert walks == []


def test_no_walk_for_a_structure_painted_as_a_stroke(monkeypatch) -> None:
    """A thin stroke across the liver, used as drawn, has a narrow section of its own; the
    structure it marks need not be narrow, so it is not walked for. (By default the stroke is
    completed to the liver's section first, ``options.complete_paint``, which is then sized.)"""
    session, paint, walks = _phantom_session(monkeypatch, complete_paint=False)
    z = int(np.flatnonzero(paint.any((1, 2)))[0])
    ys, xs = np.nonzero(paint[z])
    stroke = np.zeros_like(paint)
    stroke[z, int(ys.mean()), int(xs.mean()) - 8 : int(xs.mean()) + 8] = 5
    for _ in session.segment(stroke):
        pass
    assert session.section_areas == {5: None} and walks == []


def test_no_walk_with_a_background_stroke(monkeypatch) -> None:
    session, paint, walks = _phantom_session(monkeypatch)
    z = int(np.flatnonzero(paint.any((1, 2)))[0])
    stroked = paint.copy()
    stroked[z, 2:4, 2:40] = 9
    for _ in session.segment(stroked, background_label=9):
        pass
    assert walks == []


def test_btcv_aorta_is_followed_past_its_painted_slice(shared_data) -> None:
    """BTCV 21's aorta painted on its middle slice (tuning volume): without the walk the
    result covers 12 of its 73 slices (Dice 0.27); with it, twice as many (24; Dice
    0.41)."""
    from session_helpers import read_case

    from napari_tpm.session import SegmentationSession

    image, labels = read_case(shared_data / "sabs_ct", "sabs_21", "ct")
    truth = labels == 8
    zs = np.flatnonzero(truth.any((1, 2)))
    z = int(zs[len(zs) // 2])
    paint = np.zeros(truth.shape, np.uint8)
    paint[z][truth[z]] = 1
    dice = {}
    slices = {}
    for on in (False, True):
        session = SegmentationSession("filterbank", device="cpu", track_ends=on)
        session.set_image(image.array, image.spacing)
        for _ in session.segment(paint):
            pass
        result = session.labels(None) > 0
        dice[on] = 2 * (result & truth).sum() / (result.sum() + truth.sum())
        slices[on] = int(result.any((1, 2)).sum())
    assert dice[False] < 0.3 and dice[True] > 0.38, dice
    assert slices[True] >= 2 * slices[False], slices
