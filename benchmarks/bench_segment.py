"""Benchmark of the segment CLI and the session's cached stages on a 512x512x150 CT-like volume.

    python benchmarks/bench_segment.py [--checkpoint default] [--device cpu|cuda]
        [--out benchmarks/RESULTS-segment.md]

Measures: CLI wall time end to end (read, encode, score, write) with its peak resident memory,
the same with the paint on another volume (``--support-image``: the contrast search runs five
first passes and their second passes), re-threshold latency (`labels(prior)`, the slider),
prototype-count change latency (`set_prototypes`), and the liver Dice. Figures are appended to
the output file with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_tpm.io import Volume, read_volume, write_volume
from napari_tpm.phantom import make_phantom
from napari_tpm.session import SegmentationSession


def _machine(device: str) -> str:
    cpu = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    if device.startswith("cuda"):
        gpu = torch.cuda.get_device_name(torch.device(device))
        return f"{gpu} (torch {torch.__version__}), {cpu}"
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--shape", type=int, nargs=3, default=(150, 512, 512))
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where the CLI and session run")
    ap.add_argument("--out", default="benchmarks/RESULTS-segment.md")
    ap.add_argument(
        "--paint-at",
        type=float,
        default=None,
        help="paint the liver at this fraction of its slices (0 first, 1 last; default: its "
        "middle slice): 0.15 times paint near an organ's end, which takes a second pass",
    )
    args = ap.parse_args()
    if args.paint_at is not None and not 0.0 <= args.paint_at <= 1.0:
        ap.error(f"--paint-at must lie in [0, 1], got {args.paint_at}")

    ph = make_phantom(shape=tuple(args.shape), seed=1, spacing=(2.0, 0.7, 0.7))
    liver = ph.labels == 5
    zs = np.nonzero(liver.any(axis=(1, 2)))[0]
    z = int(zs[len(zs) // 2] if args.paint_at is None else zs[round(args.paint_at * (zs.size - 1))])
    paint = np.zeros(ph.labels.shape, np.uint8)
    paint[z][liver[z]] = 5
    with tempfile.TemporaryDirectory() as tmp:
        like = Volume(np.asarray(ph.image), tuple(ph.spacing))
        write_volume(Path(tmp) / "ct.nii.gz", ph.image, like)
        write_volume(Path(tmp) / "paint.nii.gz", paint, like)
        cmd = [
            sys.executable, "-m", "napari_tpm.segment", str(Path(tmp) / "ct.nii.gz"),
            "--support-labels", str(Path(tmp) / "paint.nii.gz"),
            "--out", str(Path(tmp) / "out.nii.gz"),
            "--checkpoint", args.checkpoint, "--device", args.device, "--quiet",
        ]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        cli_s = time.perf_counter() - t0
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        out = read_volume(Path(tmp) / "out.nii.gz").array
        # paint on another phantom (the atlas use): same paint, another patient's scan
        other = make_phantom(shape=tuple(args.shape), seed=2, spacing=(2.0, 0.7, 0.7))
        oliver = other.labels == 5
        oz = int(np.nonzero(oliver.any(axis=(1, 2)))[0].mean())
        opaint = np.zeros(other.labels.shape, np.uint8)
        opaint[oz][oliver[oz]] = 5
        olike = Volume(np.asarray(other.image), tuple(other.spacing))
        write_volume(Path(tmp) / "other.nii.gz", other.image, olike)
        write_volume(Path(tmp) / "other_paint.nii.gz", opaint, olike)
        cross = [*cmd[:5], str(Path(tmp) / "other_paint.nii.gz")]  # after --support-labels
        cross += ["--support-image", str(Path(tmp) / "other.nii.gz"), *cmd[6:]]
        t0 = time.perf_counter()
        subprocess.run(cross, check=True)
        cross_s = time.perf_counter() - t0
        cross_out = read_volume(Path(tmp) / "out.nii.gz").array
    cli_dice = 2 * ((out == 5) & liver).sum() / ((out == 5).sum() + liver.sum())
    cross_dice = 2 * ((cross_out == 5) & liver).sum() / ((cross_out == 5).sum() + liver.sum())

    session = SegmentationSession(args.checkpoint, device=args.device)
    session.set_image(ph.image, ph.spacing)
    t0 = time.perf_counter()
    for _ in session.segment(paint):
        pass
    seg_s = time.perf_counter() - t0
    buf = np.zeros(ph.labels.shape, np.uint8)
    slider = []
    for prior in np.linspace(0.1, 0.9, 9):
        t0 = time.perf_counter()
        session.labels(float(prior), out=buf)
        slider.append(time.perf_counter() - t0)
    protos = []
    for k in (3, 5, 1):
        t0 = time.perf_counter()
        session.set_prototypes(k)
        protos.append((k, time.perf_counter() - t0))

    lines = [
        f"\n## {dt.date.today()} — model `{session.model.name}`, volume {tuple(args.shape)}"
        + ("" if args.paint_at is None else f", liver painted at {args.paint_at:.0%} (slice {z})"),
        f"machine: {_machine(args.device)}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| CLI wall time, end to end (read, encode, score, write) | {cli_s:.1f} s |",
        f"| CLI peak resident memory | {peak_mib:.0f} MiB |",
        f"| CLI liver Dice | {cli_dice:.3f} |",
        f"| CLI wall time, paint on another volume (contrast search) | {cross_s:.1f} s |",
        f"| CLI liver Dice, paint on another volume | {cross_dice:.3f} |",
        f"| session segment() (encode + score, in process) | {seg_s:.1f} s |",
        f"| re-threshold `labels(prior)` median of 9 | {statistics.median(slider) * 1e3:.0f} ms |",
    ]
    lines += [f"| `set_prototypes({k})` | {s:.2f} s |" for k, s in protos]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
