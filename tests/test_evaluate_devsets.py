"""The development subsets' folds (sabs_ct, chaos_t2spir) and the paper CLI reading them."""

from __future__ import annotations

import pytest

from napari_tpm.evaluate.__main__ import build_parser
from napari_tpm.evaluate.datasets import CHAOS_DEV, DATASETS, SABS_DEV, find_paper_cases
from napari_tpm.evaluate.protocols import paper_folds, training_volumes

SABS_IDS = list(range(15, 30))
CHAOS_IDS = [21, 22, 31, 32, 33, 34, 36, 37, 38, 39]


@pytest.mark.parametrize(
    ("spec", "ids", "holdout", "support"),
    [
        (SABS_DEV, SABS_IDS, list(range(22, 30)), 29),
        (CHAOS_DEV, CHAOS_IDS, [34, 36, 37, 38, 39], 39),
    ],
)
def test_fold_0_is_the_held_out_half_and_fold_1_the_training_half(spec, ids, holdout, support):
    folds = paper_folds(spec)
    assert len(folds) == 2
    zero, one = folds
    assert sorted(ids[i] for i in zero.volumes) == holdout
    assert ids[zero.support] == support  # the fold's last volume, as in the paper
    assert support not in [ids[i] for i in zero.queries]
    trained_on = [ids[i] for i in training_volumes(spec, 0)]
    assert trained_on == [i for i in ids if i not in holdout]
    assert sorted(ids[i] for i in one.volumes) == trained_on
    assert set(zero.volumes).isdisjoint(one.volumes)  # a partition: nothing tested twice
    assert set(zero.volumes) | set(one.volumes) == set(range(spec.n_volumes))
    assert spec.classes == {"liver": 1, "lk": 3, "rk": 2, "spleen": 4}


def test_missing_volume_is_reported_not_silently_shifting_folds(tmp_path):
    folder = tmp_path / "sabs_ct"
    folder.mkdir()
    for i in SABS_IDS:
        (folder / f"sabs_{i}_ct.nii.gz").write_bytes(b"")
        (folder / f"sabs_{i}_label.nii.gz").write_bytes(b"")
    assert len(find_paper_cases(SABS_DEV, tmp_path)) == 15
    (folder / "sabs_20_label.nii.gz").unlink()
    with pytest.raises(ValueError, match="sabs_20_label"):
        find_paper_cases(SABS_DEV, tmp_path)
    (folder / "sabs_20_ct.nii.gz").unlink()
    with pytest.raises(ValueError, match="needs 15"):
        find_paper_cases(SABS_DEV, tmp_path)


def test_paper_cli_accepts_every_dataset():
    parser = build_parser()
    for name in DATASETS:
        args = parser.parse_args(
            ["paper", "--dataset", name, "--data", "d", "--checkpoints", "filterbank"]
        )
        assert args.dataset == name
