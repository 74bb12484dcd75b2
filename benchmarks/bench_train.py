"""Benchmark headless training on the CPU: supervoxels, episode sampling and SGD steps.

Protocol:

1. Supervoxels: 3D Felzenszwalb (numba) on a 100 x 256 x 256 synthetic abdomen (the size of a
   CT on the paper's working grid) at the paper's minimum sizes, and on the real 3 mm CT of
   ../shared/data resampled onto the 256 working grid, as the trainer prepares it.
2. Episodes: augmented single- and multi-foreground episodes per second from one process, the
   work a DataLoader worker does per step.
3. Steps: optimisation steps per second (1 episode per step, the paper's batch size, 256 x 256
   slices, TPM losses, SGD, EMA) for each encoder, after one warm-up step; the best and the
   median step time over the timed steps are reported.

Run:  python benchmarks/bench_train.py [--out benchmarks/RESULTS-train.md] [--steps 4]
      [--encoders resnet18-l3 resnet18 resnet101]
Uses 2 torch threads (the dev/CI machine has 2 cores).
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

from napari_tpm.phantom import make_phantom, make_phantom_dataset  # noqa: E402
from napari_tpm.train.episodes import EpisodeConfig, EpisodeDataset  # noqa: E402
from napari_tpm.train.setup import new_model  # noqa: E402
from napari_tpm.train.supervoxels import compute_supervoxels  # noqa: E402
from napari_tpm.train.trainer import TrainConfig, Trainer  # noqa: E402
from napari_tpm.train.volumes import to_working_volume, volume_from_array  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def bench_supervoxels() -> list[str]:
    rows = []
    p = make_phantom((100, 256, 256), seed=0, spacing=(2.5, 1.5, 1.5))
    image, spacing, _ = to_working_volume(p.image, p.spacing, size=256, modality="ct")
    compute_supervoxels(image[:8, :64, :64], spacing, min_size=100)  # compile / load the cache
    for min_size in (2000, 5000):
        t = time.perf_counter()
        labels = compute_supervoxels(image, spacing, min_size=min_size)
        dt = time.perf_counter() - t
        sizes = np.bincount(labels.ravel())[1:]
        rows.append(
            f"| phantom CT {image.shape} | {min_size} | {dt:.1f} | {int((sizes > 0).sum())} "
            f"| {float((labels > 0).mean()):.2f} |"
        )
    ct = DATA / "totalsegmentator" / "ts_ct_full_3mm_ct.nii.gz"
    if ct.is_file():
        from napari_tpm.io import read_volume

        vol = read_volume(ct)
        image, spacing, _ = to_working_volume(vol.array, vol.spacing, size=256, modality="ct")
        t = time.perf_counter()
        labels = compute_supervoxels(image, spacing, min_size=2000)
        dt = time.perf_counter() - t
        sizes = np.bincount(labels.ravel())[1:]
        rows.append(
            f"| TotalSegmentator CT 3 mm {image.shape} | 2000 | {dt:.1f} | "
            f"{int((sizes > 0).sum())} | {float((labels > 0).mean()):.2f} |"
        )
    return rows


def _volumes(n: int = 3):
    phantoms = make_phantom_dataset(n, shape=(32, 128, 128), seed=0)
    return [
        volume_from_array(p.image, p.spacing, name=f"p{i}", size=256, min_size=2000)
        for i, p in enumerate(phantoms)
    ]


def bench_episodes(volumes, n: int = 60) -> list[str]:
    """Timed with one torch thread, as in a DataLoader worker (`episodes.worker_init`)."""
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for k in (1, 5):
        data = EpisodeDataset(volumes, EpisodeConfig(max_classes=k), seed=0)
        data[0]
        t = time.perf_counter()
        for i in range(1, n + 1):
            data[i]
        dt = time.perf_counter() - t
        rows.append(f"| max_classes={k} | {n / dt:.1f} | {1000 * dt / n:.1f} |")
    torch.set_num_threads(threads)
    return rows


def bench_steps(volumes, encoders, steps: int) -> list[str]:
    rows = []
    for name in encoders:
        config = TrainConfig(encoder=name, steps=steps + 1, device="cpu", seed=0)
        torch.manual_seed(0)
        trainer = Trainer(new_model(config), volumes, config)
        times, last = [], time.perf_counter()
        for _ in trainer.run():
            now = time.perf_counter()
            times.append(now - last)
            last = now
        timed = np.array(times[1:])  # the first step pays for allocations and warm-up
        med, best = float(np.median(timed)), float(timed.min())
        n_params = sum(p.numel() for p in trainer.net.encoder.parameters())
        rows.append(
            f"| {name} | {n_params / 1e6:.1f} M | {1 / best:.2f} | {best:.2f} | {med:.2f} | "
            f"{best * 50_000 / 3600:.0f} h |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS-train.md"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--encoders", nargs="+", default=["resnet18-l3", "resnet18", "resnet34", "resnet101"]
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    sv_rows = bench_supervoxels()
    print("\n".join(sv_rows), flush=True)
    volumes = _volumes()
    ep_rows = bench_episodes(volumes)
    print("\n".join(ep_rows), flush=True)
    step_rows = bench_steps(volumes, args.encoders, args.steps)

    text = f"""# Training benchmark (CPU)

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores,
{args.threads} torch thread(s), torch {torch.__version__}; load average {load:.1f} when started
(the development sandbox is shared: timings are upper bounds). Produced by
`python benchmarks/bench_train.py --threads {args.threads}`.

## Supervoxels (3D Felzenszwalb, numba; 26-neighbourhood)

| volume (z, y, x) on the working grid | min size | seconds | supervoxels | body fraction |
|---|---|---|---|---|
{chr(10).join(sv_rows)}

Computed once per volume and cached beside the data (`.napari-tpm-cache/`).

## Episode sampling (one worker process, 1 thread, gamma + affine + elastic, 256 x 256)

| episodes | per second | ms each |
|---|---|---|
{chr(10).join(ep_rows)}

## SGD steps (1 episode = support + query slice, 256 x 256, TPM losses, fp32, CPU)

| encoder | parameters | steps/s (best) | s/step best | s/step median | 50k steps (best) |
|---|---|---|---|---|---|
{chr(10).join(step_rows)}

Best and median over {args.steps} timed steps after one warm-up step; on the shared sandbox the
median includes time stolen by other processes, the best step is the closer estimate of an idle
machine. The paper's schedule is 50 000 steps of ResNet-101: a GPU job (`--device cuda --amp
--workers 8`), not a CPU one.
"""
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
