"""The accuracy benchmark's cross-patient pairs (benchmarks/accuracy_cases.py): paths only, no
data is read, so these run everywhere."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import accuracy_cases as ac
from bench_accuracy import ENDS, Job, build_jobs, ends_modes, parse_args


def _case(name: str) -> ac.CaseSpec:
    return next(c for c in ac.all_cases() if c.name == name)


def test_every_partner_is_the_rest_of_the_group_starting_with_the_next():
    case = _case("sabs_21")  # last of the BTCV tuning group: its next wraps round
    every = ac.cross_partners(case, every=True)
    names = [c.name for c in every]
    assert names[0] == ac.cross_partner(case).name == "sabs_15"
    assert sorted(names) == sorted(f"sabs_{i}" for i in ac.SABS_TUNE if i != 21)
    assert all(c.set == case.set and c.split == case.split for c in every)
    assert ac.cross_partners(case) == every[:1]


def test_a_volume_alone_in_its_group_has_no_partner():
    case = _case("ts_mr_3mm")
    assert ac.cross_partners(case, every=True) == []
    assert ac.cross_partner(case) is None


def test_only_the_extra_partners_change_the_job_key():
    paint = np.zeros((2, 4, 4), np.uint8)
    nxt = Job("cross", ("liver",), paint, "sabs_16", [1])
    extra = Job("cross", ("liver",), paint, "sabs_17", [1], extra_partner=True)
    assert nxt.key == "cross|liver"  # the key cached forests were stored under
    assert extra.key == "cross|liver|sabs_17"


def test_ends_at_other_fractions_names_their_modes_and_paints_there():
    assert ends_modes(list(ENDS.values())) == ENDS  # the default keeps its mode names
    modes = ends_modes([0.1, 0.25, 0.85])
    assert modes == {"same-at10": 0.1, "same-at25": 0.25, "same-hi": 0.85}
    labels = np.zeros((21, 4, 4), np.uint8)
    labels[0:21, 1:3, 1:3] = 1  # the liver on slices 0-20
    jobs = build_jobs(_case("sabs_15"), labels, ["ends"], ["liver"], [1], ends=modes)
    assert {j.mode: j.slices for j in jobs} == {"same-at10": [2], "same-at25": [5], "same-hi": [17]}
    with pytest.raises(SystemExit):
        parse_args(["--ends-at", "1.5"])


def test_rough_paint_misses_the_outline_by_the_set_distance():
    mask = np.zeros((60, 80), bool)
    mask[15:45, 20:60] = True
    spacing = (1.25, 1.25)  # ROUGH_MM 2.5 = two pixels
    grown = ac.rough_paint(mask, spacing, "grown")
    shrunk = ac.rough_paint(mask, spacing, "shrunk")
    assert grown[mask].all() and grown[13, 20:60].all() and grown[15:45, 18].all()
    assert not grown[12].any() and not grown[:, 17].any()  # corners are rounded: Euclidean
    assert not shrunk[~mask].any() and shrunk[17:43, 22:58].all() and not shrunk[16].any()
    jitter = [ac.rough_paint(mask, spacing, "jitter", seed=s) for s in range(3)]
    assert all(j[17:43, 22:58].all() and not j[:12].any() for j in jitter)  # within 2.5 mm
    assert any((j != mask).any() for j in jitter)
    assert not np.array_equal(jitter[0], jitter[1])  # the seed moves it elsewhere
    tiny = np.zeros((20, 20), bool)
    tiny[9:12, 9:12] = True
    np.testing.assert_array_equal(ac.rough_paint(tiny, spacing, "shrunk"), tiny)
    with pytest.raises(ValueError, match="kind"):
        ac.rough_paint(mask, spacing, "sloppy")


@pytest.mark.parametrize(
    ("mode", "names", "tpm_only"),
    [
        ("rough", ["same-grown", "same-shrunk", "same-jitter"], False),
        ("partial", ["same-stroke", "same-line", "same-dab"], True),
    ],
)
def test_rough_and_partial_modes_paint_the_middle_slice_three_ways(mode, names, tpm_only):
    labels = np.zeros((9, 60, 60), np.uint8)
    labels[2:7, 10:50, 10:50] = 1  # the liver on slices 2-6
    jobs = build_jobs(_case("sabs_15"), labels, [mode], ["liver"], [1], spacing_hw=(1.0, 1.0))
    assert [j.mode for j in jobs] == names
    assert all(j.slices == [4] and j.paint[[0, 1, 2, 3, 5, 6, 7, 8]].max() == 0 for j in jobs)
    assert all(j.tpm_only == tpm_only for j in jobs)  # the forest's background is the rest
    if mode == "rough":
        assert jobs[0].paint[4].sum() > (labels[4] == 1).sum() > jobs[1].paint[4].sum()
    else:
        assert all(0 < j.paint[4].sum() < 0.25 * (labels[4] == 1).sum() for j in jobs)


def test_near_mode_paints_the_slices_next_to_the_middle_one():
    labels = np.zeros((12, 8, 8), np.uint8)
    labels[2:7, 2:6, 2:6] = 1  # the liver on slices 2-6: middle 4
    labels[8:11, 2:6, 2:6] = 2  # the right kidney on slices 8-10: middle 9, only 8-10 shown
    jobs = build_jobs(_case("sabs_15"), labels, ["near"], ["liver", "rkidney"], [1])
    got = {(j.mode, j.organs[0]): j.slices for j in jobs}
    assert got == {
        ("same-m2", "liver"): [2],
        ("same-m1", "liver"): [3],
        ("same-p1", "liver"): [5],
        ("same-p2", "liver"): [6],
        ("same-m1", "rkidney"): [8],
        ("same-p1", "rkidney"): [10],
    }  # slices 7 and 11 do not show the kidney: those paints are left out
    for job in jobs:
        z = job.slices[0]
        value = 1 if job.organs[0] == "liver" else 2
        np.testing.assert_array_equal(job.paint[z] == 1, labels[z] == value)
        assert job.paint.sum() == (labels[z] == value).sum()


def test_axes_mode_paints_the_middle_coronal_and_sagittal_slices():
    labels = np.zeros((6, 10, 12), np.uint8)
    labels[1:5, 2:5, 3:10] = 1  # the liver: rows 2-4 (middle 3), columns 3-9 (middle 6)
    jobs = build_jobs(_case("sabs_15"), labels, ["axes"], ["liver"], [1])
    got = {j.mode: (j.axis, j.slices) for j in jobs}
    assert got == {"same-cor": (1, [3]), "same-sag": (2, [6])}
    for job in jobs:
        want = np.zeros_like(labels)
        index = [slice(None)] * 3
        index[job.axis] = job.slices[0]
        want[tuple(index)] = labels[tuple(index)]
        np.testing.assert_array_equal(job.paint, want)


def test_the_forest_learns_and_predicts_along_the_painted_axis(monkeypatch):
    """A job painted on a coronal slice reaches the forest turned so that slice is axis 0,
    and its prediction comes back in the volume's own axes."""
    import accuracy_forest as af
    import bench_accuracy as ba

    seen = []

    def predict(image, jobs, cfg):
        seen.append(
            (
                image.shape,
                [(j.key, j.image.shape, np.flatnonzero(j.paint.any((1, 2)))) for j in jobs],
            )
        )
        return {j.key: (j.paint > 0).astype(np.uint8) for j in jobs}

    monkeypatch.setattr(af, "predict", predict)
    labels = np.zeros((6, 10, 12), np.uint8)
    labels[1:5, 2:5, 3:10] = 1
    jobs = build_jobs(_case("sabs_15"), labels, ["same", "axes"], ["liver"], [1])

    class Cache:
        def get(self, key):
            return False, None

        def put(self, key, value):
            pass

        def save(self):
            pass

    image = labels.astype(np.float32)
    results, _ = ba.run_forest(image, labels, _case("sabs_15"), jobs, Cache(), None)
    assert [s[0] for s in seen] == [(6, 10, 12), (10, 6, 12), (12, 6, 10)]
    assert seen[1][1][0][2].tolist() == [3] and seen[2][1][0][2].tolist() == [6]
    # each prediction was the painted slice itself, back in the volume's axes
    # (84 liver voxels: 28 on its middle coronal slice, 12 on its middle sagittal one)
    assert results[("same-cor|liver", "liver")] == pytest.approx(2 * 28 / (28 + 84))
    assert results[("same-sag|liver", "liver")] == pytest.approx(2 * 12 / (12 + 84))


