"""One registry: load_model, the segment CLI, evaluate and the widget agree on the default."""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_tpm.zoo as zoo
from napari_tpm import segment
from napari_tpm.checkpoints import filterbank_model, load_model, save_model
from napari_tpm.evaluate.__main__ import main as evaluate_main
from napari_tpm.io import Volume, write_volume
from napari_tpm.phantom import make_phantom

SHAPE = (6, 48, 48)
SPACING = (10.0, 5.0, 5.0)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A zoo whose CT default ("ctmodel", a file) differs from its MR default (filter bank)."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    model = filterbank_model()
    model.name = "ctmodel"
    save_model(model, folder / "ctmodel.pt")
    (folder / "default.json").write_text(json.dumps({"ct": "ctmodel", "mr": "filterbank"}))
    monkeypatch.setattr(zoo, "model_dir", lambda: folder)
    return folder


def test_default_per_modality_and_list_order(registry):
    assert zoo.default_model("ct") == "ctmodel"
    assert zoo.default_model("mr") == "filterbank"
    assert zoo.default_model() == "filterbank"  # CT and MR disagree: training-free
    assert zoo.list_models() == ["filterbank", "ctmodel"]
    (registry / "default.json").write_text('{"ct": "ctmodel", "mr": "ctmodel"}')
    assert zoo.default_model() == "ctmodel" and zoo.list_models()[0] == "ctmodel"
    assert load_model("default").name == "ctmodel"
    (registry / "default.json").write_text('{"ct": 3}')
    with pytest.raises(ValueError, match="must be a model name"):
        zoo.default_model("ct")


def test_without_a_file_the_filter_bank_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "model_dir", lambda: tmp_path)
    assert zoo.default_model("ct") == zoo.default_model("mr") == "filterbank"
    assert zoo.list_models() == ["filterbank"]


def _phantom_files(folder, modality):
    ph = make_phantom(shape=SHAPE, spacing=SPACING, seed=3, modality=modality)
    like = Volume(np.asarray(ph.image), SPACING)
    z = int(np.argmax((ph.labels == 5).sum(axis=(1, 2))))
    paint = np.zeros(ph.labels.shape, np.uint8)
    paint[z][ph.labels[z] == 5] = 5
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    write_volume(folder / "images" / "case.nii.gz", ph.image, like)
    write_volume(folder / "labels" / "case.nii.gz", ph.labels.astype(np.uint8), like)
    write_volume(folder / "paint.nii.gz", paint, like)
    return folder


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_cli_and_evaluate_resolve_the_registry_default(registry, tmp_path, modality):
    data = _phantom_files(tmp_path / "data", modality)
    expected = zoo.default_model(modality)
    args = segment.build_parser().parse_args(
        [
            str(data / "images" / "case.nii.gz"),
            "--support-labels", str(data / "paint.nii.gz"),
            "--out", str(tmp_path / "out.nii.gz"),
            "--device", "cpu", "--quiet",
        ]
    )  # fmt: skip
    assert args.checkpoint == "default" and args.modality == "auto"
    assert segment.run(args)["model"] == expected  # modality guessed from the image

    out = tmp_path / "eval"
    code = evaluate_main(
        [
            "generic", "--images", str(data / "images"), "--labels", str(data / "labels"),
            "--classes", "liver=5", "--modality", modality, "--prototypes", "1",
            "--device", "cpu", "--out", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    records = json.loads((out / "per_volume.json").read_text())["records"]
    assert records and {r["checkpoint"] for r in records} == {expected}
