"""`python -m napari_tpm.train`: data discovery, a tiny run from files, resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm.checkpoints import load_model
from napari_tpm.io import write_volume
from napari_tpm.phantom import make_phantom_dataset
from napari_tpm.train.__main__ import main
from napari_tpm.train.runlog import read_log
from napari_tpm.train.volumes import find_volumes, load_training_volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("scans")
    for i, p in enumerate(make_phantom_dataset(2, shape=(10, 40, 40), seed=30)):
        write_volume(root / f"image_{i}.nii.gz", p.image, spacing=p.spacing)
        write_volume(root / f"label_{i}.nii.gz", p.labels, spacing=p.spacing)
    return root


def test_find_volumes_skips_label_maps_and_hidden_folders(data_dir, tmp_path):
    (data_dir / ".napari-tpm-cache").mkdir(exist_ok=True)
    found = [p.name for p in find_volumes(data_dir)]
    assert found == ["image_0.nii.gz", "image_1.nii.gz"]
    assert [p.name for p in find_volumes(data_dir, include=["label_1*"])] == [
        "image_0.nii.gz",
        "image_1.nii.gz",
        "label_1.nii.gz",
    ]


def _tiny_run(data_dir, out, checkpoint_every: int) -> list[str]:
    """Arguments of a tiny resnet18-l3 run on the phantom scans (no analysis episodes)."""
    return [
        str(data_dir), "--size", "40", "--sv-min-size", "40", "--min-support-px", "20",
        "--encoder", "resnet18-l3", "--device", "cpu", "--analysis-episodes", "0",
        "--checkpoint-every", str(checkpoint_every), "--quiet", "--threads", "1",
        "--out", str(out),
    ]  # fmt: skip


def test_train_from_files_then_resume_to_more_steps(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = _tiny_run(data_dir, out, checkpoint_every=2)
    assert main([*args, "--steps", "2"]) == 0
    assert len(list((data_dir / ".napari-tpm-cache").glob("image_*.npz"))) == 2
    first = load_model(out / "model.pt")
    assert first.card["training"]["steps"] == 2
    assert main(["train", *args, "--steps", "3", "--resume"]) == 0
    assert "step 2/3" in capsys.readouterr().err
    assert [int(r["step"]) for r in read_log(out / "losses.csv")] == [1, 2, 3]
    assert load_model(out / "model.pt").card["training"]["steps"] == 3


def test_time_limit_stops_checkpoints_exports_and_resume_finishes(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = [*_tiny_run(data_dir, out, checkpoint_every=100), "--steps", "4"]
    assert main([*args, "--time-limit", "1e-6"]) == 0  # out of time after the first step
    assert "time limit reached at step 1/4" in capsys.readouterr().err
    assert load_model(out / "model.pt").card["training"]["steps"] == 1
    assert main([*args, "--resume"]) == 0  # from the checkpoint the limit wrote
    assert "step 1/4" in capsys.readouterr().err
    assert [int(r["step"]) for r in read_log(out / "losses.csv")] == [1, 2, 3, 4]
    assert load_model(out / "model.pt").card["training"]["steps"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--out", "x"], "give DATA"),
        (["train", "nowhere/", "--out", "x"], "no such file"),
        (["train", ".", "--holdout", "chaos", "--out", "x"], "--holdout must be"),
        (["train", "--phantoms", "1", "--init", "missing.pth", "--out", "x"], "--init file"),
        (["train", "--phantoms", "1", "--encoder", "vgg", "--out", "x"], "invalid choice"),
        (["train", "--phantoms", "1", "--time-limit", "0", "--out", "x"], "above 0"),
        (["train", "--phantoms", "1", "--time-limit", "nan", "--out", "x"], "above 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.realdata
def test_a_dicom_series_becomes_a_training_volume(shared_data, tmp_path):
    folder = shared_data / "totalsegmentator" / "dicom_ct_series"
    vol = load_training_volume(folder, size=128, cache_dir=tmp_path, min_size=500)
    assert vol.modality == "ct" and vol.image.shape == (20, 128, 128)
    assert vol.spacing[0] == pytest.approx(2.0, abs=0.01)
    sizes = np.bincount(vol.supervoxels.ravel())[1:]
    assert sizes.size > 5 and (sizes[sizes > 0] >= 500).mean() > 0.9


def test_setting_2_excludes_slices_showing_test_classes(data_dir, tmp_path, capsys):
    from napari_tpm.io import read_volume
    from napari_tpm.train.volumes import exclude_label_slices, label_path_for

    image = data_dir / "image_0.nii.gz"
    assert label_path_for(image) == data_dir / "label_0.nii.gz"
    vol = load_training_volume(image, size=40, min_size=40, cache_dir=tmp_path / "c")
    labels = read_volume(data_dir / "label_0.nii.gz").array
    kidneys = np.isin(labels, [2, 3]).any(axis=(1, 2))
    assert kidneys.any() and not kidneys.all()
    vol, n = exclude_label_slices(vol, labels, [2, 3])
    assert n == int(kidneys.sum())
    assert not vol.supervoxels[kidneys].any()
    assert vol.supervoxels[~kidneys].any()
    # the CLI runs with it, and refuses data without label maps
    args = [
        str(image), "--size", "40", "--sv-min-size", "40", "--min-support-px", "20",
        "--encoder", "resnet18-l3", "--device", "cpu", "--analysis-episodes", "0",
        "--quiet", "--threads", "1", "--steps", "1", "--cache-dir", str(tmp_path / "c"),
    ]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "r"), "--exclude-label-values", "2,3"]) == 0
    lone = tmp_path / "scan.nii.gz"
    lone.write_bytes(image.read_bytes())
    args[0] = str(lone)
    code = main([*args, "--out", str(tmp_path / "r2"), "--exclude-label-values", "2,3"])
    assert code == 2
    assert "no label map" in capsys.readouterr().err
