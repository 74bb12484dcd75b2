"""Label clean-ups: connectivity to the paint, slice range limits, per-slice hole filling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_tpm.phantom import make_phantom
from napari_tpm.postprocess import (
    fill_holes_2d,
    keep_connected,
    labelled_max,
    limit_range,
    limit_z,
    second_choice,
)


def _two_blobs() -> np.ndarray:
    labels = np.zeros((10, 20, 20), dtype=np.uint8)
    labels[1:4, 2:6, 2:6] = 1  # small blob of 1
    labels[5:9, 10:18, 10:18] = 1  # large blob of 1
    labels[1:3, 12:14, 2:4] = 2  # small blob of 2
    labels[6:9, 2:8, 12:19] = 2  # large blob of 2
    return labels


def test_seeded_component_is_kept_even_when_smaller() -> None:
    labels = _two_blobs()
    seeds = np.zeros_like(labels)
    seeds[2, 3, 3] = 1  # paint on the SMALL blob of value 1
    before = labels.copy()
    out = keep_connected(labels, seeds)
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert np.all(out[1:4, 2:6, 2:6] == 1)
    assert not np.any(out[5:9, 10:18, 10:18])
    # value 2 has no seed: its largest component survives, the small one goes
    assert np.all(out[6:9, 2:8, 12:19] == 2)
    assert not np.any(out[1:3, 12:14, 2:4])


def test_seed_of_another_value_does_not_count() -> None:
    labels = _two_blobs()
    seeds = np.zeros_like(labels)
    seeds[2, 3, 3] = 2  # a value-2 seed on the small value-1 blob
    out = keep_connected(labels, seeds)
    assert not np.any(out[1:4, 2:6, 2:6])  # fell back to the largest value-1 blob
    assert np.all(out[5:9, 10:18, 10:18] == 1)


def test_several_seeded_components_are_all_kept() -> None:
    labels = _two_blobs()
    seeds = np.zeros_like(labels)
    seeds[2, 3, 3] = 1
    seeds[6, 12, 12] = 1
    out = keep_connected(labels, seeds)
    np.testing.assert_array_equal(out == 1, labels == 1)


@pytest.mark.parametrize("fallback", ["largest", "keep", "remove"])
def test_fallbacks_without_seeds(fallback: str) -> None:
    labels = _two_blobs()
    out = keep_connected(labels, None, fallback=fallback)
    if fallback == "keep":
        np.testing.assert_array_equal(out, labels)
    elif fallback == "remove":
        assert not out.any()
    else:
        assert np.all(out[5:9, 10:18, 10:18] == 1) and not np.any(out[1:4, 2:6, 2:6])
        assert np.all(out[6:9, 2:8, 12:19] == 2) and not np.any(out[1:3, 12:14, 2:4])


def test_touching_values_are_split_per_value() -> None:
    labels = np.zeros((6, 12, 20), dtype=np.uint8)
    labels[1:5, 1:6, 1:6] = 1  # A: seeded
    labels[1:5, 1:6, 6:12] = 2  # B: touches A, the largest value-2 part
    labels[1:5, 1:6, 12:14] = 1  # D: value 1, touches only B: not connected to A as value 1
    labels[1:3, 9:11, 1:3] = 2  # C: a small value-2 island
    seeds = np.zeros_like(labels)
    seeds[2, 2, 2] = 1
    out = keep_connected(labels, seeds)
    assert np.all(out[1:5, 1:6, 1:6] == 1)
    assert np.all(out[1:5, 1:6, 6:12] == 2)
    assert not out[1:5, 1:6, 12:14].any()
    assert not out[1:3, 9:11, 1:3].any()


def _reference_keep_connected(labels, seeds, structure):
    """Slow, obvious version: label each value on the whole array."""
    out = labels.copy()
    for value in np.unique(labels[labels > 0]):
        comps, _ = ndimage.label(labels == value, structure=structure)
        hit = np.unique(comps[(seeds == value) & (comps > 0)])
        if hit.size == 0:
            sizes = np.bincount(comps.ravel())
            sizes[0] = 0
            hit = [int(np.argmax(sizes))]
        out[(comps > 0) & ~np.isin(comps, hit)] = 0
    return out


@pytest.mark.parametrize("connectivity", [1, 3])
def test_matches_a_per_value_reference_on_random_labels(connectivity: int) -> None:
    rng = np.random.default_rng(connectivity)
    structure = ndimage.generate_binary_structure(3, connectivity)
    for _ in range(15):
        noise = ndimage.gaussian_filter(rng.normal(size=(8, 14, 14)), 1.0)
        labels = np.digitize(noise, np.quantile(noise, [0.45, 0.6, 0.75, 0.9])).astype(np.uint8)
        labels[rng.random(labels.shape) < 0.05] = 0
        seeds = np.where(rng.random(labels.shape) < 0.01, labels, 0).astype(np.uint8)
        got = keep_connected(labels, seeds, connectivity=connectivity)
        np.testing.assert_array_equal(got, _reference_keep_connected(labels, seeds, structure))


def test_connectivity_choice_matters_for_corner_contacts() -> None:
    labels = np.zeros((4, 6, 6), dtype=np.uint16)
    labels[0:2, 0:2, 0:2] = 7
    labels[2, 2, 2] = 7  # touches the cube only at a corner
    seeds = np.zeros_like(labels)
    seeds[0, 0, 0] = 7
    full = keep_connected(labels, seeds)  # 26-connectivity (default)
    assert full.dtype == np.uint16 and full[2, 2, 2] == 7
    faces = keep_connected(labels, seeds, connectivity=1)  # 6-connectivity
    assert faces[2, 2, 2] == 0 and faces[0, 0, 0] == 7


def test_keep_connected_removes_a_far_look_alike_in_a_phantom() -> None:
    ph = make_phantom((16, 48, 48), seed=4, spacing=(8.0, 4.0, 4.0))
    labels = ph.labels * (ph.labels == 5)  # a "prediction": the liver...
    labels[:3, :4, :4] = 5  # ...plus a false island in an air corner
    seeds = np.zeros_like(labels)
    z = int(np.argmax((labels == 5).sum(axis=(1, 2))))
    seeds[z] = np.where(ph.labels[z] == 5, 5, 0)  # the user paints one slice
    out = keep_connected(labels, seeds)
    assert not out[:3, :4, :4].any()
    assert (out == 5).sum() == (ph.labels == 5).sum()


def test_keep_connected_argument_checks() -> None:
    labels = _two_blobs()
    with pytest.raises(ValueError, match="shape"):
        keep_connected(labels, labels[:-1])
    with pytest.raises(ValueError, match="fallback"):
        keep_connected(labels, None, fallback="biggest")
    with pytest.raises(TypeError):
        keep_connected(labels.astype(np.float32), None)


def test_limit_range_is_inclusive_and_per_axis() -> None:
    labels = np.ones((6, 5, 4), dtype=np.uint8)
    out = limit_range(labels, 2, 3)
    assert out[:2].sum() == 0 and out[4:].sum() == 0 and np.all(out[2:4] == 1)
    assert labels.sum() == labels.size  # input untouched
    out = limit_range(labels, 1, 1, axis=1)
    assert np.all(out[:, 1] == 1) and out.sum() == 6 * 4
    out = limit_range(labels, -5, 99, axis=-1)  # clipped to the array: nothing removed
    np.testing.assert_array_equal(out, labels)
    limit_range(labels, 0, 0, inplace=True)
    assert labels.sum() == 5 * 4
    with pytest.raises(ValueError, match="empty"):
        limit_range(labels, 3, 2)
    with pytest.raises(ValueError, match="axis"):
        limit_range(labels, 0, 1, axis=3)


def test_limit_z_tuple_form() -> None:
    labels = np.ones((5, 3, 3), dtype=np.uint8)
    np.testing.assert_array_equal(limit_z(labels, None), labels)
    np.testing.assert_array_equal(limit_z(labels, (1, 2)), limit_range(labels, 1, 2))


def test_fill_holes_2d_fills_enclosed_background_per_slice() -> None:
    labels = np.zeros((5, 9, 9), dtype=np.uint8)
    labels[:, 2:7, 2:7] = 1
    labels[:, 4, 4] = 0  # a tube through every slice: open in 3D, a hole in 2D
    labels[2, 3:6, 3:6] = 0
    labels[2, 4, 4] = 2  # a hole holding another structure
    labels[:, 1:4, 7] = 3
    labels[:, 1, 8] = 3
    labels[:, 3, 8] = 3  # value 3: a U shape open to the array edge
    out = fill_holes_2d(labels)
    assert np.all(out[[0, 1, 3, 4], 4, 4] == 1)
    assert out[2, 4, 4] == 2  # never overwrites another label
    assert np.all(out[2, 3:6, 3:6][np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool)] == 1)
    assert out[0, 2, 8] == 0  # open to the outside: not a hole
    # along another axis, the tube is not a hole in any (z, x) plane
    np.testing.assert_array_equal(fill_holes_2d(labels, axis=1)[:, 4, 4], labels[:, 4, 4])


def _look_alike_wins() -> tuple[np.ndarray, ...]:
    """Organ 1 painted on slice 1; below it, organ 2 (painted far away) won a block of organ
    1's voxels, and a second block that no class wants."""
    labels = np.zeros((8, 12, 24), np.uint8)
    labels[0:3, 2:8, 2:8] = 1  # organ 1 around its paint
    labels[3:6, 2:8, 2:8] = 2  # organ 1's voxels, won by organ 2's look-alike scores
    labels[6:8, 2:8, 2:8] = 2  # a further block, organ 2 best too
    labels[2:6, 2:8, 16:22] = 2  # organ 2 around its own paint
    seeds = np.zeros_like(labels)
    seeds[1, 4, 4], seeds[3, 4, 18] = 1, 2
    runner_up = np.where(labels == 2, 1, 2).astype(np.uint8)
    score = np.full(labels.shape, -1.0, np.float32)
    score[3:6, 2:8, 2:8] = 2.0  # organ 1 clears the boundary there
    score[6:8, 2:8, 2:8] = -3.0  # ... and not below
    return labels, seeds, runner_up, score


