"""Volume I/O: geometry survives a round trip, DICOM folders read, and every bad input gets a
one-line VolumeError that names the problem."""

from __future__ import annotations

import gzip
import locale
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_tpm.io import (
    Volume,
    VolumeError,
    check_finite,
    check_size,
    read_volume,
    require_same_grid,
    same_grid,
    write_volume,
)


def _rotated_direction() -> tuple[float, ...]:
    """A proper rotation: 30 degrees about z, then 10 degrees about x."""
    a, b = math.radians(30), math.radians(10)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rx @ rz).ravel())


@pytest.fixture
def volume() -> Volume:
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1500, size=(7, 12, 15)).astype(np.int16)
    return Volume(
        array, spacing=(2.5, 0.7, 0.9), origin=(-10.5, 20.25, 33.0), direction=_rotated_direction()
    )


def _assert_one_line(err: pytest.ExceptionInfo, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"])
def test_round_trip_keeps_array_and_geometry(tmp_path: Path, volume: Volume, ext: str) -> None:
    path = write_volume(tmp_path / f"vol{ext}", volume.array, like=volume)
    back = read_volume(path)
    assert back.array.dtype == volume.array.dtype
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-5)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-5)
    assert same_grid(back, volume)


def test_round_trip_float_image(tmp_path: Path, volume: Volume) -> None:
    data = volume.array.astype(np.float32) / 7.0
    back = read_volume(write_volume(tmp_path / "f.nrrd", data, like=volume))
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, data)


def test_sitk_helpers_match_simpleitk_conventions(volume: Volume) -> None:
    image = volume.to_sitk()
    assert image.GetSize() == volume.array.shape[::-1]
    assert image.GetSpacing() == pytest.approx(volume.spacing[::-1])
    again = Volume.from_sitk(image)
    np.testing.assert_array_equal(again.array, volume.array)
    assert again.spacing == pytest.approx(volume.spacing)
    assert again.origin == pytest.approx(volume.origin)
    assert again.direction == pytest.approx(volume.direction)


def test_boolean_arrays_convert_to_sitk() -> None:
    mask = np.zeros((3, 4, 5), dtype=bool)
    mask[1, 2, 3] = True
    image = Volume(mask).to_sitk()
    assert image.GetPixelID() == sitk.sitkUInt8
    assert sitk.GetArrayFromImage(image)[1, 2, 3] == 1


def test_write_explicit_geometry_overrides_like(tmp_path: Path, volume: Volume) -> None:
    back = read_volume(
        write_volume(tmp_path / "o.mha", volume.array, like=volume, spacing=(1.0, 2.0, 3.0))
    )
    assert back.spacing == pytest.approx((1.0, 2.0, 3.0))
    assert back.origin == pytest.approx(volume.origin)
    plain = read_volume(write_volume(tmp_path / "p.mha", volume.array))
    assert plain.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert plain.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))


@pytest.mark.parametrize(
    ("array", "is_label", "dtype"),
    [
        (np.array([0.0, 1.0, 2.0, 5.0]), True, np.uint8),
        (np.array([True, False, True, True]), None, np.uint8),
        (np.array([0, 1, 300, 2], dtype=np.int64), None, np.uint16),
        (np.array([0, 1, 3, 2], dtype=np.int64), None, np.uint8),
    ],
)
def test_labels_are_stored_as_small_integers(
    tmp_path: Path, array: np.ndarray, is_label: bool | None, dtype: type
) -> None:
    labels = np.broadcast_to(array.reshape(1, 1, 4), (3, 2, 4)).copy()
    back = read_volume(write_volume(tmp_path / "l.nii.gz", labels, is_label=is_label))
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, labels.astype(dtype))


def test_write_refuses_shape_mismatch_and_bad_targets(tmp_path: Path, volume: Volume) -> None:
    with pytest.raises(VolumeError) as err:
        write_volume(tmp_path / "x.nii.gz", volume.array[:-1], like=volume)
    _assert_one_line(err, "shape")
    with pytest.raises(VolumeError) as err:
        write_volume(tmp_path / "x.png", volume.array)
    _assert_one_line(err, "unsupported")
    with pytest.raises(VolumeError) as err:
        write_volume(tmp_path / "missing" / "x.nii", volume.array)
    _assert_one_line(err, "does not exist")
    with pytest.raises(VolumeError) as err:
        write_volume(tmp_path / "x.nii", volume.array[0])
    _assert_one_line(err, "3D")


