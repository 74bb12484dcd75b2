"""Reader, writer and sample data of the napari plugin (no viewer needed).

The key property: a file read into a layer and written back lands on the same world grid
(spacing, origin, direction), so a segmentation saved from napari overlays the scan in other
tools.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm._reader import (
    GEOMETRY_KEY,
    get_reader,
    looks_like_labels,
    prefer_this_reader,
    read_layers,
)
from napari_tpm._sample_data import make_mr_sample
from napari_tpm._writer import geometry_from_meta, write_image, write_labels
from napari_tpm.io import Volume, read_volume, write_volume

# an oblique, left-handed-free rotation (about z by 30 degrees) combined with an x/y flip
_C, _S = np.cos(np.pi / 6), np.sin(np.pi / 6)
DIRECTION = tuple(np.array([[-_C, _S, 0.0], [-_S, -_C, 0.0], [0.0, 0.0, 1.0]]).ravel())
SPACING = (2.5, 0.8, 0.7)  # (z, y, x)
ORIGIN = (-120.5, 33.25, 410.0)  # (x, y, z), SimpleITK order


def _scan(tmp_path, name="scan.nii.gz", labels=False):
    rng = np.random.default_rng(0)
    if labels:
        array = np.zeros((6, 9, 11), np.uint8)
        array[2:4, 3:6, 4:8] = 5
        array[1, 1:3, 1:3] = 2
    else:
        array = rng.integers(-1000, 1500, size=(6, 9, 11)).astype(np.int16)
    path = tmp_path / name
    write_volume(path, array, spacing=SPACING, origin=ORIGIN, direction=DIRECTION)
    return path, array


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_geometry_survives_reader_layer_writer(tmp_path, ext):
    napari_layers = pytest.importorskip("napari.layers")
    src, array = _scan(tmp_path, f"organ_seg{ext}", labels=True)
    reader = get_reader(str(src))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(src))
    assert kind == "labels"
    np.testing.assert_allclose(kwargs["scale"], SPACING)
    np.testing.assert_allclose(kwargs["translate"], ORIGIN[::-1])
    layer = napari_layers.Labels(data, **kwargs)
    # edit the layer as a user would, then save it with the writer napari would call
    layer.data[0, 0, 0] = 7
    _, meta, _ = layer.as_layer_data_tuple()
    out = tmp_path / f"result{ext}"
    assert write_labels(str(out), layer.data, meta) == [str(out)]
    back = read_volume(out)
    np.testing.assert_allclose(back.spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(back.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(back.direction, DIRECTION, atol=1e-5)
    expected = array.copy()
    expected[0, 0, 0] = 7
    np.testing.assert_array_equal(back.array, expected)


def test_layer_save_picks_our_writer_by_extension(tmp_path):
    """``layer.save('x.nii.gz')`` goes through the manifest to the geometry-preserving writer."""
    napari_layers = pytest.importorskip("napari.layers")
    npe2 = pytest.importorskip("npe2")
    npe2.PluginManager.instance().discover()  # a viewer would do this; this test has none
    src, array = _scan(tmp_path)
    [(data, kwargs, kind)] = read_layers(str(src))
    assert kind == "image"
    layer = napari_layers.Image(data, **kwargs)
    out = tmp_path / "saved.nii.gz"
    written = layer.save(str(out), plugin="napari-tpm")
    assert [str(p) for p in written] == [str(out)]
    back = read_volume(out)
    np.testing.assert_allclose(back.direction, DIRECTION, atol=1e-5)
    np.testing.assert_allclose(back.origin, ORIGIN, atol=1e-4)
    np.testing.assert_array_equal(back.array, array)


def test_writer_falls_back_to_scale_and_translate(tmp_path):
    """A layer made in napari (no stored geometry) keeps its scale and translate."""
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 2, 3] = 1
    meta = {"scale": (3.0, 1.5, 0.5), "translate": (10.0, -20.0, 30.0), "metadata": {}}
    out = tmp_path / "made_here.nrrd"
    write_labels(str(out), labels, meta)
    back = read_volume(out)
    np.testing.assert_allclose(back.spacing, (3.0, 1.5, 0.5))
    np.testing.assert_allclose(back.origin, (30.0, -20.0, 10.0))
    np.testing.assert_allclose(back.direction, np.eye(3).ravel())


def test_stored_geometry_is_ignored_for_another_shape():
    meta = {
        "scale": (2.0, 2.0, 2.0),
        "translate": (0.0, 0.0, 0.0),
        "metadata": {
            GEOMETRY_KEY: {
                "shape": (9, 9, 9),
                "spacing": (1, 1, 1),
                "origin": (5, 5, 5),
                "direction": DIRECTION,
            }
        },
    }
    geometry = geometry_from_meta((4, 4, 4), meta)
    assert geometry["spacing"] == (2.0, 2.0, 2.0)
    assert geometry["origin"] == (0.0, 0.0, 0.0)


def test_writer_refuses_2d_layers(tmp_path):
    with pytest.raises(ValueError, match="3D"):
        write_image(str(tmp_path / "flat.nii.gz"), np.zeros((5, 5)), {})


@pytest.mark.parametrize(
    "name",
    ["notes.txt", "image.png", "scan.dcm", "missing_folder", "empty_folder", "text_folder"],
)
def test_reader_declines_unsupported_paths_without_raising(tmp_path, name):
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "text_folder").mkdir()
    (tmp_path / "text_folder" / "a.txt").write_text("not dicom")
    (tmp_path / "notes.txt").write_text("hello")
    assert get_reader(str(tmp_path / name)) is None


def test_reader_declines_a_list_with_one_unsupported_path(tmp_path):
    src, _ = _scan(tmp_path)
    assert get_reader([str(src), str(tmp_path / "x.png")]) is None
    assert get_reader([str(src), str(src)]) is not None


def test_label_detection():
    ct = np.arange(-1000, 1000, dtype=np.int16).reshape(20, 10, 10)
    assert not looks_like_labels(ct, "scan")
    organs = np.zeros((8, 8, 8), np.uint8)
    organs[2:4, 2:4, 2:4] = 5
    assert looks_like_labels(organs, "anything")
    assert not looks_like_labels(organs.astype(np.float32), "seg")  # floats are images
    many = (np.arange(8 * 8 * 8) % 300).astype(np.uint16).reshape(8, 8, 8)
    assert not looks_like_labels(many, "volume")
    assert looks_like_labels(many, "volume_seg")  # the name decides for integer data


def test_dicom_folder_opens_as_one_volume(shared_data):
    folder = shared_data / "totalsegmentator" / "dicom_ct_series"
    reader = get_reader(str(folder))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(folder))
    assert kind == "image"
    assert data.shape == (20, 512, 512)
    np.testing.assert_allclose(kwargs["scale"], (2.0, 0.977, 0.977), atol=1e-3)
    assert kwargs["metadata"][GEOMETRY_KEY]["source"] == str(folder)


def test_mr_sample_ships_image_and_reference_labels():
    (image, image_kwargs, image_kind), (labels, label_kwargs, label_kind) = make_mr_sample()
    assert (image_kind, label_kind) == ("image", "labels")
    assert image.shape == labels.shape == (20, 91, 117)
    np.testing.assert_allclose(image_kwargs["scale"], (3.0, 3.0, 3.0))
    assert label_kwargs["visible"] is False
    assert {1, 2, 3, 5} <= set(np.unique(labels).tolist())  # the organs the docs mention
    geometry = image_kwargs["metadata"][GEOMETRY_KEY]
    assert geometry["shape"] == image.shape


def test_volume_to_layer_keeps_bool_masks_as_labels(tmp_path):
    from napari_tpm._reader import volume_to_layer_data

    mask = np.zeros((3, 4, 5), bool)
    mask[1, 1, 1] = True
    data, _, kind = volume_to_layer_data(Volume(mask), source=tmp_path / "mask.nii.gz")
    assert kind == "labels"
    assert data.dtype == np.uint8


def test_flipped_axes_go_into_the_layer_affine_and_ct_gets_a_window():
    from types import SimpleNamespace

    from napari_tpm._reader import CT_WINDOW, placement, volume_to_layer_data

    ct = np.full((4, 5, 6), -1000, np.int16)
    ct[:, 1:4, 1:5] = 40
    flipped = Volume(
        ct, (3.0, 2.0, 1.0), origin=(10.0, 20.0, 30.0), direction=(1, 0, 0, 0, -1, 0, 0, 0, 1)
    )
    place = placement(flipped)
    np.testing.assert_allclose(place["affine"][:3, :3], np.diag([1.0, -1.0, 1.0]))  # (z, y, x)
    np.testing.assert_allclose(place["affine"][:3, 3], (30.0, 20.0, 10.0))
    assert place["translate"] == (0.0, 0.0, 0.0) and place["scale"] == (3.0, 2.0, 1.0)
    _, kwargs, kind = volume_to_layer_data(flipped)
    assert kind == "image" and kwargs["contrast_limits"] == CT_WINDOW
    # an oblique direction keeps the axis-aligned placement (napari slices it poorly)
    oblique = Volume(ct, (3.0, 2.0, 1.0), origin=(10.0, 20.0, 30.0), direction=DIRECTION)
    assert "affine" not in placement(oblique)
    mr = Volume(np.linspace(0, 800, 120).reshape(4, 5, 6), (1.0, 1.0, 1.0))
    assert "contrast_limits" not in volume_to_layer_data(mr)[1]

    settings = SimpleNamespace(plugins=SimpleNamespace(extension2reader={"*.nrrd": "other"}))
    added = prefer_this_reader(settings)
    assert "*.nrrd" not in added and "*.nii.gz" in added
    assert settings.plugins.extension2reader["*.nrrd"] == "other"  # the user's choice wins
    assert settings.plugins.extension2reader["*.nii.gz"] == "napari-tpm"
    assert prefer_this_reader(settings) == []
