"""Benchmark the evaluation's generic mode on the development data and on phantoms.

Protocol: ``napari_tpm.evaluate.run_generic`` with same-volume support (each organ painted on
its middle labelled slice of the volume itself, EP2: the whole volume is segmented and scored
with a 3D Dice), 1 and 5 prototypes, every prior rule the model supports (CE-T and the oracle
OCP for the training-free filter bank; AvgEst/LinEst too for a trained checkpoint), plus the
multi-class table (all organs from the slice with the most labels, and the ADNet++ max rule on
the same features).

Sets (label values differ per set, see ../shared/data/README.md):

* TotalSegmentator CT, full 3 mm volume (silver labels): liver 5, kidneys 2/3, spleen 1;
* TotalSegmentator MR 3 mm (silver labels): same values;
* the DICOM CT slab as NIfTI (silver labels): liver 5, spleen 1 (no kidneys in the slab);
* the two AMOS CT slabs (manual labels): liver 6, kidneys 2/3, spleen 1;
* synthetic phantoms (napari_tpm.phantom): liver 5, kidneys 2/3, spleen 1.

Models: "filterbank", and the registry default (napari_tpm.zoo) when it is not the filter bank.

Run:  python benchmarks/bench_evaluate.py [--out benchmarks/RESULTS-evaluate.md]
      [--phantoms 4] [--models filterbank default] [--figures DIR]
Uses 2 torch threads (the dev/CI machine has 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

from napari_tpm.evaluate.datasets import Case  # noqa: E402
from napari_tpm.evaluate.report import make_tables, write_report  # noqa: E402
from napari_tpm.evaluate.runner import Options, Results, drain, run_generic  # noqa: E402
from napari_tpm.evaluate.tables import markdown  # noqa: E402
from napari_tpm.phantom import make_phantom_dataset  # noqa: E402

FOUR = {"liver": 5, "rk": 2, "lk": 3, "spleen": 1}
AMOS = {"liver": 6, "rk": 2, "lk": 3, "spleen": 1}


@dataclass
class DataSet:
    key: str
    title: str
    classes: dict[str, int]
    cases: list[Case]


def real_sets() -> list[DataSet]:
    ts, amos = DATA / "totalsegmentator", DATA / "amos_slabs"

    def case(name: str, folder: Path, image: str, label: str) -> Case:
        return Case(name, folder / image, folder / label)

    return [
        DataSet(
            "ts_ct", "TotalSegmentator CT, full 3 mm (silver labels)", FOUR,
            [case("ts_ct_full", ts, "ts_ct_full_3mm_ct.nii.gz",
                  "ts_ct_full_3mm_label_totalseg_fast.nii.gz")],
        ),
        DataSet(
            "ts_mr", "TotalSegmentator MR 3 mm (silver labels)", FOUR,
            [case("ts_mr", ts, "ts_mr_3mm_mr.nii.gz", "ts_mr_3mm_label_totalseg_mr.nii.gz")],
        ),
        DataSet(
            "ts_dicom", "DICOM CT slab as NIfTI (silver labels; no kidneys)",
            {"liver": 5, "spleen": 1},
            [case("ts_dicom_ct", ts, "ts_dicom_ct.nii.gz", "ts_dicom_ct_label_totalseg.nii.gz")],
        ),
        DataSet(
            "amos", "AMOS CT slabs, 11 slices (manual labels)", AMOS,
            [
                case(f"amos_{i}", amos, f"amos_{i}_slab_ct.nii.gz", f"amos_{i}_slab_label.nii.gz")
                for i in ("0001", "0013")
            ],
        ),
    ]  # fmt: skip


def phantom_set(n: int) -> DataSet:
    phantoms = make_phantom_dataset(n, seed=500, shape=(32, 128, 128), spacing=(5.0, 2.5, 2.5))
    cases = [
        Case(f"phantom_{p.seed}", image=p.image, labels=p.labels, spacing=p.spacing)
        for p in phantoms
    ]
    return DataSet("phantom", f"{n} CT phantoms 32x128x128 (5 x 2.5 x 2.5 mm)", FOUR, cases)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS-evaluate.md")
    p.add_argument("--phantoms", type=int, default=4)
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--figures", type=Path, default=None, help="also write each run's outputs")
    p.add_argument("--sets", nargs="+", default=None, help="subset of set keys")
    args = p.parse_args()
    torch.set_num_threads(2)
    from napari_tpm.zoo import default_model

    models = args.models or list(dict.fromkeys(["filterbank", default_model()]))
    sets = (real_sets() if DATA.is_dir() else []) + [phantom_set(args.phantoms)]
    if args.sets:
        sets = [s for s in sets if s.key in args.sets]
    lines = [
        "# Evaluation benchmark: generic mode, same-volume support, EP2",
        "",
        f"- date: {dt.date.today().isoformat()}",
        f"- machine: {platform.machine()} {platform.system()}, "
        f"{torch.get_num_threads()} torch threads (2-core CPU sandbox, shared with other jobs, "
        f"so timings are indicative only), Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        "- command: `python benchmarks/bench_evaluate.py`",
        "- protocol: each organ painted on its middle labelled axial slice of the volume "
        "itself; the whole volume is segmented and scored with a 3D Dice (no connected-"
        "component filtering); multi-class: all organs painted on the slice with the most "
        "organs. Mean ± std over the volumes of the set (a set of one volume has std 0).",
        "- AvgEst/LinEst are n/a for a model without training statistics (the filter bank); "
        "OCP is the per-slice oracle (upper bound, not a method).",
        "",
    ]
    summary = ["| model | set | volumes | slices | seconds |", "|---|---|---:|---:|---:|"]
    body: list[str] = []
    for model in models:
        body.append(f"## Model `{model}`\n")
        for ds in sets:
            results = Results()
            start = time.perf_counter()
            drain(
                run_generic(
                    ds.cases, ds.classes, model, results,
                    options=Options(device="cpu", prototypes=(1, 5)),
                    support="same", multiclass=True,
                )
            )  # fmt: skip
            seconds = time.perf_counter() - start
            n_slices = sum(case.load().image.shape[0] for case in ds.cases)
            summary.append(f"| {model} | {ds.key} | {len(ds.cases)} | {n_slices} | {seconds:.1f} |")
            print(f"{model} {ds.key}: {seconds:.1f} s", file=sys.stderr)
            body.append(f"### {ds.title}\n")
            for table in make_tables(results):
                table.notes = [n for n in table.notes if "ADNet row" not in n]
                body.append(markdown(table))
            if args.figures:
                write_report(results, args.figures / model / ds.key)
    lines += ["## Wall time per set", "", *summary, "", *body]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
