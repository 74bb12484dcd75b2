"""Dice before and after test-time adaptation on the labelled development volumes.

For each volume of ../shared/data and each target organ present: paint the organ's middle
labelled axial slice, segment the same volume, and score the 3D Dice at the CE-T prior (0.5)
and at the model's "auto" prior; then adapt the model to that volume for each step count
(label-free, `napari_tpm.adapt.adapt_session`, starting from the original model every time)
and score again.

Run:  python benchmarks/bench_adapt_dice.py [--model resnet18l3-cpu800] [--steps 60 150]
          [--out benchmarks/RESULTS-adapt.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import numpy as np
import torch

from napari_tpm.adapt import adapt_session
from napari_tpm.checkpoints import load_model
from napari_tpm.io import read_volume
from napari_tpm.session import SegmentationSession

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TS = {"liver": 5, "RK": 2, "LK": 3, "spleen": 1}
AMOS = {"liver": 6, "RK": 2, "LK": 3, "spleen": 1}
SETS = [
    ("ts_ct", "totalsegmentator/ts_ct_full_3mm_ct.nii.gz",
     "totalsegmentator/ts_ct_full_3mm_label_totalseg_fast.nii.gz", TS),
    ("ts_mr", "totalsegmentator/ts_mr_3mm_mr.nii.gz",
     "totalsegmentator/ts_mr_3mm_label_totalseg_mr.nii.gz", TS),
    ("ts_dicom", "totalsegmentator/ts_dicom_ct.nii.gz",
     "totalsegmentator/ts_dicom_ct_label_totalseg.nii.gz", TS),
    ("amos_0001", "amos_slabs/amos_0001_slab_ct.nii.gz",
     "amos_slabs/amos_0001_slab_label.nii.gz", AMOS),
    ("amos_0013", "amos_slabs/amos_0013_slab_ct.nii.gz",
     "amos_slabs/amos_0013_slab_label.nii.gz", AMOS),
]  # fmt: skip


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def score(session: SegmentationSession, labels: np.ndarray, organs: dict) -> dict:
    out = {}
    for name, value in organs.items():
        truth = labels == value
        zs = np.nonzero(truth.any(axis=(1, 2)))[0]
        if zs.size == 0:
            continue
        z = int(zs[len(zs) // 2])
        paint = np.zeros(labels.shape, np.uint8)
        paint[z][truth[z]] = 1
        for _ in session.segment(paint):
            pass
        out[name] = (
            dice(session.labels(0.5) > 0, truth),
            dice(session.labels(None) > 0, truth),
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="resnet18l3-cpu800")
    ap.add_argument("--steps", type=int, nargs="+", default=[60, 150])
    ap.add_argument("--out", default="benchmarks/RESULTS-adapt.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for key, img, lab, organs in SETS:
        image, labels = read_volume(DATA / img), read_volume(DATA / lab).array
        session = SegmentationSession(load_model(args.model), device="cpu")
        session.set_image(image.array, image.spacing)
        before = score(session, labels, organs)
        after = {}
        for steps in args.steps:
            session.set_model(load_model(args.model))
            t0 = time.perf_counter()
            for _ in adapt_session(session, steps):
                pass
            seconds = time.perf_counter() - t0
            after[steps] = (score(session, labels, organs), seconds)
        for organ, (cet, auto) in before.items():
            row = [key, organ, f"{cet:.3f}", f"{auto:.3f}"]
            for steps in args.steps:
                s, _ = after[steps]
                row += [f"{s[organ][0]:.3f}", f"{s[organ][1]:.3f}"]
            rows.append(row)
        times = ", ".join(f"{s} steps {after[s][1]:.0f} s" for s in args.steps)
        print(key, "done:", times, flush=True)
        rows.append([key, f"(adaptation time: {times})"] + [""] * (2 + 2 * len(args.steps)))
    head = ["volume", "organ", "before CE-T", "before auto"]
    for s in args.steps:
        head += [f"{s} steps CE-T", f"{s} steps auto"]
    lines = [
        f"\n## Dice before / after adaptation — {dt.date.today()}, model `{args.model}`",
        "2-core CPU sandbox, 2 torch threads; same-volume support (middle labelled slice), no "
        "connectivity filter; 'auto' = the model's LinEst prior (refreshed after adapting).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    means = []
    for j in range(2, len(head)):
        vals = [float(r[j]) for r in rows if r[j] and not r[1].startswith("(")]
        means.append(f"{np.mean(vals):.3f}")
    lines.append("| **mean** | | " + " | ".join(means) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