def test_same_grid_detects_each_difference(volume: Volume) -> None:
    def variant(**kw) -> Volume:
        fields = dict(
            array=volume.array,
            spacing=volume.spacing,
            origin=volume.origin,
            direction=volume.direction,
        )
        fields.update(kw)
        return Volume(**fields)

    assert same_grid(volume, variant(origin=np.add(volume.origin, 1e-5)))
    cases = {
        "shape": variant(array=volume.array[:, :-1]),
        "spacing": variant(spacing=(2.5, 0.7, 1.0)),
        "origin": variant(origin=np.add(volume.origin, (0.7, 0, 0))),
        "direction": variant(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)),
    }
    for what, other in cases.items():
        assert not same_grid(volume, other), what
        with pytest.raises(VolumeError) as err:
            require_same_grid(volume, other, "support labels")
        _assert_one_line(
            err, "support labels grid (shape/spacing/origin/direction) does not match", what
        )
    require_same_grid(volume, variant())


@pytest.mark.realdata
def test_dicom_series_folder_matches_converted_nifti(shared_data: Path) -> None:
    folder = shared_data / "totalsegmentator" / "dicom_ct_series"
    nifti = shared_data / "totalsegmentator" / "ts_dicom_ct.nii.gz"
    if not folder.is_dir() or not nifti.is_file():
        pytest.skip("DICOM series or its NIfTI conversion is absent")
    dicom = read_volume(folder)
    reference = read_volume(nifti)
    assert dicom.shape == reference.shape == (20, 512, 512)
    assert dicom.spacing == pytest.approx(reference.spacing)
    # the NIfTI was written in another orientation: bring both to LPS and compare voxels
    a = sitk.GetArrayFromImage(sitk.DICOMOrient(dicom.to_sitk(), "LPS"))
    b = sitk.GetArrayFromImage(sitk.DICOMOrient(reference.to_sitk(), "LPS"))
    np.testing.assert_array_equal(a, b)