def test_voxels_cut_off_from_their_class_take_the_runner_up_that_clears_its_boundary() -> None:
    labels, seeds, runner_up, score = _look_alike_wins()
    before = labels.copy()
    out = second_choice(labels, seeds, runner_up, score, 0.0)
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert np.all(out[3:6, 2:8, 2:8] == 1)  # organ 1 takes back what organ 2 won
    assert not out[6:8, 2:8, 2:8].any()  # no class clears its boundary there
    np.testing.assert_array_equal(out[:, :, 12:], labels[:, :, 12:])  # organ 2 at its paint
    np.testing.assert_array_equal(out[0:3], labels[0:3])  # organ 1 at its paint
    # the connected components then keep organ 1 whole
    kept = keep_connected(out, seeds)
    assert (kept == 1).sum() == 6 * 6 * 6


def test_second_choice_takes_class_indices_with_one_boundary_each() -> None:
    labels, seeds, runner_up, score = _look_alike_wins()
    index = runner_up - 1  # class indices into the label values (1, 2)
    strict = second_choice(labels, seeds, index, score, np.array([5.0, 0.0]), values=(1, 2))
    assert not strict[3:8, 2:8, 2:8].any()  # organ 1's boundary 5 is not cleared by 2
    loose = second_choice(labels, seeds, index, score, np.array([0.0, 5.0]), values=(1, 2))
    np.testing.assert_array_equal(loose, second_choice(labels, seeds, runner_up, score, 0.0))
    connected = keep_connected(labels, seeds)
    np.testing.assert_array_equal(second_choice(connected, seeds, runner_up, score), connected)


def test_second_choice_refuses_mismatched_arrays() -> None:
    labels, seeds, runner_up, score = _look_alike_wins()
    with pytest.raises(ValueError, match="runner_up_score"):
        second_choice(labels, seeds, runner_up, score[:4], 0.0)
    with pytest.raises(ValueError, match="one threshold per class"):
        second_choice(labels, seeds, runner_up, score, np.zeros(3), values=(1, 2))
    with pytest.raises(ValueError, match="seeds"):
        second_choice(labels, seeds[:, :4], runner_up, score, 0.0)


def test_labelled_max_matches_scipy_on_every_label() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(6, 30, 30))
    labels, n = ndimage.label(rng.random((6, 30, 30)) > 0.6)
    np.testing.assert_array_equal(
        labelled_max(values, labels, n), ndimage.maximum(values, labels, np.arange(1, n + 1))
    )
    # a label with no pixel reads -inf; label 0 is never counted
    out = labelled_max(np.ones((2, 2)), np.array([[0, 2], [0, 2]]), 3)
    np.testing.assert_array_equal(out, [-np.inf, 1.0, -np.inf])
