r"""Does a 3D graph cut (benchmarks/accuracy_graphcut.py) on the log-odds beat the default labels?

Issue 10 item 3. For each case of the split and each organ (liver, rkidney, lkidney, spleen),
modes ``same`` (the organ's middle labelled slice of the scan itself) and ``cross`` (that slice
of the next volume of the split group), built by ``bench_accuracy.build_jobs`` exactly as the
accuracy benchmark builds them:

1. ``cache``: run ``SegmentationSession`` with default options; keep the log-odds at the auto
   prior, ``scores() + logit(auto_prior())`` (``labels()`` keeps ``scores() > -logit(prior)``),
   and the baseline made from them as ``labels()`` made it before the neck and snap steps
   (threshold, paint written in, ``keep_connected`` seeded by the paint / largest component for
   another scan's support), cropped to that baseline's box plus 30 mm, with the raw image, the
   truth and the paint, in /tmp/napari_tpm_probe_graphcut/<case>|<mode>|<organ>.npz.
2. ``sweep``: from the cache only, ``graph_cut`` at each weight x sigma scale x log-odds bound,
   the paint as forced foreground (same scan), the baseline as the box, then the same
   connectivity filter; ``--neck 0.25`` also puts both through the session's neck cut
   (``napari_tpm.necks``, as ``labels()`` does from commit d51e72a). Mean Dice per set and mode.
3. ``live``: one setting, sessions run again: the cut goes through the session's own 3D steps
   of the day (``SegmentationSession._clean_3d``: connectivity, neck cut, outline snap) and is
   compared with ``labels(None)``.

Run (2-core CPU):
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/probe_graphcut.py cache --split tune
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/probe_graphcut.py sweep --split tune
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/probe_graphcut.py sweep --split tune --neck 0.25 \
        --weights 2 4 8 16 --sigma-scales 0.5 1 2 --detail
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/probe_graphcut.py live --split tune \
        --weights 8 --sigma-scales 1
    (then the one chosen setting once with --split holdout: cache, sweep, live)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import accuracy_cases as ac
from bench_accuracy import build_jobs

CACHE = Path("/tmp/napari_tpm_probe_graphcut")
MODES = ["same", "cross"]
SETS = ["sabs_ct", "chaos_t2spir"]
CROP_MM = 30.0


def _crop_box(mask: np.ndarray, spacing) -> tuple[slice, ...] | None:
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        return None
    return tuple(
        slice(
            max(int(i.min()) - math.ceil(CROP_MM / sp), 0),
            int(i.max()) + math.ceil(CROP_MM / sp) + 1,
        )
        for i, sp in zip(idx, spacing)
    )


def cache(split: str) -> None:
    import torch

    from napari_tpm.postprocess import keep_connected
    from napari_tpm.session import SegmentationSession

    torch.manual_seed(0)
    CACHE.mkdir(exist_ok=True)
    for case in ac.select_cases(split, SETS):
        image, labels, spacing = case.load()
        jobs = build_jobs(case, labels, MODES, list(ac.ORGANS), [1])
        todo = [j for j in jobs if not (CACHE / f"{case.name}|{j.key}.npz").exists()]
        if not todo:
            continue
        t0 = time.perf_counter()
        session = SegmentationSession("default", device="cpu")
        session.set_image(image, spacing)
        for job in todo:
            for _ in session.segment(
                job.paint, support_image=job.image, support_spacing=job.spacing
            ):
                pass
            p = session.auto_prior()
            session_default = session.labels(None) > 0  # whatever the session's code does now
            # the baseline, independent of the session's 3D clean-up of the day: labels()'s
            # threshold (scores > -logit(prior)), the paint written in, connected to the paint
            fg = (np.asarray(session.scores()) > -math.log(p / (1 - p))).astype(np.uint8)
            own = job.paint if job.image is None else None
            if own is not None:
                fg[own > 0] = 1
            default = keep_connected(fg, own) > 0
            truth = labels == case.values[job.organs[0]]
            box = _crop_box(default, spacing)
            if box is None:
                box = tuple(slice(0, 0) for _ in range(3))
            log_odds = np.asarray(session.scores())[box] + math.log(p / (1 - p))
            # the exact equivalent of labels(): > 0 on the log-odds, before connectivity
            np.savez_compressed(
                CACHE / f"{case.name}|{job.key}.npz",
                image=image[box].astype(np.float32),
                log_odds=log_odds.astype(np.float32),
                default=default[box],
                truth=truth[box],
                paint=(job.paint[box] > 0) if job.image is None else np.zeros(0, bool),
                truth_total=int(truth.sum()),
                default_dice=ac.dice(default, truth),
                session_dice=ac.dice(session_default, truth),
                spacing=np.asarray(spacing),
                prior=p,
            )
        print(f"{case.name}: {len(todo)} jobs, {time.perf_counter() - t0:.0f} s", flush=True)


def _radii(case: ac.CaseSpec) -> dict[str, float]:
    """Inscribed radius (mm) of each job's paint, which sets the session's neck radius."""
    from napari_tpm.necks import inscribed_radius_mm

    path = CACHE / f"{case.name}.radius.json"
    if path.exists():
        return json.loads(path.read_text())
    _, labels, spacing = case.load()
    out = {}
    for job in build_jobs(case, labels, MODES, list(ac.ORGANS), [1]):
        plane_mm = (job.spacing or spacing)[1:]  # the paint lies on axial slices (axis 0)
        out[job.key] = max(inscribed_radius_mm(job.paint[z] > 0, plane_mm) for z in job.slices)
    path.write_text(json.dumps(out))
    return out


def _dice(pred: np.ndarray, truth: np.ndarray, truth_total: int) -> float:
    total = int(pred.sum()) + truth_total
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, truth).sum() / total)


def sweep(
    split: str, weights, scales, bounds, margin: float, neck: float, detail: bool = False
) -> None:
    """``neck`` > 0: both the baseline and the cut go through the session's neck cut."""
    from accuracy_graphcut import graph_cut

    from napari_tpm.necks import cut_necks, neck_radius_mm
    from napari_tpm.postprocess import keep_connected

    settings = list(product(weights, scales, bounds))
    rows: dict[tuple, list[float]] = {}
    organs: dict[tuple, list[float]] = {}  # (set, mode, organ, setting) -> Dice
    times: list[float] = []
    cut_times: list[float] = []
    for case in ac.select_cases(split, SETS):
        radii = _radii(case) if neck > 0 else {}
        for path in sorted(CACHE.glob(f"{case.name}|*.npz")):
            mode, organ = path.stem.split("|")[1:]
            if mode not in MODES:
                continue
            z = np.load(path)
            truth, total = z["truth"], int(z["truth_total"])
            key = (case.set, mode)
            paint = z["paint"] if z["paint"].size else None
            seeds = None if paint is None else paint.astype(np.uint8)
            spacing = tuple(float(v) for v in z["spacing"])
            assert abs(_dice(z["default"], truth, total) - float(z["default_dice"])) < 1e-9
            r = neck_radius_mm(radii[f"{mode}|{organ}"], neck) if neck > 0 else 0.0

            def post(fg: np.ndarray, r: float = r, seeds=seeds, spacing=spacing) -> np.ndarray:
                out = keep_connected(fg.astype(np.uint8), seeds)
                if r > 0:  # the session's neck cut, in its order (after connectivity)
                    out = cut_necks(out, seeds, spacing, {1: r})
                return out > 0

            base = _dice(post(z["default"]), truth, total) if z["default"].any() else 0.0
            rows.setdefault((*key, "default"), []).append(base)
            organs.setdefault((*key, organ, "default"), []).append(base)
            if "session_dice" in z:
                rows.setdefault((*key, "session"), []).append(float(z["session_dice"]))
            if z["default"].size == 0 or not z["default"].any():
                for st in settings:
                    rows.setdefault(key + st, []).append(base)
                    organs.setdefault((*key, organ, *st), []).append(base)
                continue
            for w, sc, b in settings:
                s = z["log_odds"] if b is None else np.clip(z["log_odds"], -b, b)
                t0 = time.perf_counter()
                cut = graph_cut(
                    s,
                    z["image"],
                    spacing,
                    weight=w,
                    sigma=1e12 if sc is None else None,
                    sigma_scale=1.0 if sc is None else sc,
                    bbox_margin_mm=margin,
                    region=z["default"],
                    seeds=paint,
                )
                cut_times.append(time.perf_counter() - t0)
                cut = post(cut)
                times.append(time.perf_counter() - t0)
                d = _dice(cut, truth, total)
                rows.setdefault((*key, w, sc, b), []).append(d)
                organs.setdefault((*key, organ, w, sc, b), []).append(d)
        print(f"{case.name} done [{sum(times):.0f} s of cuts]", file=sys.stderr, flush=True)
    keys = sorted({k[:2] for k in rows})
    print(
        f"\nsplit {split}; mean Dice (n per cell in the header); per organ and setting: cut "
        f"mean {np.mean(cut_times):.2f} s (max {np.max(cut_times):.2f}), cut + connectivity "
        f"mean {np.mean(times):.2f} s (max {np.max(times):.2f})\n"
    )
    print(
        "| setting | "
        + " | ".join(f"{s} {m} ({len(rows[(s, m, 'default')])})" for s, m in keys)
        + " | mean |"
    )
    print("|---" * (len(keys) + 2) + "|")
    extra = [("session",)] if all((*k, "session") in rows for k in keys) else []
    for st in [*extra, ("default",), *settings]:
        vals = [np.mean(rows[k + st]) for k in keys]
        name = (
            {
                "default": "baseline: threshold, paint, connected" + (", neck" if neck else ""),
                "session": "(session's labels(None) at cache time)",
            }[st[0]]
            if isinstance(st[0], str)
            else (
                f"w={st[0]}, sigma x{st[1] if st[1] is not None else ' inf (no edge term)'}, "
                f"bound {st[2] if st[2] is not None else 'none'}"
            )
        )
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {np.mean(vals):.3f} |")
    if detail:
        _detail(organs, keys, settings)