def _write_dicom_series(folder: Path, n: int, series_uid: str, prefix: str) -> None:
    """Write a tiny DICOM series, then put back the locale GDCM's writer resets to "C"."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_files(folder, n, series_uid, prefix)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_files(folder: Path, n: int, series_uid: str, prefix: str) -> None:
    volume = sitk.GetImageFromArray(np.arange(n * 64, dtype=np.int16).reshape(n, 8, 8))
    volume.SetSpacing((0.8, 0.8, 2.5))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(n):
        piece = volume[:, :, i]
        tags = {
            "0020|000e": series_uid,
            "0020|000d": "1.2.3",
            "0008|0060": "CT",
            "0020|0013": str(i),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": "\\".join(map(str, volume.TransformIndexToPhysicalPoint((0, 0, i)))),
        }
        for key, value in tags.items():
            piece.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{prefix}{i}.dcm"))
        writer.Execute(piece)


def test_dicom_folder_with_two_series_reads_the_larger_and_warns(tmp_path: Path) -> None:
    _write_dicom_series(tmp_path, 3, "1.2.3.4", "a")
    _write_dicom_series(tmp_path, 5, "1.2.3.5", "b")
    with pytest.warns(UserWarning, match="2 DICOM series"):
        volume = read_volume(tmp_path)
    assert volume.shape == (5, 8, 8)
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.8))


def test_single_series_reads_without_warning(tmp_path: Path) -> None:
    _write_dicom_series(tmp_path, 4, "1.2.3.9", "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_volume(tmp_path).shape == (4, 8, 8)


# ------------------------------------------------------------------------------------------
# error cases


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(VolumeError) as err:
        read_volume(tmp_path / "nothing.nii.gz")
    _assert_one_line(err, "nothing.nii.gz", "no such file")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG....")
    with pytest.raises(VolumeError) as err:
        read_volume(path)
    _assert_one_line(err, "unsupported", ".png")
    single = tmp_path / "slice.dcm"
    single.write_bytes(b"x")
    with pytest.raises(VolumeError) as err:
        read_volume(single)
    _assert_one_line(err, "folder")


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.nii"
    path.write_bytes(b"not an image at all " * 20)
    with pytest.raises(VolumeError) as err:
        read_volume(path)
    _assert_one_line(err, "junk.nii", "corrupt")


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file(tmp_path: Path, volume: Volume, ext: str) -> None:
    path = write_volume(tmp_path / f"whole{ext}", volume.array, like=volume)
    data = path.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeError) as err:
        read_volume(cut)
    message = str(err.value)
    assert "\n" not in message and f"cut{ext}" in message
    assert "corrupt" in message or "truncated" in message


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_truncated_float_nifti(tmp_path: Path, volume: Volume, ext: str) -> None:
    path = write_volume(tmp_path / f"f{ext}", volume.array.astype(np.float32), like=volume)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(VolumeError) as err:
        read_volume(path)
    _assert_one_line(err, "truncated")


def test_multi_member_gzip_nifti_is_accepted(tmp_path: Path, volume: Volume) -> None:
    """A valid gzip made of two members fails the quick size check; the full count accepts it."""
    raw = write_volume(tmp_path / "v.nii", volume.array, like=volume).read_bytes()
    path = tmp_path / "two.nii.gz"
    path.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    np.testing.assert_array_equal(read_volume(path).array, volume.array)


def test_empty_folder_and_folder_without_dicom(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VolumeError) as err:
        read_volume(empty)
    _assert_one_line(err, "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    with pytest.raises(VolumeError) as err:
        read_volume(other)
    _assert_one_line(err, "no DICOM")


def test_2d_images(tmp_path: Path) -> None:
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 12), np.int16)), str(flat))
    with pytest.raises(VolumeError) as err:
        read_volume(flat)
    _assert_one_line(err, "2D")
    one_slice = write_volume(tmp_path / "one.nii.gz", np.zeros((1, 10, 12), np.int16))
    with pytest.raises(VolumeError) as err:
        read_volume(one_slice)
    _assert_one_line(err, "2D")


def test_4d_and_vector_images(tmp_path: Path) -> None:
    frames = [sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))] * 3
    four = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(frames), str(four))
    with pytest.raises(VolumeError) as err:
        read_volume(four)
    _assert_one_line(err, "4D")
    rgb = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True), rgb)
    with pytest.raises(VolumeError) as err:
        read_volume(rgb)
    _assert_one_line(err, "multi-component")


def test_4d_with_one_frame_is_read_as_3d(tmp_path: Path) -> None:
    frame = sitk.GetImageFromArray(np.arange(120, dtype=np.float32).reshape(4, 5, 6))
    path = tmp_path / "single_frame.nrrd"
    sitk.WriteImage(sitk.JoinSeries([frame]), str(path))
    volume = read_volume(path)
    assert volume.shape == (4, 5, 6)
    assert volume.array[1, 2, 3] == 1 * 30 + 2 * 6 + 3


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_voxels(tmp_path: Path, volume: Volume, ext: str, dtype: type) -> None:
    data = volume.array.astype(dtype)
    data[2, 3, 4] = np.nan
    data[0, 0, 0] = np.nan
    data[6, 11, 14] = -np.inf
    path = write_volume(tmp_path / f"nan{ext}", data, like=volume)
    with pytest.raises(VolumeError) as err:
        read_volume(path)
    _assert_one_line(err, f"nan{ext}", "2 NaN", "1 infinite")


def test_finite_float_nifti_reads(tmp_path: Path, volume: Volume) -> None:
    data = volume.array.astype(np.float64) / 3
    back = read_volume(write_volume(tmp_path / "ok.nii.gz", data, like=volume))
    np.testing.assert_array_equal(back.array, data)


def test_check_finite_and_check_size() -> None:
    check_finite(np.zeros((2, 2, 2), np.int16))
    with pytest.raises(VolumeError) as err:
        check_finite(np.array([1.0, np.inf]), "support image")
    _assert_one_line(err, "support image", "infinite")
    assert check_size((10, 20, 30), 6000) == 6000
    with pytest.raises(VolumeError) as err:
        check_size((10, 20, 31), 6000)
    _assert_one_line(err, "6,200 voxels", "6,000")
