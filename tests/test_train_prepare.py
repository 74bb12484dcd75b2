"""`prepare chaos|synapse` on tiny fake downloads made here: geometry, labels, alignment."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import SimpleITK as sitk

from napari_tpm.train.__main__ import main
from napari_tpm.train.prepare import chaos_grey_to_label, find_chaos_cases


def _write_dicom_slices(folder: Path, volume: np.ndarray, spacing_zyx, names) -> None:
    """One DICOM file per slice, as a scanner export would be (positions along z)."""
    folder.mkdir(parents=True)
    sz, sy, sx = spacing_zyx
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.7.1"
    for i, name in enumerate(names):
        sl = sitk.GetImageFromArray(volume[i].astype(np.int16))
        sl.SetSpacing((sx, sy))
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series}.{i + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.7",
            "0020|000e": series,
            "0020|0032": f"0\\0\\{i * sz}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(i + 1),
            "0028|0030": f"{sy}\\{sx}",
            "0018|0050": str(sz),
        }
        for k, v in tags.items():
            sl.SetMetaData(k, v)
        writer.SetFileName(str(folder / name))
        writer.Execute(sl)


def _fake_chaos(root: Path) -> None:
    rng = np.random.default_rng(0)
    nz, ny, nx = 6, 40, 48
    image = 100 + rng.normal(0, 5, (nz, ny, nx))
    grey = np.zeros((nz, ny, nx), np.uint8)
    image[2:5, 10:20, 5:15] = 1000  # "liver": bright, off-centre, in the upper left
    grey[2:5, 10:20, 5:15] = 63
    image[1:3, 25:35, 30:40] = 600  # "spleen"
    image[5, 38:40, 0:2] = 5000  # a hot spot of 4 voxels, above the 99.5th percentile
    grey[1:3, 25:35, 30:40] = 252
    case = root / "Train_Sets" / "MR" / "3" / "T2SPIR"
    # file numbers run against z, so pairing by name (not by order) is tested
    names = [f"IMG-0003-{nz - i:05d}" for i in range(nz)]
    _write_dicom_slices(case / "DICOM_anon", image, (8.0, 1.5, 1.5), [n + ".dcm" for n in names])
    (case / "Ground").mkdir()
    for i, n in enumerate(names):
        iio.imwrite(case / "Ground" / f"{n}.png", grey[i])


def test_chaos_grey_levels_map_to_the_four_organs():
    grey = np.array([0, 60, 63, 70, 126, 130, 189, 252, 250], np.uint8)
    np.testing.assert_array_equal(chaos_grey_to_label(grey), [0, 1, 1, 1, 2, 2, 3, 4, 4])


def test_prepare_chaos_reproduces_the_normalisation(tmp_path):
    _fake_chaos(tmp_path / "src")
    assert [c.pid for c in find_chaos_cases(tmp_path / "src")] == [3]
    assert main(["prepare", "chaos", str(tmp_path / "src"), str(tmp_path / "dst")]) == 0
    img = sitk.ReadImage(str(tmp_path / "dst" / "image_3.nii.gz"))
    lab = sitk.ReadImage(str(tmp_path / "dst" / "label_3.nii.gz"))
    assert img.GetSpacing() == pytest.approx((1.25, 1.25, 7.7))
    assert img.GetSize() == (256, 256, int(6 * 8.0 / 7.7 + 1)) == lab.GetSize()
    a, lab_a = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(lab)
    assert set(np.unique(lab_a)) == {0, 1, 4}
    # top 0.5 % clipped: the hot spot is gone, the organ (2.6 % of the voxels) is kept
    assert a.max() == pytest.approx(1000, abs=1)
    # labels sit on their organs: liver bright, background dark, spleen in between
    assert a[lab_a == 1].mean() > 3 * np.median(a[(lab_a == 0) & (a > 50)])
    assert a[lab_a == 4].mean() > 300
    # no flip: the liver stays in the upper-left quadrant of the content
    _, ys, xs = np.nonzero(lab_a == 1)
    content = np.nonzero(a > 50)
    assert ys.mean() < np.mean(content[1]) and xs.mean() < np.mean(content[2])


def _fake_synapse(root: Path) -> None:
    rng = np.random.default_rng(1)
    for n in (10, 2):
        ct = np.full((5, 100, 100), -1000.0)
        lab = np.zeros((5, 100, 100), np.uint8)
        yy, xx = np.mgrid[:100, :100]
        body = (yy - 50) ** 2 + (xx - 50) ** 2 < 45**2
        ct[:, body] = 40 + rng.normal(0, 10, (5, int(body.sum())))
        ct[1:4, 35:50, 35:48] = 200
        lab[1:4, 35:50, 35:48] = 6  # liver
        ct[2:4, 55:62, 50:60] = -60
        lab[2:4, 55:62, 50:60] = 1  # spleen
        lab[0, 40:60, 40:60] = 7  # stomach, not a target
        for kind, arr in (("img", ct.astype(np.int16)), ("label", lab)):
            im = sitk.GetImageFromArray(arr)
            im.SetSpacing((0.8, 0.8, 3.0))
            folder = root / "RawData" / "Training" / kind
            folder.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(im, str(folder / f"{kind}{n:04d}.nii.gz"))


def test_prepare_synapse_windows_crops_and_zooms(tmp_path):
    _fake_synapse(tmp_path / "src")
    assert main(["prepare", "synapse", str(tmp_path / "src"), str(tmp_path / "dst")]) == 0
    files = sorted(p.name for p in (tmp_path / "dst").glob("*.nii.gz"))
    assert files == ["image_0.nii.gz", "image_1.nii.gz", "label_0.nii.gz", "label_1.nii.gz"]
    img = sitk.ReadImage(str(tmp_path / "dst" / "image_0.nii.gz"))
    lab = sitk.ReadImage(str(tmp_path / "dst" / "label_0.nii.gz"))
    side = round((100 - 64) / 1.75)
    assert img.GetSize() == (side, side, 5) == lab.GetSize()
    assert img.GetSpacing() == pytest.approx((0.8 * 1.75, 0.8 * 1.75, 3.0))
    a, lab_a = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(lab)
    assert a.min() >= 0 and a.max() <= 255.001
    assert set(np.unique(lab_a)) == {0, 1, 6}  # the stomach (7) was dropped
    assert a[lab_a == 6].mean() > 200  # 200 HU -> (200 + 125) / 400 * 255 = 207
    assert a[lab_a == 1].mean() < a[(lab_a == 0)].mean()


def test_prepare_rejects_a_folder_without_the_dataset(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["prepare", "chaos", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "no CHAOS" in capsys.readouterr().err
