"""`python -m napari_tpm.segment`: end to end, geometry, and every bad-input case."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_tpm.io import Volume, read_volume, write_volume
from napari_tpm.orientation import orientation_code
from napari_tpm.phantom import make_phantom
from napari_tpm.segment import main

SHAPE = (20, 80, 80)
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated 90 degrees in-plane
ORIGIN = (12.5, -40.0, 300.0)
#: DIRECTION with the voxel x axis reversed (its first column negated): a mirrored array
MIRRORED = (0.0, -1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A phantom on disk with a non-trivial geometry and the liver painted on one slice."""
    folder = tmp_path_factory.mktemp("cli")
    ph = make_phantom(shape=SHAPE, seed=5)
    like = Volume(np.asarray(ph.image), tuple(ph.spacing), ORIGIN, DIRECTION)
    zs = np.nonzero((ph.labels == 5).any(axis=(1, 2)))[0]
    z = int(zs[len(zs) // 2])
    paint = np.zeros(SHAPE, np.uint8)
    paint[z][ph.labels[z] == 5] = 5
    write_volume(folder / "ct.nii.gz", ph.image, like)
    write_volume(folder / "paint.nii.gz", paint, like)
    return folder, ph, paint


def run_cli(*argv: str) -> int:
    return main([str(a) for a in argv])


def test_end_to_end_keeps_geometry_and_label_values(case, tmp_path):
    folder, ph, _ = case
    out = tmp_path / "out.nrrd"
    prob = tmp_path / "prob.nii.gz"
    code = run_cli(
        folder / "ct.nii.gz",
        "--support-labels", folder / "paint.nii.gz",
        "--out", out,
        "--checkpoint", "filterbank",
        "--probabilities", prob,
        "--connected",
        "--quiet",
    )  # fmt: skip
    assert code == 0
    result = read_volume(out)
    image = read_volume(folder / "ct.nii.gz")
    assert result.array.shape == SHAPE
    np.testing.assert_allclose(result.spacing, image.spacing, rtol=1e-5)
    np.testing.assert_allclose(result.origin, image.origin, atol=1e-4)
    np.testing.assert_allclose(result.direction, image.direction, atol=1e-6)
    assert set(np.unique(result.array)) <= {0, 5}
    assert dice(result.array == 5, ph.labels == 5) > 0.7
    p = read_volume(prob).array
    assert p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1


def _atlas_args(
    folder: Path, tmp_path: Path, liver_shift: float = 0.0, mirrored: bool = False
) -> list:
    """CLI arguments with the liver painted on another phantom (its liver shifted in HU).

    ``mirrored``: the atlas file stores its voxels right-to-left (the x direction cosine is
    -1), the same anatomy in a left-right mirrored array.
    """
    atlas = make_phantom(shape=SHAPE, seed=9)
    liver = atlas.labels == 5
    image = np.where(liver, atlas.image + liver_shift, atlas.image).astype(np.float32)
    zs = np.nonzero(liver.any(axis=(1, 2)))[0]
    z = int(zs[len(zs) // 2])
    paint = np.zeros(SHAPE, np.uint8)
    paint[z][liver[z]] = 5
    direction = DIRECTION  # laid out as the query's phantom
    if mirrored:
        image, paint = image[:, :, ::-1], paint[:, :, ::-1]
        direction = MIRRORED
    grid = Volume(image, tuple(atlas.spacing), direction=direction)
    write_volume(tmp_path / "atlas.nii.gz", image, grid)
    write_volume(tmp_path / "atlas_paint.nii.gz", paint, grid)
    return [
        folder / "ct.nii.gz",
        *("--support-image", tmp_path / "atlas.nii.gz"),
        *("--support-labels", tmp_path / "atlas_paint.nii.gz"),
        *("--checkpoint", "filterbank"),
    ]


def test_support_from_another_volume_says_where_the_second_pass_started(case, tmp_path, capsys):
    folder, ph, _ = case
    base = _atlas_args(folder, tmp_path)
    out = tmp_path / "out.nii.gz"
    assert run_cli(*base, "--out", out) == 0
    said = capsys.readouterr().err
    assert "segmented again from this volume's slice(s) [" in said
    assert dice(read_volume(out).array == 5, ph.labels == 5) > 0.5
    assert run_cli(*base, "--out", tmp_path / "off.nii.gz", "--option", "bootstrap=false") == 0
    assert "segmented again" not in capsys.readouterr().err


def test_support_from_a_later_contrast_phase_says_what_it_changed(case, tmp_path, capsys):
    """The atlas's liver is 80 HU brighter than the query's: the CLI says it shifted it."""
    folder, ph, _ = case
    base = _atlas_args(folder, tmp_path, liver_shift=80.0)
    out = tmp_path / "out.nii.gz"
    assert run_cli(*base, "--out", out) == 0
    said = capsys.readouterr().err
    assert "contrast search: the painted intensities fit this scan best changed by -" in said
    assert "warning: label" not in said  # the result fits the paint
    assert dice(read_volume(out).array == 5, ph.labels == 5) > 0.7
    off = tmp_path / "off.nii.gz"
    assert run_cli(*base, "--out", off, "--option", "contrast_search=false") == 0
    assert "contrast search" not in capsys.readouterr().err


def test_a_mirrored_atlas_file_is_reordered_to_the_image_axes(case, tmp_path, capsys):
    """The same atlas stored left-right mirrored (another converter's voxel order) gives the
    very same result: its arrays are reordered to the query's axes first."""
    folder, _, _ = case
    plain, mirrored = tmp_path / "plain", tmp_path / "mirrored"
    plain.mkdir(), mirrored.mkdir()
    assert run_cli(*_atlas_args(folder, plain), "--out", plain / "out.nii.gz") == 0
    assert "reordered" not in capsys.readouterr().err
    args = _atlas_args(folder, mirrored, mirrored=True)
    assert run_cli(*args, "--out", mirrored / "out.nii.gz") == 0
    change = f"{orientation_code(MIRRORED)} -> {orientation_code(DIRECTION)}"
    assert f"reordered to IMAGE's axes ({change})" in capsys.readouterr().err
    expected = read_volume(plain / "out.nii.gz").array
    assert expected.any()
    np.testing.assert_array_equal(read_volume(mirrored / "out.nii.gz").array, expected)


def test_prototypes_prior_and_range_flags(case, tmp_path):
    folder, _, _ = case
    sizes = []
    for prior in ("0.1", "0.9"):
        out = tmp_path / f"out{prior}.nii.gz"
        args = [folder / "ct.nii.gz", "--support-labels", folder / "paint.nii.gz"]
        args += ["--out", out, "--checkpoint", "filterbank", "--prior", prior]
        args += ["--prototypes", "3", "--range", "2", "15", "--quiet"]
        assert run_cli(*args) == 0
        arr = read_volume(out).array
        assert not arr[:2].any() and not arr[16:].any()
        sizes.append(int((arr > 0).sum()))
    assert sizes[0] < sizes[1]


def _corrupt(folder: Path) -> Path:
    data = (folder / "ct.nii.gz").read_bytes()
    bad = folder / "corrupt.nii.gz"
    bad.write_bytes(data[: len(data) // 3])
    return bad


def _image_2d(folder: Path) -> Path:
    path = folder / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 32), np.int16)), str(path))
    return path


def _image_4d(folder: Path) -> Path:
    path = folder / "movie.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 8, 8), np.int16)), str(path))
    return path


def _nan_image(folder: Path) -> Path:
    arr = np.zeros(SHAPE, np.float32)
    arr[1, 2, 3] = np.nan
    path = folder / "nan.nii.gz"
    write_volume(path, arr, read_volume(folder / "ct.nii.gz"))
    return path


def _paint(folder: Path, name: str, fill) -> Path:
    arr = np.zeros(SHAPE, np.uint8)
    fill(arr)
    path = folder / name
    write_volume(path, arr, read_volume(folder / "ct.nii.gz"))
    return path


def _no_paint(folder: Path) -> Path:
    return _paint(folder, "empty.nii.gz", lambda a: None)


def _two_slices(folder: Path) -> Path:
    def fill(a):
        a[4, 30:40, 30:40] = 1
        a[9, 30:40, 30:40] = 1

    return _paint(folder, "two.nii.gz", fill)


def _other_grid(folder: Path) -> Path:
    path = folder / "small.nii.gz"
    arr = np.zeros((10, 40, 40), np.uint8)
    arr[5, 10:20, 10:20] = 1
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path


def _not_gzip(folder: Path) -> Path:
    path = folder / "fake.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti file at all"))
    return path


