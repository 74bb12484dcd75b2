"""Measure the encoders: one-slice TPM Dice of filter-bank variants, and speed of every encoder.

Protocol (the session's "self-calibrated" rule, single tied prototype):

1. Normalise the volume as the session does (``preprocess.normalise_intensity``: CT window then
   z-score, MR percentile clip then z-score) and resize every axial slice onto the 256 x 256
   working grid (``preprocess.WorkingGrid``); labels go to the same grid by nearest neighbour.
2. For each organ (liver, spleen, right and left kidney) the support is the middle labelled axial
   slice (index ``int(0.5 * count)`` of the labelled slices, the paper's EP2 choice); the
   prototype is the masked average of its features (bilinearly upsampled to the grid).
3. Every voxel of the volume gets ``D2 = 2 (1 - cos)`` to the prototype, upsampled bilinearly to
   the grid; the threshold is the one that makes the predicted count on the support slice equal
   to the painted count there.
4. Keep the 3-D connected components (26-connectivity) that touch the painted support pixels and
   compute the 3-D Dice on the working grid against the label.

Run:  python benchmarks/bench_encoders.py [--out FILE] [--no-dice] [--no-speed] [--threads 2 1]
The Dice table uses the first thread count (default 2: the dev machine has 2 cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_tpm.encoders import Encoder, FilterBankEncoder, build_encoder  # noqa: E402
from napari_tpm.encoders.filterbank import GROUPS  # noqa: E402
from napari_tpm.preprocess import WorkingGrid, normalise_intensity  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SIZE = 256
ORGANS = ("liver", "spleen", "kidney_r", "kidney_l")

#: (name, modality, image, label, {organ: label value}); labels: see shared/data/README.md.
_TS = {"liver": 5, "spleen": 1, "kidney_r": 2, "kidney_l": 3}
_AMOS = {"liver": 6, "spleen": 1, "kidney_r": 2, "kidney_l": 3}
CASES = (
    (
        "ts_ct_full_3mm",
        "ct",
        "totalsegmentator/ts_ct_full_3mm_ct.nii.gz",
        "totalsegmentator/ts_ct_full_3mm_label_totalseg_fast.nii.gz",
        _TS,
    ),
    (
        "ts_dicom_ct",
        "ct",
        "totalsegmentator/ts_dicom_ct.nii.gz",
        "totalsegmentator/ts_dicom_ct_label_totalseg.nii.gz",
        _TS,
    ),
    (
        "amos_0001",
        "ct",
        "amos_slabs/amos_0001_slab_ct.nii.gz",
        "amos_slabs/amos_0001_slab_label.nii.gz",
        _AMOS,
    ),
    (
        "amos_0013",
        "ct",
        "amos_slabs/amos_0013_slab_ct.nii.gz",
        "amos_slabs/amos_0013_slab_label.nii.gz",
        _AMOS,
    ),
    (
        "ts_mr_3mm",
        "mr",
        "totalsegmentator/ts_mr_3mm_mr.nii.gz",
        "totalsegmentator/ts_mr_3mm_label_totalseg_mr.nii.gz",
        _TS,
    ),
)


@dataclass
class Case:
    name: str
    modality: str
    image: np.ndarray  # (Z, SIZE, SIZE) float32, normalised, on the working grid
    labels: np.ndarray  # (Z, SIZE, SIZE) int, same grid
    organs: dict[str, int]


def load_case(name: str, modality: str, image: str, label: str, organs: dict) -> Case:
    """Read, normalise and resample one volume onto the working grid as the session does."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(DATA / image))
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / label)))
    norm = normalise_intensity(arr, modality=modality)
    sx, sy, _ = img.GetSpacing()
    grid = WorkingGrid.fit(arr.shape[1:], (sy, sx), size=SIZE)
    x = grid.to_working(torch.from_numpy(norm)[:, None], pad_value=float(norm.min()))[:, 0]
    y = np.stack([grid.to_working_mask(s) for s in lab])
    return Case(name, modality, x.numpy(), y, organs)


