"""Training on the paper's development sets as stored in ../shared/data, on tiny fake copies.

Both layouts: ``sabs_NN_ct`` / ``sabs_NN_label`` (CT with HU already clipped to [-125, 275])
and ``chaos_t2_NN_mr`` / ``chaos_t2_NN_label`` (MR with row 0 posterior, direction
diag(1, -1, 1)). Labels must never reach training except to drop slices in setting 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_tpm.checkpoints import load_model
from napari_tpm.evaluate.datasets import CHAOS_DEV, SABS_DEV, find_paper_cases
from napari_tpm.io import write_volume
from napari_tpm.phantom import make_phantom_dataset
from napari_tpm.preprocess import guess_modality
from napari_tpm.train.__main__ import main
from napari_tpm.train.volumes import find_volumes, label_path_for, load_training_volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SABS_IDS = list(range(15, 30))
CHAOS_IDS = [21, 22, 31, 32, 33, 34, 36, 37, 38, 39]
MR_DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def dev_root(tmp_path_factory):
    """``root/sabs_ct`` and ``root/chaos_t2spir`` with the shared folders' names and layouts."""
    root = tmp_path_factory.mktemp("shared_data")
    sabs, chaos = root / "sabs_ct", root / "chaos_t2spir"
    sabs.mkdir()
    chaos.mkdir()
    ct = make_phantom_dataset(3, shape=(8, 32, 32), seed=7, modality="ct")
    mr = make_phantom_dataset(3, shape=(8, 32, 32), seed=17, modality="mr")
    for n, i in enumerate(SABS_IDS):
        p = ct[n % len(ct)]
        image = np.clip(p.image, -125, 275).astype(np.int16)  # the literature's clipped HU
        write_volume(sabs / f"sabs_{i}_ct.nii.gz", image, spacing=p.spacing)
        write_volume(sabs / f"sabs_{i}_label.nii.gz", p.labels.astype(np.uint8), spacing=p.spacing)
    for n, i in enumerate(CHAOS_IDS):
        p = mr[n % len(mr)]
        image = (p.image - p.image.min()).astype(np.float32)
        write_volume(
            chaos / f"chaos_t2_{i}_mr.nii.gz", image, spacing=p.spacing, direction=MR_DIRECTION
        )
        write_volume(
            chaos / f"chaos_t2_{i}_label.nii.gz",
            p.labels.astype(np.uint8),
            spacing=p.spacing,
            direction=MR_DIRECTION,
        )
    return root


def test_both_layouts_pair_images_with_labels(dev_root):
    sabs = find_paper_cases(SABS_DEV, dev_root)  # the parent folder is enough
    chaos = find_paper_cases(CHAOS_DEV, dev_root / "chaos_t2spir")
    assert [c.name for c in sabs] == [f"sabs_ct_{i}" for i in SABS_IDS]
    assert [c.name for c in chaos] == [f"chaos_t2spir_{i}" for i in CHAOS_IDS]
    assert all(c.label_path.name.endswith("_label.nii.gz") for c in sabs + chaos)
    loaded = chaos[0].load()
    assert loaded.image.shape == loaded.labels.shape
    assert np.issubdtype(loaded.labels.dtype, np.integer) and loaded.labels.any()


def test_training_finds_images_only_and_their_label_maps(dev_root):
    found = find_volumes(dev_root)
    assert len(found) == len(SABS_IDS) + len(CHAOS_IDS)
    assert not any("label" in p.name for p in found)
    for p in found:
        label = label_path_for(p)
        assert label is not None and label.name.endswith("_label.nii.gz"), p.name


def test_clipped_hu_is_ct_with_the_papers_supervoxel_size(dev_root, tmp_path):
    ct = load_training_volume(
        dev_root / "sabs_ct" / "sabs_15_ct.nii.gz", size=32, cache_dir=tmp_path
    )
    mr = load_training_volume(
        dev_root / "chaos_t2spir" / "chaos_t2_21_mr.nii.gz", size=32, cache_dir=tmp_path
    )
    assert (ct.modality, mr.modality) == ("ct", "mr")
    # clipped CT: nothing below -500 HU, yet the pile at -125 says CT
    image = np.full((4, 16, 16), -125, np.int16)
    image[:, 4:12, 4:12] = 40
    assert guess_modality(image) == "ct"
    assert guess_modality(image.astype(np.float32) + 125) == "mr"
    cached = sorted(p.name for p in tmp_path.iterdir())
    assert any("2000" in n for n in cached) and any("5000" in n for n in cached), cached


def _common(out):
    return [
        "--size", "32", "--sv-min-size", "20", "--min-support-px", "10",
        "--device", "cpu", "--analysis-episodes", "0", "--quiet", "--threads", "1",
        "--out", str(out),
    ]  # fmt: skip


def test_two_step_hybrid_training_leaves_out_the_holdout_fold(dev_root, tmp_path):
    out = tmp_path / "run"
    argv = [str(dev_root / "sabs_ct"), "--holdout", "sabs_ct:0", "--encoder", "hybrid"]
    assert main([*argv, "--steps", "2", "--amp", *_common(out)]) == 0
    model = load_model(out / "model.pt")
    card = model.card["training"]
    assert card["steps"] == 2
    used = sorted(int(Path(p).name.split("_")[1]) for p in card["data"])
    assert used == list(range(15, 22))  # fold 0 (sabs 22-29) is never trained on
    assert model.encoder.config()["name"] == "hybrid"


def test_setting_2_on_the_mr_layout_reads_the_label_beside_each_image(dev_root, tmp_path, capsys):
    out = tmp_path / "run2"
    argv = [str(dev_root / "chaos_t2spir"), "--holdout", "chaos_t2spir:0", "--encoder", "hybrid"]
    argv += ["--exclude-label-values", "2,3", "--steps", "1", *_common(out)]
    assert main(argv) == 0, capsys.readouterr().err
    card = load_model(out / "model.pt").card["training"]
    assert len(card["data"]) == 5


def test_robust_normalisation_is_trained_with_and_stored_in_the_model(dev_root, tmp_path):
    """The model must carry the intensity map it was trained with, so the session uses it."""
    path = dev_root / "sabs_ct" / "sabs_16_ct.nii.gz"
    z = load_training_volume(path, size=32, cache_dir=tmp_path)
    r = load_training_volume(path, size=32, cache_dir=tmp_path, normalisation="robust")
    assert not np.allclose(z.image, r.image)
    assert len(list(tmp_path.glob("sabs_16_ct.*.npz"))) == 2  # one cache entry per map

    out = tmp_path / "run"
    argv = [str(path), "--encoder", "hybrid", "--normalisation", "robust", "--steps", "1"]
    assert main([*argv, *_common(out)]) == 0
    model = load_model(out / "model.pt")
    assert model.normalisation == "robust"
    assert model.card["training"]["config"]["normalisation"] == "robust"
