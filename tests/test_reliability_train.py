"""Issue 13 for training, checkpoints and evaluation: damaged run files, bad --out folders,
full disks and hostile checkpoints end in a correct result or one line and exit 2.

Tiny phantom runs (2-3 steps of resnet18-l3 on 40 x 40 slices) keep this module fast.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_tpm.checkpoints import CheckpointError, load_model, save_model
from napari_tpm.train.__main__ import main as train
from napari_tpm.train.runlog import read_log

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN = [
    "train", "--phantoms", "1", "--phantom-shape", "8,40,40", "--size", "40",
    "--sv-min-size", "40", "--min-support-px", "20", "--encoder", "resnet18-l3",
    "--device", "cpu", "--analysis-episodes", "0", "--checkpoint-every", "1", "--quiet",
    "--threads", "1",
]  # fmt: skip


def one_error_line(capsys) -> str:
    """The single error line (train also prints one status line before it starts)."""
    text = capsys.readouterr().err
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1, text
    return lines[0]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial" in p.name or ".tmp" in p.name)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 2-step run: last.pt (step 2), last.prev.pt (step 1), losses.csv, model.pt."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert train([*RUN, "--steps", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(run_dir, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def test_a_run_keeps_the_previous_checkpoint(run_dir):
    assert torch.load(run_dir / "last.pt", weights_only=True)["step"] == 2
    assert torch.load(run_dir / "last.prev.pt", weights_only=True)["step"] == 1
    assert temporaries(run_dir) == []


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_last_pt_falls_back_to_the_previous_one(run_copy, capsys, damage):
    last = run_copy / "last.pt"
    last.write_bytes(
        last.read_bytes()[: last.stat().st_size // 2] if damage == "truncated" else b""
    )
    assert train([*RUN, "--steps", "3", "--out", str(run_copy), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resuming from the previous checkpoint" in err and "Traceback" not in err
    assert [int(r["step"]) for r in read_log(run_copy / "losses.csv")] == [1, 2, 3]


def test_no_readable_checkpoint_is_one_line(run_copy, capsys):
    (run_copy / "last.pt").write_bytes(b"")
    (run_copy / "last.prev.pt").write_bytes(b"garbage")
    assert train([*RUN, "--steps", "3", "--out", str(run_copy), "--resume"]) == 2
    assert "no readable checkpoint" in one_error_line(capsys)


def test_resume_with_another_encoder_is_one_line(run_copy, capsys):
    argv = [*RUN, "--steps", "3", "--out", str(run_copy), "--resume"]
    argv[argv.index("resnet18-l3")] = "resnet18"
    assert train(argv) == 2
    assert "--encoder resnet18-l3" in one_error_line(capsys)


def test_garbage_and_cut_rows_in_the_loss_log(run_copy):
    log = run_copy / "losses.csv"
    text = log.read_text()
    header, first, second = text.splitlines()[:3]
    log.write_text(f"{header}\n{first}\nnot,a,row\n{second}\n3,0.5,0.2")  # last row cut short
    assert [int(r["step"]) for r in read_log(log)] == [1, 2]
    assert train([*RUN, "--steps", "3", "--out", str(run_copy), "--resume"]) == 0
    rows = read_log(log)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert len(log.read_text().splitlines()) == 4  # header and three clean rows


def test_a_cut_row_of_the_checkpointed_step_is_restored_from_the_checkpoint(run_copy):
    log = run_copy / "losses.csv"
    text = log.read_text()
    log.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # step 2 cut short
    assert train([*RUN, "--steps", "3", "--out", str(run_copy), "--resume"]) == 0
    rows = read_log(log)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(r[k] != "" for r in rows for k in ("loss", "lr", "t_d"))


def test_out_that_is_a_file_is_refused_before_work(tmp_path, capsys):
    target = tmp_path / "run"
    target.write_text("keep me")
    assert train([*RUN, "--steps", "1", "--out", str(target)]) == 2
    assert "is a file" in one_error_line(capsys)
    assert target.read_text() == "keep me"


def test_out_on_a_read_only_file_system_is_refused(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "ro"
    where.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)]
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert train([*RUN, "--steps", "1", "--out", str(where / "run")]) == 2
        assert "read-only" in one_error_line(capsys)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_full_disk_during_training_is_one_line_and_leaves_no_temporaries(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = disk / "run"
        assert train([*RUN, "--steps", "2", "--out", str(out)]) == 2
        line = one_error_line(capsys)
        assert "no space left on device" in line and str(out / "last.pt") in line
        assert temporaries(disk) == [] and not (out / "last.pt").exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_torch_write_failure_is_an_os_error_and_leaves_no_temporaries(
    tmp_path, capsys, monkeypatch
):
    """torch's zip writer reports ENOSPC as a RuntimeError; it must not become a traceback."""
    import shutil as shutil_module

    real_save = torch.save

    def no_space(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704")

    monkeypatch.setattr(torch, "save", no_space)
    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(
        "napari_tpm.torch_files.shutil.disk_usage", lambda p: usage._replace(free=4096)
    )
    out = tmp_path / "run"
    assert train([*RUN, "--steps", "2", "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert "no space left on device" in line and str(out / "last.pt") in line
    assert temporaries(out) == [] and not (out / "last.pt").exists()


def test_truncated_supervoxel_cache_is_recomputed(tmp_path):
    from napari_tpm.phantom import make_phantom
    from napari_tpm.train.supervoxels import cached_supervoxels

    image = make_phantom(shape=(6, 32, 32), seed=1).image.astype(np.float32)
    first = cached_supervoxels(image, (3.0, 1.0, 1.0), tmp_path, min_size=20)
    (cache,) = tmp_path.glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:40])
    again = cached_supervoxels(image, (3.0, 1.0, 1.0), tmp_path, min_size=20)
    assert np.array_equal(first, again)
    with np.load(cache) as f:  # rewritten whole
        assert f["supervoxels"].shape == image.shape


class _Hostile:
    def __reduce__(self):
        return (os.system, ("touch HACKED",))


def test_malicious_init_is_one_line_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Hostile()}, bad)
    argv = [*RUN, "--steps", "1", "--out", str(tmp_path / "run"), "--init", str(bad)]
    assert train(argv) == 2
    assert "evil.pth" in one_error_line(capsys)
    assert not (tmp_path / "HACKED").exists()


