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
