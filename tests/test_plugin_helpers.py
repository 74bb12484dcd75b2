"""The widget's Qt-free helpers: undoable Apply, grids, and the worker's error handling.

These run without a viewer (napari layers work headless), so they are fast and run everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm._widget._layers import apply_preview, grid_kwargs, label_dtype
from napari_tpm._widget._worker import (
    Failure,
    SegmentRequest,
    SessionReady,
    describe,
    refit_prototypes,
    segmentation_steps,
    short_reason,
    user_message,
)
from napari_tpm.progress import Progress

layers = pytest.importorskip("napari.layers")


def _request() -> SegmentRequest:
    return SegmentRequest(
        image=np.zeros((4, 8, 8), np.float32),
        spacing=(2.0, 1.0, 1.0),
        support=np.zeros((4, 8, 8), np.uint8),
        support_image=None,
        support_spacing=None,
        n_prototypes=1,
    )


def test_apply_preview_writes_only_changes_and_undoes_in_one_step():
    target = layers.Labels(np.zeros((3, 6, 6), np.uint8))
    target.data[0, 0, :] = 9  # an earlier structure, partly under the preview
    original = target.data.copy()
    preview = np.zeros((3, 6, 6), np.uint8)
    preview[:2, :3, :3] = 5
    changed = apply_preview(target, preview)
    expected = np.where(preview != 0, preview, original)
    assert changed == int(np.count_nonzero(expected != original))
    np.testing.assert_array_equal(target.data, expected)
    assert apply_preview(target, preview) == 0  # nothing left to change
    target.undo()  # one step back restores everything the apply changed
    np.testing.assert_array_equal(target.data, original)


def test_apply_preview_refuses_another_grid():
    target = layers.Labels(np.zeros((2, 2, 2), np.uint8), name="small")
    with pytest.raises(ValueError, match="small"):
        apply_preview(target, np.ones((3, 3, 3), np.uint8))


def test_grid_kwargs_copy_geometry_without_sharing_it():
    image = layers.Image(
        np.zeros((2, 3, 4)),
        scale=(3.0, 0.5, 0.5),
        translate=(10.0, 20.0, 30.0),
        metadata={"tpm_geometry": {"origin": [1, 2, 3]}},
    )
    kwargs = grid_kwargs(image)
    assert kwargs["scale"] == (3.0, 0.5, 0.5)
    assert kwargs["translate"] == (10.0, 20.0, 30.0)
    kwargs["metadata"]["tpm_geometry"]["origin"].append(4)
    assert image.metadata["tpm_geometry"]["origin"] == [1, 2, 3]


@pytest.mark.parametrize(
    ("top", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16), (70_000, np.uint32)]
)
def test_label_dtype_holds_the_largest_value(top, dtype):
    assert label_dtype((top,)) == np.dtype(dtype)


class _Session:
    """A stand-in session whose segment() fails the way a GPU does."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.n_prototypes = 1

    def set_image(self, image, spacing):
        pass

    def segment(self, *args, **kwargs):
        yield Progress(0, 4, "support")
        raise self.error

    def set_prototypes(self, k):
        raise self.error