# --------------------------------------------------------------- checkpoint bounds (3)
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    from napari_tpm.checkpoints import TPMModel
    from napari_tpm.encoders import build_encoder

    path = save_model(
        TPMModel(build_encoder({"name": "resnet18-l3", "out_channels": 8})),
        tmp_path_factory.mktemp("ck") / "m.pt",
    )
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("encoder_config", {"name": "resnet18-l3", "out_channels": 20_000_000}, "out_channels"),
        ("encoder_config", {"name": "resnet18-l3", "out_channels": -4}, "out_channels"),
        ("encoder_config", {"name": "filterbank", "stride": 0}, "stride"),
        ("estimators", {"sp": {"linest": {"b0": "x"}}}, "estimators"),
        ("estimators", {"sp": {"avgest": {"prior": float("nan")}}}, "estimators"),
        ("estimators", ["garbage"], "estimators"),
        ("t_d", float("nan"), "t_d"),
        ("alpha", -1.0, "alpha"),
    ],
)
def test_checkpoint_numbers_are_checked_before_use(saved, tmp_path, field, value, needle):
    path = tmp_path / "bad.pt"
    torch.save({**saved, field: value}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_segment_cli_reports_a_bad_checkpoint_in_one_line(saved, tmp_path, capsys):
    from napari_tpm.io import write_volume
    from napari_tpm.segment import main as segment

    path = tmp_path / "bad.pt"
    torch.save({**saved, "encoder_config": {"name": "filterbank", "stride": 0}}, path)
    image = np.random.default_rng(0).normal(size=(6, 32, 32)).astype(np.float32)
    paint = np.zeros(image.shape, np.uint8)
    paint[3, 10:20, 10:20] = 1
    write_volume(tmp_path / "i.nii.gz", image)
    write_volume(tmp_path / "p.nii.gz", paint)
    argv = [tmp_path / "i.nii.gz", "--support-labels", tmp_path / "p.nii.gz"]
    argv += ["--out", tmp_path / "o.nii.gz", "--checkpoint", path, "--quiet"]
    assert segment([str(a) for a in argv]) == 2
    assert "stride" in one_error_line(capsys)


# ----------------------------------------------------------------------- evaluate (4)
@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    from napari_tpm.io import write_volume
    from napari_tpm.phantom import make_phantom

    root = tmp_path_factory.mktemp("eval")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    ph = make_phantom(shape=(8, 40, 40), seed=4)
    write_volume(root / "images" / "c.nii.gz", ph.image, spacing=ph.spacing)
    write_volume(root / "labels" / "c.nii.gz", ph.labels, spacing=ph.spacing)
    return root


def _evaluate(labelled: Path, out: Path, classes: str) -> int:
    from napari_tpm.evaluate.__main__ import main as evaluate

    argv = ["generic", "--images", str(labelled / "images"), "--labels", str(labelled / "labels")]
    argv += ["--classes", classes, "--checkpoint", "filterbank", "--out", str(out), "--quiet"]
    return evaluate([*argv, "--prototypes", "1"])


def test_evaluate_with_only_absent_classes_exits_2(labelled, tmp_path, capsys):
    assert _evaluate(labelled, tmp_path / "ev", "ghost=99") == 2
    assert "ghost=99" in one_error_line(capsys)
    assert not (tmp_path / "ev" / "results.md").exists()


def test_evaluate_out_is_checked_before_the_evaluation(labelled, tmp_path, capsys, monkeypatch):
    import napari_tpm.evaluate.runner as runner

    monkeypatch.setattr(runner, "run_generic", lambda *a, **k: pytest.fail("evaluated first"))
    target = tmp_path / "report"
    target.write_text("keep me")
    assert _evaluate(labelled, target, "liver=5") == 2
    assert "is a file" in one_error_line(capsys)
    assert target.read_text() == "keep me"
