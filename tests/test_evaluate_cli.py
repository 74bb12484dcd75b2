"""`python -m napari_tpm.evaluate`: generic and paper modes end to end on phantom files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_tpm.evaluate.__main__ import main
from napari_tpm.evaluate.datasets import CHAOS
from napari_tpm.evaluate.protocols import paper_folds
from napari_tpm.io import Volume, write_volume
from napari_tpm.phantom import make_phantom, make_phantom_dataset

SHAPE = (6, 48, 48)
SPACING = (10.0, 5.0, 5.0)
PNG = b"\x89PNG\r\n\x1a\n"


def _write(path, array, spacing):
    write_volume(path, array, Volume(np.asarray(array), tuple(spacing)))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("generic")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i, ph in enumerate(make_phantom_dataset(2, seed=40, shape=SHAPE, spacing=SPACING)):
        _write(root / "images" / f"case{i}.nii.gz", ph.image, ph.spacing)
        _write(root / "labels" / f"case{i}.nii.gz", ph.labels, ph.spacing)
    return root


def test_generic_cli_writes_every_output(folders, tmp_path):
    out = tmp_path / "eval"
    code = main(
        [
            "generic",
            "--images", str(folders / "images"),
            "--labels", str(folders / "labels"),
            "--classes", "liver=5,spleen=1",
            "--checkpoint", "filterbank",
            "--prototypes", "1",
            "--multiclass",
            "--device", "cpu",
            "--out", str(out),
            "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    text = (out / "results.md").read_text()
    for needle in ("Table 1", "Table 2", "| Liver |", "Spleen", "TPM, 1 prototype, OCP", "n/a"):
        assert needle in text, needle
    assert "TPM, 5 prototypes" not in text
    csv_lines = (out / "tables.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("table,row,model")
    assert len(csv_lines) == 1 + 4 * 3 + 5 * 3  # Table 1: 4 rows, Table 2: 5 rows; 3 columns
    data = json.loads((out / "per_volume.json").read_text())
    binary = [r for r in data["records"] if r["kind"] == "binary"]
    assert {(r["query"], r["organ"]) for r in binary} == {
        (f"case{i}", o) for i in range(2) for o in ("liver", "spleen")
    }
    assert all(r["same_volume"] for r in binary)
    assert (out / "dice_vs_prior.png").read_bytes()[:8] == PNG


def test_generic_cli_pairs_by_pattern_with_other_volume_support(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i, ph in enumerate(make_phantom_dataset(2, seed=60, shape=SHAPE, spacing=SPACING)):
        _write(data / f"s{i}_ct.nii.gz", ph.image, ph.spacing)
        _write(data / f"s{i}_seg.nii.gz", ph.labels, ph.spacing)
    out = tmp_path / "eval"
    code = main(
        [
            "generic", "--images", str(data), "--labels", str(data),
            "--image-pattern", "*_ct.nii.gz", "--label-pattern", "*_seg.nii.gz",
            "--classes", "liver=5", "--checkpoint", "filterbank", "--prototypes", "1",
            "--support", "other", "--protocol", "EP1", "--device", "cpu",
            "--out", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    recs = json.loads((out / "per_volume.json").read_text())["records"]
    assert {(r["query"], r["support"]) for r in recs} == {("s0", "s1"), ("s1", "s0")}
    assert all(r["protocol"] == "EP1" and len(r["support_slices"]) == 3 for r in recs)


def test_product_option_adds_the_product_rows_with_those_options(folders, tmp_path):
    out = tmp_path / "eval"
    argv = ["generic", "--images", str(folders / "images"), "--labels", str(folders / "labels")]
    argv += ["--classes", "liver=5", "--checkpoint", "filterbank", "--prototypes", "1"]
    argv += ["--support", "other", "--device", "cpu", "--out", str(out), "--quiet"]
    assert main([*argv, "--product-option", "connected=false"]) == 0  # implies --product
    text = (out / "results.md").read_text()
    assert "- product_options: connected=false" in text
    assert "| TPM, 1 prototype, the product (auto prior, post-processing) |" in text
    recs = json.loads((out / "per_volume.json").read_text())["records"]
    assert all(0.0 <= r["methods"]["product"]["dice"] <= 1.0 for r in recs)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--classes", "liver=5", "--product-option", "colour=red"], "unknown option"),
        (["--classes", "liver=5", "--product-option", "refine"], "--product-option takes KEY"),
        (["--classes", "liver"], "name=value"),
        (["--classes", "liver=5", "--labels", "/nonexistent/labels"], "does not exist"),
        (["--classes", "liver=5", "--prototypes", "0"], "at least 1"),
    ],
)
def test_generic_cli_bad_input_exits_2(folders, tmp_path, capsys, extra, message):
    argv = ["generic", "--images", str(folders / "images"), "--labels", str(folders / "labels")]
    argv += ["--checkpoint", "filterbank", "--out", str(tmp_path), "--quiet"]
    code = main([*argv, *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.md").exists()


# --------------------------------------------------------------------------- paper mode
CHAOS_IDS = [1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39]
TO_CHAOS = {5: 1, 2: 2, 3: 3, 1: 4}  # phantom (TotalSegmentator) values -> CHAOS values


@pytest.fixture(scope="module")
def chaos_like(tmp_path_factory):
    """20 tiny phantoms laid out as the prepared CHAOS folder, with CHAOS label values."""
    root = tmp_path_factory.mktemp("chaos")
    folder = root / CHAOS.subfolder
    folder.mkdir()
    for k, pid in enumerate(CHAOS_IDS):
        ph = make_phantom(SHAPE, seed=100 + k, spacing=SPACING, modality="mr")
        labels = np.zeros_like(ph.labels)
        for src, dst in TO_CHAOS.items():
            labels[ph.labels == src] = dst
        _write(folder / f"image_{pid}.nii.gz", ph.image, ph.spacing)
        _write(folder / f"label_{pid}.nii.gz", labels, ph.spacing)
    return root


def test_paper_cli_runs_the_wrapping_chaos_fold(chaos_like, tmp_path):
    out = tmp_path / "paper"
    code = main(
        [
            "paper", "--dataset", "chaos", "--data", str(chaos_like),
            "--checkpoints", "filterbank", "--folds", "4", "--prototypes", "1",
            "--no-multiclass", "--device", "cpu", "--out", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    data = json.loads((out / "per_volume.json").read_text())
    fold = paper_folds(CHAOS)[4]
    names = [f"chaos_{i}" for i in CHAOS_IDS]
    binary = [r for r in data["records"] if r["kind"] == "binary"]
    assert {r["support"] for r in binary} == {names[fold.support]} == {"chaos_39"}
    assert {r["query"] for r in binary} == {names[i] for i in fold.queries}
    assert {r["organ"] for r in binary} == set(CHAOS.classes)
    assert not [r for r in data["records"] if r["kind"] == "multiclass"]
    text = (out / "results.md").read_text()
    assert "ABD-MRI" in text and "ADNet row of Table 1 is omitted" in text
    assert "Table 2" not in text


def test_paper_cli_checks_checkpoint_files_first(chaos_like, tmp_path, capsys):
    code = main(
        [
            "paper", "--dataset", "chaos", "--data", str(chaos_like),
            "--checkpoints", str(tmp_path / "run{run}/fold{fold}.pt"), "--quiet",
            "--out", str(tmp_path / "o"),
        ]
    )  # fmt: skip
    assert code == 2
    assert "fold0.pt" in capsys.readouterr().err