def test_runtime_errors_come_back_as_values_not_exceptions():
    """superqt swallows a RuntimeError raised by a generator worker; ours must not raise one."""
    session = _Session(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    steps = list(segmentation_steps(lambda: session, _request()))
    assert isinstance(steps[0], SessionReady) and steps[0].session is session
    assert isinstance(steps[1], Progress)
    assert isinstance(steps[-1], Failure)
    assert "Out of memory" in steps[-1].message
    refit = refit_prototypes(session, 3)
    with pytest.raises(StopIteration) as stop:
        next(refit)  # the refit fails before its one step
    failed = stop.value.value
    assert isinstance(failed, Failure) and "Out of memory" in failed.message


def test_value_errors_keep_their_message():
    session = _Session(ValueError("the paint must lie on a single slice"))
    *_, last = segmentation_steps(lambda: session, _request())
    assert last == Failure("the paint must lie on a single slice")
    assert user_message(KeyError("x")).startswith("KeyError")


def test_session_construction_errors_are_reported():
    def broken():
        raise ValueError("unknown model 'nope'")

    assert list(segmentation_steps(broken, _request())) == [Failure("unknown model 'nope'")]


def test_describe_gives_a_volume_per_label():
    labels = np.zeros((2, 10, 10), np.uint8)
    labels[0, :5, :2] = 5
    labels[1, :3, :1] = 2
    assert describe(labels, (2.0, 10.0, 10.0)) == (
        "label 2: 0.6 mL (3 voxels); label 5: 2.0 mL (10 voxels)"
    )
    # the session's labels are reported even when one came out empty
    assert describe(labels, (2.0, 10.0, 10.0), (5, 7)) == (
        "label 5: 2.0 mL (10 voxels); label 7: 0.0 mL (0 voxels)"
    )
    assert "empty" in describe(np.zeros((1, 1, 1), np.uint8), (1, 1, 1))
    assert "empty" in describe(np.zeros((1, 1, 1), np.uint8), (1, 1, 1), (3,))


def test_short_reason_is_one_short_line():
    path = "/very/long/folder/" + "x" * 80 + "/bogus.pt"
    exc = ValueError(f"{path} is not readable: UnpicklingError: Weights only load failed\nmore")
    text = short_reason(exc, path)
    assert "\n" not in text and len(text) <= 100 and text.startswith("bogus.pt is not readable")


def test_a_support_image_file_stored_mirrored_is_reordered_to_the_image_axes():
    """Atlas use in the dock: layers read from files carry their direction cosines, and the
    request hands the session the atlas and its paint in the image's voxel order."""
    from napari_tpm._reader import GEOMETRY_KEY
    from napari_tpm._widget._inputs import build_request

    ras = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    las = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    image = layers.Image(
        np.zeros((4, 6, 8), np.float32), metadata={GEOMETRY_KEY: {"direction": ras}}
    )
    data = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    atlas = layers.Image(data, metadata={GEOMETRY_KEY: {"direction": las}})
    paint = np.zeros((4, 6, 8), np.uint8)
    paint[2, 3, 1] = 5
    request = build_request(image, layers.Labels(paint), atlas, 1)
    np.testing.assert_array_equal(request.support_image, data[:, :, ::-1])
    assert np.argwhere(request.support).tolist() == [[2, 3, 6]]
    assert request.reordered == "LAS -> RAS"  # the status line says so after the run
    # a layer made in napari has no file geometry: taken as it is
    plain = build_request(image, layers.Labels(paint), layers.Image(data), 1)
    np.testing.assert_array_equal(plain.support_image, data)
    assert np.argwhere(plain.support).tolist() == [[2, 3, 1]] and plain.reordered == ""


def test_the_status_note_names_what_was_done_with_another_volumes_paint():
    from types import SimpleNamespace

    from napari_tpm._widget._controller import _paint_notes

    session = SimpleNamespace(contrast_steps={}, bootstrapped=True, support_slices=(7,))
    note = _paint_notes(session, "LAS -> RAS")
    assert note == " (support image reordered LAS -> RAS; second pass from slice 7)"
    assert _paint_notes(SimpleNamespace(contrast_steps={}, bootstrapped=False)) == ""
    completed = SimpleNamespace(contrast_steps={}, bootstrapped=False, completed={2: (5,)})
    said = _paint_notes(completed)
    assert said == " (label 2's paint completed to its section on slice 5)"
    doubtful = SimpleNamespace(contrast_steps={}, bootstrapped=False, doubtful_labels=(3,))
    assert _paint_notes(doubtful) == (
        " (label 3 fits the paint poorly: it may be a look-alike, check it)"
    )