def load_cases() -> list[Case]:
    return [load_case(*c) for c in CASES if (DATA / c[2]).is_file()]


@torch.no_grad()
def encode(encoder: Encoder, image: np.ndarray, batch: int = 16) -> torch.Tensor:
    """Features of every slice, ``[Z, C, h, w]`` float32."""
    out = [
        encoder(torch.from_numpy(image[i : i + batch])[:, None])
        for i in range(0, len(image), batch)
    ]
    return torch.cat(out)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    den = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / den) if den else 1.0


def organ_dice(feats: torch.Tensor, labels: np.ndarray, value: int) -> float | None:
    """3-D Dice of one-slice, self-calibrated, single-prototype TPM for one organ (see top)."""
    truth = labels == value
    zs = np.flatnonzero(truth.any((1, 2)))
    if zs.size == 0:
        return None
    z = int(zs[int(0.5 * zs.size)])
    paint = torch.from_numpy(truth[z]).float()
    up = F.interpolate(feats[z : z + 1], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    proto = (up[0] * paint).sum((1, 2)) / paint.sum()
    proto = F.normalize(proto, dim=0)
    cos = torch.einsum("zchw,c->zhw", feats, proto)
    d2 = F.interpolate(
        (2 * (1 - cos))[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False
    )[:, 0]
    n = int(paint.sum())
    thr = torch.kthvalue(d2[z].flatten(), n).values
    pred = (d2 <= thr).numpy()
    lab, _ = ndimage.label(pred, structure=np.ones((3, 3, 3), bool))
    seeds = np.unique(lab[z][truth[z]])
    keep = np.isin(lab, seeds[seeds > 0])
    return dice(keep, truth)


def evaluate(encoder: Encoder, cases: list[Case]) -> tuple[dict, float]:
    """Dice per (case, organ) and encoder seconds per 256 x 256 slice."""
    scores: dict[tuple[str, str], float] = {}
    t_enc, n_enc = 0.0, 0
    for case in cases:
        t0 = time.perf_counter()
        feats = encode(encoder, case.image)
        t_enc += time.perf_counter() - t0
        n_enc += len(case.image)
        for organ in ORGANS:
            d = organ_dice(feats, case.labels, case.organs[organ])
            if d is not None:
                scores[(case.name, organ)] = d
    return scores, t_enc / max(n_enc, 1)


@torch.no_grad()
def time_encoder(make: Callable[[], Encoder], bf16: bool, batch: int = 8, iters: int = 3) -> float:
    """Seconds per 256 x 256 slice: the fastest of ``iters`` batches of 8 after a warm-up.

    The fastest, not the mean, because the sandbox's 2 cores are shared with other jobs and
    contention only ever adds time.
    """
    enc = make().eval()
    enc.set_runtime(bf16=bf16, channels_last=bf16)
    x = torch.randn(batch, 1, SIZE, SIZE)
    enc(x)
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        enc(x)
        best = min(best, time.perf_counter() - t0)
    return best / batch


# -------------------------------------------------------------------- filter-bank variants
def variants() -> dict[str, dict]:
    """Filter-bank configurations compared in the table; the last one is the default."""
    equal = {g: 1.0 for g in GROUPS}  # ablation rows weigh every group alike
    local = ["intensity", "gradient", "hessian", "std"]
    context = [*local, "histogram", "body"]
    fb = {"name": "filterbank", "group_weights": equal}
    return {
        "A. intensity only, scales 1-16 px": {**fb, "groups": ["intensity"]},
        "B. local: intensity, gradient, Hessian, std, scales 1-4 px": {
            **fb,
            "groups": local,
            "scales": [1, 2, 4],
        },
        "C. B + context: scales to 16 px, soft histograms, body depth": {**fb, "groups": context},
        "D. C + body-relative position": {**fb, "groups": [*context, "position"]},
        "E. default groups/weights, image-frame position": {
            "name": "filterbank",
            "position_frame": "image",
        },
        "F. **default**: D without gradient/std, histogram x2, position x1.5": {
            "name": "filterbank"
        },
    }


def format_table(rows: dict[str, tuple[dict, float]]) -> str:
    """Markdown table: one row per (volume, organ), one column per variant, means at the end."""
    names = list(rows)
    keys = sorted({k for scores, _ in rows.values() for k in scores})
    letters = [n.split(".")[0] for n in names]
    lines = ["| volume | organ | " + " | ".join(letters) + " |", "|---|---|" + "---|" * len(names)]
    for case, organ in keys:
        cells = " | ".join(f"{rows[n][0].get((case, organ), float('nan')):.3f}" for n in names)
        lines.append(f"| {case} | {organ} | {cells} |")

    def mean(n: str, pick: Callable[[str], bool]) -> float:
        return float(np.mean([v for (c, _), v in rows[n][0].items() if pick(c)]))

    for label, pick in (
        ("**mean, all**", lambda c: True),
        ("mean, CT", lambda c: not c.startswith("ts_mr")),
        ("mean, MR", lambda c: c.startswith("ts_mr")),
    ):
        cells = " | ".join(f"{mean(n, pick):.3f}" for n in names)
        lines.append(f"| {label} | | {cells} |")
    cells = " | ".join(f"{1000 * rows[n][1]:.0f}" for n in names)
    lines.append(f"| ms per slice (encode, in-run) | | {cells} |")
    lines += ["", "Variants:", ""] + [f"- {n}" for n in names]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write the markdown tables here")
    ap.add_argument("--no-dice", action="store_true", help="skip the filter-bank Dice table")
    ap.add_argument("--no-speed", action="store_true", help="skip the encoder timings")
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="thread counts to time")
    args = ap.parse_args(argv)
    parts = [
        f"Machine: 2-core CPU sandbox ({platform.machine()}, "
        f"{torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}.",
    ]
    if not args.no_dice:
        torch.set_num_threads(args.threads[0])
        cases = load_cases()
        if not cases:
            print(f"no data under {DATA}")
            return 1
        rows = {}
        for name, cfg in variants().items():
            rows[name] = evaluate(build_encoder(cfg), cases)
            print(name, f"mean {np.mean(list(rows[name][0].values())):.3f}", flush=True)
        parts += [
            "",
            "### Filter bank: one-slice, self-calibrated, single-prototype 3-D Dice",
            "",
            format_table(rows),
            "",
            f"Default filter-bank config: `{FilterBankEncoder().config()}`",
        ]
    if not args.no_speed:
        head = " | ".join(f"fp32 {t}t | bf16+CL {t}t" for t in args.threads)
        parts += ["", "### Encoder speed, seconds per 256x256 slice (batch 8, best of 3)", ""]
        parts += [
            f"| encoder | params (M) | {head} |",
            "|---|---|" + "---|" * 2 * len(args.threads),
        ]
        for name in ("filterbank", "resnet18-l3", "resnet18", "resnet34", "resnet50", "resnet101"):
            make = lambda n=name: build_encoder(n)  # noqa: E731
            n_par = sum(p.numel() for p in make().parameters()) / 1e6
            cells = []
            for t in args.threads:
                torch.set_num_threads(t)
                cells += [
                    f"{time_encoder(make, bf16=False):.3f}",
                    f"{time_encoder(make, bf16=True):.3f}",
                ]
            print(name, cells, flush=True)
            parts.append(f"| {name} | {n_par:.1f} | " + " | ".join(cells) + " |")
        parts.append(
            f"\nLoad average when done: {os.getloadavg()[0]:.1f} (other jobs share the cores)."
        )
    text = "\n".join(parts) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