def _detail(organs: dict, keys: list, settings: list) -> None:
    """Per organ: default vs each setting, and how many organ-cases got better / worse."""
    print(
        "\n| set | mode | organ | n | default | "
        + " | ".join(f"w={w} sx{sc} b{b}" for w, sc, b in settings)
        + " |"
    )
    print("|---" * (5 + len(settings)) + "|")
    for s, m in keys:
        for organ in ac.ORGANS:
            base = organs.get((s, m, organ, "default"))
            if not base:
                continue
            cells = []
            for st in settings:
                new = np.asarray(organs[(s, m, organ, *st)])
                diff = new - np.asarray(base)
                up, down = int((diff > 0.005).sum()), int((diff < -0.005).sum())
                cells.append(f"{new.mean():.3f} (+{up}/-{down})")
            print(
                f"| {s} | {m} | {organ} | {len(base)} | {np.mean(base):.3f} | "
                + " | ".join(cells)
                + " |"
            )


def live(split: str, weight: float, scale: float, margin: float) -> None:
    """The cut under the session's own 3D clean-up of the day, against its ``labels(None)``.

    Runs the sessions again (no cache): the cut's result goes through the same steps
    ``labels()`` applies after its threshold (``SegmentationSession._clean_3d`` where the
    session has it: connectivity, neck cut, outline snap; else ``keep_connected``), then the
    paint is written in, as ``labels()`` does.
    """
    import torch
    from accuracy_graphcut import graph_cut

    from napari_tpm.postprocess import keep_connected
    from napari_tpm.session import SegmentationSession

    torch.manual_seed(0)
    rows: dict[tuple, list[float]] = {}
    times: list[float] = []
    cut_times: list[float] = []
    for case in ac.select_cases(split, SETS):
        image, labels, spacing = case.load()
        session = SegmentationSession("default", device="cpu")
        session.set_image(image, spacing)
        for job in build_jobs(case, labels, MODES, list(ac.ORGANS), [1]):
            for _ in session.segment(
                job.paint, support_image=job.image, support_spacing=job.spacing
            ):
                pass
            truth = labels == case.values[job.organs[0]]
            default = session.labels(None)
            p = session.auto_prior()
            own = job.paint > 0 if job.image is None else None
            t0 = time.perf_counter()
            cut = graph_cut(
                np.asarray(session.scores()) + math.log(p / (1 - p)),
                image,
                spacing,
                weight=weight,
                sigma_scale=scale,
                bbox_margin_mm=margin,
                region=session.labels(None, connected=True) > 0,
                seeds=own,
            ).astype(default.dtype)
            cut_times.append(time.perf_counter() - t0)
            cut *= session.label_values[0]
            clean = getattr(session, "_clean_3d", None)
            if clean is not None:
                clean(cut)  # slice axis 0 here: the view is the array itself
            else:
                cut = keep_connected(cut, None if own is None else job.paint)
            if own is not None:
                cut[own] = session.label_values[0]
            times.append(time.perf_counter() - t0)
            key = (case.set, job.mode)
            rows.setdefault((*key, "default"), []).append(ac.dice(default > 0, truth))
            rows.setdefault((*key, "cut"), []).append(ac.dice(cut > 0, truth))
        print(f"{case.name} done", file=sys.stderr, flush=True)
    keys = sorted({k[:2] for k in rows})
    print(f"\nsplit {split}, session options {session.options}")
    print(
        f"per organ, full volume: cut {np.mean(cut_times):.2f} s mean, {np.max(cut_times):.2f} s "
        f"max; cut + clean-up {np.mean(times):.2f} s mean, {np.max(times):.2f} s max\n"
    )
    print("| | " + " | ".join(f"{s} {m} ({len(rows[(s, m, 'cut')])})" for s, m in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for what, name in (("default", "session labels(None)"), ("cut", f"cut w={weight} sx{scale}")):
        print(f"| {name} | " + " | ".join(f"{np.mean(rows[(*k, what)]):.3f}" for k in keys) + " |")


def _num(text: str):
    return None if text.lower() in ("none", "inf") else float(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("phase", choices=("cache", "sweep", "live"))
    ap.add_argument("--split", choices=("tune", "holdout"), default="tune")
    ap.add_argument("--weights", nargs="+", type=float, default=[0.5, 1, 2, 4])
    ap.add_argument("--sigma-scales", nargs="+", type=_num, default=[1.0, 4.0, None])
    ap.add_argument("--bounds", nargs="+", type=_num, default=[None])
    ap.add_argument("--margin-mm", type=float, default=10.0)
    ap.add_argument("--neck", type=float, default=0.0, help="the session's neck fraction (0.25)")
    ap.add_argument("--detail", action="store_true", help="per-organ table with wins/losses")
    args = ap.parse_args()
    if args.phase == "cache":
        cache(args.split)
    elif args.phase == "live":
        live(args.split, args.weights[0], args.sigma_scales[0], args.margin_mm)
    else:
        sweep(
            args.split,
            args.weights,
            args.sigma_scales,
            args.bounds,
            args.margin_mm,
            args.neck,
            args.detail,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
