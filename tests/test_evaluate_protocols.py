"""Evaluation protocol pieces that need no model: folds, slice choices, pairing, metrics, tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_tpm.evaluate.datasets import (
    CHAOS,
    SYNAPSE,
    find_paper_cases,
    pair_cases,
    parse_classes,
)
from napari_tpm.evaluate.metrics import default_prior_grid, dice, dice_curve, prior_thresholds
from napari_tpm.evaluate.protocols import (
    checkpoint_path,
    ep1_query_chunks,
    ep1_support_slices,
    labelled_slices,
    middle_labelled_slice,
    most_labels_slice,
    paint_slice,
    paper_folds,
    round_robin_support,
    training_volumes,
)
from napari_tpm.evaluate.tables import MEAN, RowSpec, build_table, markdown, to_csv


# ------------------------------------------------------------------------------ folds
def test_chaos_folds_overlap_by_exactly_one_volume_by_design():
    folds = [set(f) for f in CHAOS.folds]
    assert all(len(f) == 5 for f in folds)
    assert set().union(*folds) == set(range(CHAOS.n_volumes))
    for i in range(5):
        for j in range(i + 1, 5):
            shared = folds[i] & folds[j]
            neighbours = j == i + 1 or (i, j) == (0, 4)
            assert len(shared) == (1 if neighbours else 0), (i, j, shared)
    assert folds[0] & folds[4] == {0}
    assert folds[3] & folds[4] == {16}


def test_synapse_folds_are_disjoint_and_cover_every_volume():
    folds = [set(f) for f in SYNAPSE.folds]
    assert sum(len(f) for f in folds) == SYNAPSE.n_volumes == len(set().union(*folds))


@pytest.mark.parametrize("spec", [CHAOS, SYNAPSE], ids=["chaos", "synapse"])
def test_support_is_last_sorted_volume_and_never_a_query(spec):
    for fold, members in zip(paper_folds(spec), spec.folds):
        assert fold.support == max(members)
        assert set(fold.queries) == set(members) - {fold.support}
        assert fold.support not in fold.queries
        train = training_volumes(spec, fold.index)
        assert not set(train) & set(members)
        assert len(train) + len(members) == spec.n_volumes
    # every volume is a query or a support somewhere
    seen = {v for f in paper_folds(spec) for v in f.volumes}
    assert seen == set(range(spec.n_volumes))


def test_chaos_wrapping_fold_uses_volume_19_as_support():
    fold = paper_folds(CHAOS)[4]
    assert fold.support == 19
    assert fold.queries == (0, 16, 17, 18)


# ----------------------------------------------------------------------- slice choices
def _mask_on(slices, n=30):
    m = np.zeros((n, 4, 4), bool)
    m[list(slices), 1:3, 1:3] = True
    return m


@pytest.mark.parametrize("lo,hi", [(0, 0), (3, 9), (5, 20), (10, 11)])
def test_middle_labelled_slice_is_int_half_of_count(lo, hi):
    m = _mask_on(range(lo, hi + 1))
    count = hi - lo + 1
    assert middle_labelled_slice(m) == lo + int(0.5 * count)


def test_middle_labelled_slice_skips_gaps():
    m = _mask_on([2, 3, 10, 11, 12])
    assert middle_labelled_slice(m) == 10  # labelled[int(2.5)] = labelled[2]


def test_ep1_support_slices_at_sixths():
    m = _mask_on(range(10, 22))  # 12 labelled slices
    assert ep1_support_slices(m) == [10 + 2, 10 + 6, 10 + 10]


def test_ep1_query_chunks_partition_the_labelled_slices():
    m = _mask_on([1, 2, 3, 7, 8, 9, 10, 15])
    chunks = ep1_query_chunks(m)
    assert len(chunks) == 3
    joined = np.concatenate(chunks)
    assert list(joined) == list(labelled_slices(m))
    sizes = [len(c) for c in chunks]
    assert max(sizes) - min(sizes) <= 1


def test_slice_choice_refuses_absent_structure():
    with pytest.raises(ValueError, match="absent"):
        middle_labelled_slice(np.zeros((5, 3, 3), bool))


def test_most_labels_slice_breaks_ties_only_among_the_best():
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[1, 0, 0], labels[1, 5, 5] = 1, 2  # two labels
    labels[4, 0, 0], labels[4, 5, 5] = 3, 2  # two labels
    labels[2, 0, 0] = 1  # one label
    labels[3, 0, 0] = 9  # not a class
    picks = {most_labels_slice(labels, [1, 2, 3], np.random.default_rng(s)) for s in range(40)}
    assert picks == {1, 4}


def test_paint_slice_keeps_values_on_one_slice():
    labels = np.zeros((5, 6, 6), np.uint8)
    labels[:, 1:3, 1:3] = 6
    labels[:, 4, 4] = 1
    labels[:, 0, 0] = 7
    paint = paint_slice(labels, 2, [6, 1])
    assert set(np.unique(paint)) == {0, 1, 6}
    assert labelled_slices(paint > 0).tolist() == [2]
    assert (paint[2] == np.where(np.isin(labels[2], [1, 6]), labels[2], 0)).all()


def test_round_robin_skips_volumes_without_the_structure():
    assert round_robin_support(4, 1) == 2
    assert round_robin_support(4, 3) == 0
    assert round_robin_support(4, 1, [True, True, False, False]) == 0
    assert round_robin_support(3, 0, [True, False, False]) is None


def test_checkpoint_pattern_placeholders():
    assert checkpoint_path("r{run}/f{fold}/{group}.pt", fold=3, run=2, group="kidneys") == (
        "r2/f3/kidneys.pt"
    )
    assert checkpoint_path("filterbank", fold=1) == "filterbank"
    with pytest.raises(ValueError, match="placeholder"):
        checkpoint_path("runs/{fld}/m.pt", fold=0)


# ----------------------------------------------------------------------- datasets
def test_parse_classes():
    assert parse_classes("liver=6, spleen=1") == {"liver": 6, "spleen": 1}
    for bad in ("liver", "liver=x", "liver=0", "a=1,a=2", "a=1,b=1", ""):
        with pytest.raises(ValueError):
            parse_classes(bad)


def test_pair_cases_by_pattern_key(tmp_path):
    for name in ("amos_1_slab_ct", "amos_2_slab_ct", "amos_1_slab_label", "amos_2_slab_label"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    cases = pair_cases(
        [tmp_path], [tmp_path], image_pattern="*_ct.nii.gz", label_pattern="*_label.nii.gz"
    )
    assert [c.name for c in cases] == ["amos_1_slab", "amos_2_slab"]
    assert [c.label_path.name for c in cases] == [
        "amos_1_slab_label.nii.gz",
        "amos_2_slab_label.nii.gz",
    ]
    with pytest.raises(ValueError, match="images but"):
        pair_cases([tmp_path], [tmp_path], image_pattern="*_ct.nii.gz", label_pattern="*1*_label*")


def test_find_paper_cases_sorts_numerically_and_checks_count(tmp_path):
    folder = tmp_path / CHAOS.subfolder
    folder.mkdir()
    ids = [1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39]
    for i in ids:
        (folder / f"image_{i}.nii.gz").write_bytes(b"")
        (folder / f"label_{i}.nii.gz").write_bytes(b"")
    cases = find_paper_cases(CHAOS, tmp_path)
    assert [c.name for c in cases] == [f"chaos_{i}" for i in ids]
    (folder / "image_39.nii.gz").unlink()
    with pytest.raises(ValueError, match="needs 20"):
        find_paper_cases(CHAOS, tmp_path)


# ------------------------------------------------------------------------ metrics
def test_dice_values():
    a = np.zeros((2, 3, 3), bool)
    b = a.copy()
    assert math.isnan(dice(a, b))
    a[0, 0, 0] = b[0, 0, 0] = True
    b[1, 1, 1] = True
    assert dice(a, b) == pytest.approx(2 / 3)


def test_dice_curve_matches_direct_thresholds():
    rng = np.random.default_rng(0)
    truth = rng.random((4, 10, 10)) < 0.2
    scores = (rng.normal(size=truth.shape) + 2.5 * truth).astype(np.float32)
    grid = default_prior_grid(15)
    curve = dice_curve(scores, truth, grid)
    direct = [dice(scores > t, truth) for t in prior_thresholds(grid)]
    np.testing.assert_allclose(curve, direct)


# ------------------------------------------------------------------------- tables
def _record(run, query, organ, k, method_dice, model="TPM"):
    methods = {
        m: {"dice": d, "available": d is not None, "prior": 0.5} for m, d in method_dice.items()
    }
    return {
        "kind": "binary",
        "model": model,
        "run": run,
        "fold": 0,
        "query": query,
        "support": "s",
        "organ": organ,
        "prototypes": k,
        "methods": methods,
    }


def test_table_aggregates_over_runs_and_marks_missing_estimators():
    rng = np.random.default_rng(1)
    values = rng.uniform(0.2, 0.9, size=(2, 3, 2))  # run, query, organ
    records = [
        _record(
            r + 1,
            f"q{q}",
            organ,
            1,
            {"CE-T": values[r, q, o], "AvgEst": None, "OCP": values[r, q, o] + 0.05},
        )
        for r in range(2)
        for q in range(3)
        for o, organ in enumerate(["liver", "spleen"])
    ]
    rows = [RowSpec("ce", "TPM", "CE-T", 1), RowSpec("avg", "TPM", "AvgEst", 1)]
    table = build_table(records, rows, ["liver", "spleen"], kind="binary", title="t")
    assert table.spread == "runs"
    run_means = values.mean(axis=1)  # (run, organ)
    cell = table.cells[("ce", "liver")]
    assert cell.mean == pytest.approx(run_means[:, 0].mean())
    assert cell.std == pytest.approx(run_means[:, 0].std())
    mean = table.cells[("ce", MEAN)]
    assert mean.mean == pytest.approx(run_means.mean())
    assert mean.std == pytest.approx(run_means.mean(axis=1).std())
    assert table.cells[("avg", "spleen")].text() == "n/a"
    text = markdown(table)
    assert "| ce |" in text and "| avg |" in text and "Liver" in text and "Mean" in text
    csv_text = to_csv([table])
    assert csv_text.count("\n") == 1 + 2 * 3  # header + rows x columns


def test_table_with_one_run_spreads_over_volumes():
    records = [
        _record(1, "q1", "liver", 1, {"CE-T": 0.6}),
        _record(1, "q2", "liver", 1, {"CE-T": 0.8}),
    ]
    table = build_table(
        records, [RowSpec("ce", "TPM", "CE-T", 1)], ["liver"], kind="binary", title="t"
    )
    assert table.spread == "volumes"
    assert table.cells[("ce", "liver")].mean == pytest.approx(0.7)
    assert table.cells[("ce", "liver")].std == pytest.approx(0.1)