@pytest.mark.parametrize(
    ("image", "paint", "extra", "needle"),
    [
        (lambda f: f / "missing.nii.gz", None, [], "missing.nii.gz"),
        (_corrupt, None, [], "corrupt.nii.gz"),
        (_not_gzip, None, [], "fake.nii.gz"),
        (_image_2d, None, [], "2D"),
        (_image_4d, None, [], "4D"),
        (_nan_image, None, [], "NaN"),
        (None, _no_paint, [], "empty"),
        (None, _other_grid, [], "grid"),
        (None, None, ["--prototypes", "0"], "at least 1"),
        (None, None, ["--prior", "1.5"], "between 0 and 1"),
        (None, None, ["--prior", "0"], "between 0 and 1"),
        (None, None, ["--checkpoint", "no-such-model"], "no-such-model"),
    ],
)
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys, image, paint, extra, needle):
    folder, _, _ = case
    img = image(folder) if image else folder / "ct.nii.gz"
    lab = paint(folder) if paint else folder / "paint.nii.gz"
    out = tmp_path / "never.nii.gz"
    assert run_cli(img, "--support-labels", lab, "--out", out, "--quiet", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert needle in err[0]
    assert "Traceback" not in err[0]
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_paint_on_two_slices_of_one_axis_is_accepted(case, tmp_path):
    """Corrections on a second slice are support too (the session takes several slices)."""
    folder, _, _ = case
    out = tmp_path / "two.nii.gz"
    argv = [folder / "ct.nii.gz", "--support-labels", _two_slices(folder), "--out", out]
    assert run_cli(*argv, "--checkpoint", "filterbank", "--quiet") == 0
    assert read_volume(out).shape == SHAPE


def test_too_large_volume_is_refused(case, tmp_path, capsys, monkeypatch):
    folder, _, _ = case
    monkeypatch.setattr("napari_tpm.session.available_memory_bytes", lambda: 1024)
    out = tmp_path / "x.nii.gz"
    args = [folder / "ct.nii.gz", "--support-labels", folder / "paint.nii.gz", "--out", out]
    assert run_cli(*args, "--checkpoint", "filterbank", "--quiet") == 2
    assert "memory" in capsys.readouterr().err
    assert not out.exists()


def test_help_documents_every_flag():
    proc = subprocess.run(
        [sys.executable, "-m", "napari_tpm.segment", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in (
        "--support-labels", "--out", "--support-image", "--prototypes", "--prior",
        "--checkpoint", "--device", "--probabilities", "--connected", "--range", "--demo",
        "examples:",
    ):  # fmt: skip
        assert flag in proc.stdout


def test_demo_runs_and_reports_dice(tmp_path, capsys):
    assert main(["--demo", str(tmp_path / "demo"), "--checkpoint", "filterbank"]) == 0
    err = capsys.readouterr().err
    assert "Dice liver" in err
    assert "is painted on" not in err  # the demo paints where every organ is wide enough
    assert (tmp_path / "demo" / "result.nii.gz").exists()


@pytest.mark.realdata
def test_real_ct_liver(shared_data, tmp_path):
    """Liver on a real CT (TotalSegmentator silver labels, value 5) from its middle slice."""
    ct = shared_data / "totalsegmentator" / "ts_ct_full_3mm_ct.nii.gz"
    ts = shared_data / "totalsegmentator"
    truth = read_volume(ts / "ts_ct_full_3mm_label_totalseg_fast.nii.gz")
    liver = truth.array == 5
    zs = np.nonzero(liver.any(axis=(1, 2)))[0]
    z = int(zs[len(zs) // 2])
    paint = np.zeros(liver.shape, np.uint8)
    paint[z][liver[z]] = 5
    write_volume(tmp_path / "paint.nii.gz", paint, truth)
    out = tmp_path / "liver.nii.gz"
    assert run_cli(ct, "--support-labels", tmp_path / "paint.nii.gz", "--out", out,
                   "--connected", "--quiet") == 0  # fmt: skip
    result = read_volume(out)
    assert result.array.shape == liver.shape
    assert dice(result.array == 5, liver) > 0.5


def test_adapt_steps_tunes_and_saves_the_model(case, tmp_path):
    from napari_tpm.checkpoints import load_model

    folder, _, _ = case
    out, saved = tmp_path / "out.nii.gz", tmp_path / "adapted.pt"
    before = sorted(folder.iterdir())
    code = run_cli(
        folder / "ct.nii.gz", "--support-labels", folder / "paint.nii.gz", "--out", out,
        "--checkpoint", "resnet18l3-cpu800", "--adapt-steps", "2", "--save-adapted", saved,
        "--quiet",
    )  # fmt: skip
    assert code == 0
    assert out.exists()
    model = load_model(saved)
    assert model.name.endswith("+adapted")
    assert model.card["adaptation"]["steps"] == 2
    assert sorted(folder.iterdir()) == before  # nothing written next to the user's data


def test_adapt_refuses_the_training_free_model(case, tmp_path, capsys):
    folder, _, _ = case
    out = tmp_path / "out.nii.gz"
    code = run_cli(
        folder / "ct.nii.gz", "--support-labels", folder / "paint.nii.gz", "--out", out,
        "--checkpoint", "filterbank", "--adapt-steps", "2", "--quiet",
    )  # fmt: skip
    assert code == 2
    assert "trainable" in capsys.readouterr().err
    assert not out.exists()


def test_a_result_that_fits_the_paint_poorly_is_flagged(case, tmp_path, capsys, monkeypatch):
    """Below the doubt threshold the CLI warns that the result may be a look-alike."""
    import napari_tpm._session_contrast as session_contrast
    import napari_tpm.contrast as contrast

    folder, _, _ = case
    monkeypatch.setattr(contrast, "DOUBTFUL_FIT", 10.0)  # no fit reaches this
    monkeypatch.setattr(session_contrast, "DOUBTFUL_FIT", 10.0)
    assert run_cli(*_atlas_args(folder, tmp_path), "--out", tmp_path / "out.nii.gz") == 0
    said = capsys.readouterr().err
    assert "warning: label 5 fits the painted organ poorly (fit " in said
    assert "< 10.0): from another scan" in said and "paint one slice of this scan" in said


def test_paint_on_a_tiny_section_is_warned_about(case, tmp_path, capsys):
    """A few pixels of the liver painted and used as drawn (an organ's pole): the CLI says so
    and what to do. With the default completion the same pixels are a dab inside the liver:
    the CLI says it completed them, and the completed section is no pole."""
    folder, _, paint = case
    z = int(np.flatnonzero(paint.any(axis=(1, 2)))[0])
    ys, xs = np.nonzero(paint[z])
    tiny = np.zeros_like(paint)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    tiny[z, cy - 2 : cy + 3, cx - 2 : cx + 3] = paint[z, cy - 2 : cy + 3, cx - 2 : cx + 3]
    like = read_volume(folder / "ct.nii.gz")
    write_volume(tmp_path / "tiny.nii.gz", tiny, like)
    out = tmp_path / "out.nii.gz"
    base = [folder / "ct.nii.gz", "--support-labels", tmp_path / "tiny.nii.gz", "--out", out]
    assert run_cli(*base, "--option", "complete_paint=false") == 0
    said = capsys.readouterr().err
    assert "warning: label 5 is painted on " in said and "paint it on a slice where" in said
    assert "completed" not in said
    assert run_cli(*base) == 0
    said = capsys.readouterr().err
    assert f"label 5 covered part of its organ on slice {z}: completed" in said
    assert "is painted on" not in said
    result = read_volume(out).array == 5
    assert dice(result, case[1].labels == 5) > 0.7
    assert (
        run_cli(folder / "ct.nii.gz", "--support-labels", folder / "paint.nii.gz", "--out", out)
        == 0
    )
    assert "is painted on" not in capsys.readouterr().err


def test_paint_at_the_organs_end_says_it_segmented_again(tmp_path, capsys):
    """end_second_pass through the CLI: the note names the step and the option that turns
    it off (the liver outlined at 15 % of its slices, as in test_paint_position)."""
    ph = make_phantom(shape=(32, 96, 96), seed=4)
    like = Volume(np.asarray(ph.image), tuple(ph.spacing), ORIGIN, DIRECTION)
    liver = ph.labels == 5
    zs = np.flatnonzero(liver.any(axis=(1, 2)))
    z = int(zs[round(0.15 * (zs.size - 1))])
    paint = np.zeros(liver.shape, np.uint8)
    paint[z][liver[z]] = 5
    write_volume(tmp_path / "ct.nii.gz", ph.image, like)
    write_volume(tmp_path / "end.nii.gz", paint, like)
    base = [tmp_path / "ct.nii.gz", "--support-labels", tmp_path / "end.nii.gz"]
    assert run_cli(*base, "--out", tmp_path / "out.nii.gz", "--checkpoint", "filterbank") == 0
    said = capsys.readouterr().err
    assert "paint at the organ's end: segmented again from this volume's slice(s) [" in said
    assert "--option end_second_pass=false" in said and "another volume" not in said
    off = ["--option", "end_second_pass=false", "--checkpoint", "filterbank"]
    assert run_cli(*base, "--out", tmp_path / "off.nii.gz", *off) == 0
    assert "segmented again" not in capsys.readouterr().err
