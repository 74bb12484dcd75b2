"""Benchmark test-time adaptation ("Adapt to this volume") on the CPU.

Protocol:

1. Supervoxels: a synthetic CT of ``--slices`` x 256 x 256 (a 512 x 512 x 150 CT lands on this
   working grid) at the CT minimum size 2000, computed in memory as `adapt` does.
2. Steps: `adapt` with ``trainable="last"``, frozen BatchNorm, lr 1e-4, 256 x 256 slices, for
   each encoder (random initialisation: the timing does not depend on the weights); the first
   step is a warm-up, best and median of the others are reported.
3. Estimator refresh: seconds per analysis episode (eval-mode forward of support + query,
   5-prototype EM).
4. `estimate_seconds(measure=True)` next to the measured step time, to check the estimate.

Run:  python benchmarks/bench_adapt.py [--steps 6] [--slices 150] [--threads 2]
          [--encoders resnet18-l3 resnet101] [--out benchmarks/RESULTS-adapt.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_tpm.adapt import adapt, estimate_seconds  # noqa: E402
from napari_tpm.phantom import make_phantom  # noqa: E402
from napari_tpm.train.setup import new_model  # noqa: E402
from napari_tpm.train.trainer import TrainConfig  # noqa: E402
from napari_tpm.train.volumes import volume_from_array  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--analysis", type=int, default=5)
    ap.add_argument("--encoders", nargs="+", default=["resnet18-l3", "resnet101"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    lines = [
        "# Test-time adaptation benchmark",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared sandbox), torch {torch.__version__}, {args.threads} torch threads, CPU fp32.",
        f"Load average at start: {os.getloadavg()[0]:.1f}.",
        "",
    ]
    ph = make_phantom(shape=(args.slices, 256, 256), seed=0, spacing=(2.0, 1.5, 1.5))
    t = time.perf_counter()
    vol = volume_from_array(ph.image, ph.spacing, name="bench", size=256)
    sv_s = time.perf_counter() - t
    lines += [
        "## Supervoxels (in memory, CT min size 2000)",
        "",
        "| volume on the working grid | seconds | supervoxels |",
        "|---|---|---|",
        f"| phantom CT {vol.image.shape} | {sv_s:.1f} | {int(vol.supervoxels.max())} |",
        "",
        "## Adaptation steps (last stage + projection + theta trainable, frozen BN, 256 x 256)",
        "",
        "| encoder | s/step best | s/step median | estimate_seconds / step | "
        f"analysis s/episode | {60} steps (median) |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.encoders:
        torch.manual_seed(0)
        model = new_model(TrainConfig(encoder=name))
        est = estimate_seconds(model, 1, "cpu")
        stamps: list[float] = []
        ana: list[float] = []
        t = time.perf_counter()
        for p in adapt(
            model,
            [vol],
            steps=args.steps + 1,
            device="cpu",
            analysis_episodes=args.analysis,
        ):
            now = time.perf_counter()
            if p.stage == "adapt":
                stamps.append(now)
            elif p.stage == "estimators":
                ana.append(now)
        per = np.diff(stamps)  # first step (warm-up) excluded
        per_ana = (ana[-1] - stamps[-1]) / max(len(ana), 1) if ana else float("nan")
        row = (
            f"| {name} | {per.min():.2f} | {np.median(per):.2f} | {est:.2f} | "
            f"{per_ana:.2f} | {60 * np.median(per) / 60:.1f} min |"
        )
        print(row, flush=True)
        lines.append(row)
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