def test_cross_slices_paint_the_partners_same_scan_slices(monkeypatch):
    labels = np.zeros((21, 4, 4), np.uint8)
    labels[0:21, 1:3, 1:3] = 1  # the liver on slices 0-20 of the query and of its partner
    partner = _case("sabs_16")
    monkeypatch.setattr(
        ac.CaseSpec, "load", lambda self, like=None: (labels.astype(np.float32), labels, (1.0,) * 3)
    )
    jobs = build_jobs(_case("sabs_15"), labels, ["cross"], ["liver"], [1], cross_counts=(1, 3))
    assert {j.mode: j.slices for j in jobs} == {
        "cross": ac.organ_slices(labels == 1, 1),
        "cross-3sl": ac.organ_slices(labels == 1, 3),
    }
    assert all(j.support == partner.name and j.image is not None for j in jobs)
    assert parse_args([]).cross_slices == [1]


def test_correction_strokes_the_largest_leak_or_outlines_the_worst_missed_slice():
    truth = np.zeros((8, 40, 40), bool)
    truth[1:7, 5:20, 5:20] = True  # 6 slices of 15 x 15
    spacing = (5.0, 1.0, 1.0)
    assert ac.correction(truth, truth, spacing) is None  # nothing to correct
    leak = truth.copy()
    leak[2:6, 20:36, 10:20] = True  # a neighbour against the organ, widest on slice 3
    leak[3, 20:38, 8:22] = True
    kind, z, stroke = ac.correction(leak, truth, spacing)
    assert (kind, z) == ("bg", 3) and stroke.any()
    assert not (stroke & ~leak[3]).any()  # along the leak itself ...
    assert stroke[:22].sum() == 0 and stroke[22:].any()  # FIX_CLEAR_MM off the organ
    short = truth.copy()
    short[4:7] = False
    short[4, 5:20, 5:8] = True  # slice 5 and 6 missing whole, 4 mostly
    kind, z, section = ac.correction(short, truth, spacing)
    assert kind == "fg" and z in (5, 6) and np.array_equal(section, truth[z])
    small = truth.copy()
    small[1, 5:8, 5:8] = False  # 9 of 1350 voxels missed: left alone
    assert ac.correction(small, truth, spacing) is None


def test_fix_mode_paints_the_middle_slice_for_the_runner_to_correct():
    labels = np.zeros((9, 12, 12), np.uint8)
    labels[2:7, 2:8, 2:8] = 1
    jobs = build_jobs(_case("sabs_15"), labels, ["fix"], ["liver"], [1])
    assert [(j.mode, j.slices, j.correct) for j in jobs] == [("same-fix1", [4], True)]
    np.testing.assert_array_equal(jobs[0].paint[4] == 1, labels[4] == 1)


def test_partial_paint_marks_part_of_the_organ_inside_it():
    mask = np.zeros((80, 100), bool)
    mask[20:60, 15:85] = True  # 40 x 70 pixels of 1 mm: long along x
    spacing = (1.0, 1.0)
    for kind in ac.PARTIAL_KINDS:
        paint = ac.partial_paint(mask, spacing, kind)
        assert paint.any() and not paint[~mask].any()
        assert paint.sum() < 0.25 * mask.sum()  # part of the organ, not its section
    line = ac.partial_paint(mask, spacing, "line")
    rows, cols = np.nonzero(line)
    assert np.ptp(cols) > 3 * np.ptp(rows)  # along the long axis
    inset = ac.PARTIAL_INSET_MM - ac.PARTIAL_BRUSH_MM - 0.5  # the brush's centre keeps the inset
    assert cols.min() >= 15 + inset and cols.max() <= 84 - inset
    dab = ac.partial_paint(mask, spacing, "dab")
    assert abs(dab.sum() - np.pi * ac.DAB_MM**2) < 0.15 * np.pi * ac.DAB_MM**2
    with pytest.raises(ValueError, match="kind"):
        ac.partial_paint(mask, spacing, "splash")
