"""Accuracy of napari-tpm vs a one-slice random forest, on every labelled development volume.

Issue 10's measuring stick. In one run, for each case (volume) and organ (liver, right kidney,
left kidney, spleen) it paints the organ's true mask on axial slices (axis 0 as read by
``napari_tpm.io``) and scores the 3D Dice of

* **TPM**: ``napari_tpm.session.SegmentationSession`` with default settings (model "default",
  ``labels(prior=None)``, i.e. the auto prior; no connectivity filter, as the CLI's default),
  plus whatever ``--session-opt`` adds;
* **RF**: the ilastik-style random forest anchor of ``accuracy_forest.py`` (cached on disk).

Modes (the support):

* ``same``: the organ's middle labelled slice of the same scan. ``--slices 1 2 3`` also runs
  ``same-2sl`` (+ the slice at 3/4 of the organ's labelled slices) and ``same-3sl`` (+ the one
  at 1/4), all painted slices stacked into one support-label volume; a session that refuses
  several slices is recorded as n/a.
* ``cross``: the organ's middle slice of the next volume of the same set and split group
  (cyclic), passed as ``support_image``. ``--partners all`` takes every other volume of the
  group in turn (all ordered pairs: more pairs to tune on; both cross modes).
  ``--cross-slices 1 2 3`` also runs ``cross-2sl`` and ``cross-3sl``: that volume's organ painted
  on ``same-2sl``'s and ``same-3sl``'s slices.
* ``multi``: all four organs painted at once on the one slice showing the most of them (ties:
  largest summed area); organs absent from that slice are not scored in this mode.
* ``alone``: each of those organs painted by itself on that same slice, segmented alone: the
  single-organ figure the joint ``multi`` result is compared with.
* ``ends``: one slice painted near each end of the organ, at 15 % (``same-lo``) and 85 %
  (``same-hi``) of its labelled slices: what a user gets who paints away from the middle.
  ``--ends-at 0.1 0.25 0.75 0.9`` paints at those fractions instead (modes ``same-at10``...).
* ``near``: the organ painted on a slice next to its middle one, 2 and 1 slices below it
  (``same-m2``, ``same-m1``) and above it (``same-p1``, ``same-p2``) in axis-0 order: a user
  seldom paints the exact middle, and four more paints per organ measure how much a result
  depends on which slice it was.
* ``rough``: the middle slice painted imprecisely, three ways (``accuracy_cases.rough_paint``):
  ``same-grown`` 2.5 mm over the organ's edge all round, ``same-shrunk`` 2.5 mm inside it,
  ``same-jitter`` the outline moved in and out by up to 2.5 mm along its length. The other
  modes paint the exact outline, which no user draws.
* ``fix``: the middle slice, then one correction as a user makes it (``same-fix1``,
  ``accuracy_cases.correction``): a background stroke along the largest wrongly included
  region on its widest slice, or the outline on the slice missing most of the organ, whichever
  error is larger (none when both stay under 5 % of the organ), and the paint segmented again
  with it. TPM only: the forest takes every unpainted pixel of a painted slice as background.
* ``partial``: the middle slice marked without outlining the organ
  (``accuracy_cases.partial_paint``): ``same-stroke`` a 3 mm brush along the organ's middle line,
  ``same-line`` one straight stroke through its centre along its long axis, ``same-dab`` one
  8 mm disc at its deepest point, each kept inside the organ. TPM only, as ``fix``.
* ``cross-multi``: ``multi``'s slice and paint taken from the ``cross`` partner (all four
  organs of another patient at once); organs absent from the query are not scored.
* ``axes``: the organ's middle slice along the volume's second and third axes
  (``same-cor``, ``same-sag``: coronal and sagittal on these scans), as a user painting in
  napari's coronal or sagittal view does. The forest learns and predicts along that axis.

Splits: tune on ``--split tune`` only, report ``--split holdout`` (see accuracy_cases.py; the
TotalSegmentator and AMOS volumes are always held out). Dice is over the whole volume; an organ
absent from the query (or from the support) is skipped.

Run (2-core CPU: use nice, one torch thread):
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_accuracy.py --split holdout \
        [--sets sabs_ct chaos_t2spir] [--modes same cross multi] [--slices 1 2 3] \
        [--organs liver spleen] [--limit 2] [--model default] [--methods tpm forest] \
        [--session-opt key=value ...] [--label "what changed"] [--no-write]
``--session-opt`` values of ``SegmentOptions`` fields are typed as the CLI's ``--option`` types
them (``bootstrap=false``), others are Python literals (else strings); each key goes to whichever of
``SegmentationSession(...)``, ``set_image``, ``segment`` or ``labels`` accepts it, so new options
can be A/B-tested without editing this file. Writes a section to benchmarks/RESULTS-accuracy.md
(appended) and the per-case rows to benchmarks/RESULTS-accuracy.csv (overwritten).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import accuracy_cases as ac
import accuracy_forest as af
import accuracy_report as ar
from accuracy_jobs import ENDS, MODES, Job, build_jobs, ends_modes


def score(pred: np.ndarray, labels: np.ndarray, case: ac.CaseSpec, job: Job) -> dict:
    """Dice per organ of ``job`` from a prediction whose value k is ``job.organs[k - 1]``."""
    out = {}
    for k, organ in enumerate(job.organs, 1):
        truth = labels == case.values[organ]
        if truth.any():
            target = pred > 0 if len(job.organs) == 1 else pred == k
            out[organ] = ac.dice(target, truth)
    return out


# ---------------------------------------------------------------------------------- TPM
def run_tpm(image, spacing, labels, case, jobs, model, opts) -> tuple[dict, dict, float]:
    """Dice and fit score per (job key, organ) with one session (features encoded once).

    The fit score (``session.fit_scores``, another volume's paint only) is how well the result
    fits the paint; the CSV keeps it so a doubt threshold can be chosen from a run.
    """
    from napari_tpm.session import SegmentationSession, SupportError

    t0 = time.perf_counter()
    session = SegmentationSession(model, device="cpu", **opts["init"])
    session.set_image(image, spacing, **opts["set_image"])
    results: dict[tuple[str, str], float | None] = {}
    fits: dict[tuple[str, str], float] = {}
    for job in jobs:
        try:
            for _ in session.segment(
                job.paint,
                support_image=job.image,
                support_spacing=job.spacing,
                **opts["segment"],
            ):
                pass
        except SupportError as err:
            if len(job.slices) < 2:
                raise
            print(f"  {case.name} {job.key}: n/a ({err})", file=sys.stderr)
            for organ in job.organs:
                results[(job.key, organ)] = None
            continue
        label_opts = dict(opts["labels"])
        prior = label_opts.pop("prior", None)
        pred = session.labels(prior, **label_opts)
        organ_truth = labels == case.values[job.organs[0]] if job.correct else None
        if organ_truth is not None and _corrected(session, job, pred, organ_truth, spacing):
            pred = session.labels(prior, **label_opts)
        for organ, d in score(pred, labels, case, job).items():
            results[(job.key, organ)] = d
        for k, organ in enumerate(job.organs, 1):  # paint value k is job.organs[k - 1]
            if k in session.fit_scores:
                fits[(job.key, organ)] = float(session.fit_scores[k])
    return results, fits, time.perf_counter() - t0


def _corrected(session, job: Job, pred: np.ndarray, truth: np.ndarray, spacing) -> bool:
    """The ``fix`` mode: segment ``job.paint`` again with one correction of ``pred``'s worst
    error (:func:`accuracy_cases.correction`); False when none is needed. ``job.corrected``
    says which it was."""
    from napari_tpm.session import BACKGROUND_LABEL

    fix = ac.correction(pred > 0, truth, spacing)
    if fix is None:
        job.corrected = "none"
        return False
    kind, z, mask = fix
    paint = job.paint.copy()
    paint[z][mask] = BACKGROUND_LABEL if kind == "bg" else 1
    job.corrected = f"{kind}@{z}"
    for _ in session.segment(paint):
        pass
    return True


def route_session_options(pairs: list[str]) -> dict[str, dict]:
    """Send each ``key=value`` to the session call whose signature accepts ``key``."""
    import ast
    import inspect

    from napari_tpm.options import SegmentOptions
    from napari_tpm.session import SegmentationSession as S

    # the session's accuracy knobs arrive through **overrides: route them to the constructor
    options = {f.name for f in dataclasses.fields(SegmentOptions)}

    targets = {
        "init": S.__init__,
        "set_image": S.set_image,
        "segment": S.segment,
        "labels": S.labels,
    }
    routed: dict[str, dict] = {name: {} for name in targets}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"--session-opt needs key=value, got {pair!r}")
        if key in options:  # typed as the CLI types it ("false" is False, not a string)
            value = getattr(SegmentOptions.from_mapping({key: text}), key)
        else:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        for name, fn in targets.items():
            if key in inspect.signature(fn).parameters or (name == "init" and key in options):
                routed[name][key] = value
                break
        else:
            raise SystemExit(
                f"--session-opt {key}: no session call takes it ({', '.join(targets)})"
            )
    return routed


# ------------------------------------------------------------------------------- forest
def _support_digest(job: Job) -> str:
    """ "" for paint on the query; for another volume's, a digest of its image and paint, so
    that a cached forest is not reused once that support changes (e.g. reordered axes)."""
    if job.image is None:
        return ""
    h = hashlib.sha1(np.ascontiguousarray(job.paint).tobytes())
    h.update(np.ascontiguousarray(job.image[job.slices]).tobytes())
    return "|" + h.hexdigest()[:10]


def run_forest(image, labels, case, jobs, cache: af.ForestCache, cfg) -> tuple[dict, float]:
    """Dice per (job key, organ), from the cache when every row of this case is there."""
    jobs = [job for job in jobs if not job.tpm_only]  # fix and partial are TPM's (accuracy_jobs)
    wanted = [(job, organ) for job in jobs for organ in job.organs if organ in case.values]
    keys = {(j.key, o): f"{case.name}|{j.key}|{o}{_support_digest(j)}" for j, o in wanted}
    if all(cache.get(k)[0] for k in keys.values()):
        # None: an organ the support does not paint; left out, as a fresh run leaves it out
        cached = {jk: cache.get(k)[1] for jk, k in keys.items()}
        return {jk: d for jk, d in cached.items() if d is not None}, 0.0
    t0 = time.perf_counter()
    preds = {}
    # the forest learns and predicts slice by slice: paint along another axis (the ``axes``
    # mode) is run on the volume turned so that axis comes first, and turned back
    for axis in sorted({job.axis for job in jobs}):
        fjobs = [
            af.ForestJob(
                job.key,
                np.moveaxis(image if job.image is None else job.image, axis, 0),
                np.moveaxis(job.paint, axis, 0),
            )
            for job in jobs
            if job.axis == axis
        ]
        turned = af.predict(np.moveaxis(image, axis, 0), fjobs, cfg)
        preds.update({key: np.moveaxis(pred, 0, axis) for key, pred in turned.items()})
    results = {}
    for job in jobs:
        for organ, d in score(preds[job.key], labels, case, job).items():
            results[(job.key, organ)] = d
    for jk, k in keys.items():
        cache.put(k, results.get(jk))
    cache.save()
    return results, time.perf_counter() - t0


# --------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--split", choices=ac.SPLITS, default="holdout")
    ap.add_argument("--sets", nargs="+", choices=ac.SETS, default=list(ac.SETS))
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--slices", nargs="+", type=int, choices=(1, 2, 3), default=[1, 2, 3])
    ap.add_argument(
        "--cross-slices",
        nargs="+",
        type=int,
        choices=(1, 2, 3),
        default=[1],
        help="the cross mode's painted slice counts (2, 3: modes cross-2sl, cross-3sl)",
    )
    ap.add_argument(
        "--organs",
        nargs="+",
        choices=ac.ALL_ORGANS,
        default=list(ac.ORGANS),
        help="structures to paint one at a time (default: the four target organs); the "
        "multi modes always paint the four",
    )
    ap.add_argument(
        "--ends-at",
        nargs="+",
        type=float,
        default=list(ENDS.values()),
        metavar="FRACTION",
        help="the ends mode's paint positions, fractions of the organ's labelled slices",
    )
    ap.add_argument("--limit", type=int, default=None, help="at most N cases per set")
    ap.add_argument(
        "--partners",
        choices=("next", "all"),
        default="next",
        help="cross modes: the next volume of the group, or every other one in turn",
    )
    ap.add_argument("--model", default="default")
    ap.add_argument("--methods", nargs="+", choices=("tpm", "forest"), default=["tpm", "forest"])
    ap.add_argument("--session-opt", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--forest-stride", type=int, default=2)
    ap.add_argument("--data", type=Path, default=ac.DATA, help="the shared data folder")
    ap.add_argument("--measured", default="", help="override the 'commit <sha>' description")
    ap.add_argument("--label", default="", help="what this run measures (goes in the heading)")
    ap.add_argument("--out", default=str(ac.ROOT / "benchmarks" / "RESULTS-accuracy.md"))
    ap.add_argument("--csv", default=str(ac.ROOT / "benchmarks" / "RESULTS-accuracy.csv"))
    ap.add_argument("--no-write", action="store_true", help="print only; write no file")
    args = ap.parse_args(argv)
    try:
        args.ends = ends_modes(args.ends_at)  # mode name -> fraction, checked once
    except ValueError as err:
        ap.error(str(err))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.data.is_dir():
        print(f"no development data at {args.data}", file=sys.stderr)
        return 1
    import torch

    torch.manual_seed(0)
    opts = route_session_options(args.session_opt)
    cfg = af.ForestConfig(stride=args.forest_stride)
    cache = af.ForestCache(cfg)
    cases = ac.select_cases(args.split, args.sets, args.limit, args.data)
    rows: list[dict] = []
    times = {"tpm": 0.0, "forest": 0.0}
    t_start = time.perf_counter()
    for case in cases:
        image, labels, spacing = case.load()
        jobs = build_jobs(
            case,
            labels,
            args.modes,
            args.organs,
            args.slices,
            args.data,
            args.partners == "all",
            args.ends,
            (spacing[1], spacing[2]),
            tuple(args.cross_slices),
        )
        tpm, fits, forest = {}, {}, {}
        if "tpm" in args.methods:
            tpm, fits, secs = run_tpm(image, spacing, labels, case, jobs, args.model, opts)
            times["tpm"] += secs
        if "forest" in args.methods:
            forest, fsecs = run_forest(image, labels, case, jobs, cache, cfg)
            times["forest"] += fsecs
        for job in jobs:
            for organ in job.organs:
                jk = (job.key, organ)
                if organ not in args.organs or (jk not in tpm and jk not in forest):
                    continue
                rows.append(
                    {
                        "case": case.name,
                        "set": case.set,
                        "split": case.split,
                        "mode": job.mode,
                        "organ": organ,
                        "support": job.support,
                        "slices": " ".join(map(str, job.slices))
                        + (f" {job.corrected}" if job.corrected else ""),
                        "tpm": tpm.get(jk),
                        "forest": forest.get(jk),
                        "fit": fits.get(jk),
                    }
                )
        done = [r for r in rows if r["case"] == case.name]
        t_mean = np.mean([r["tpm"] for r in done if r["tpm"] is not None] or [np.nan])
        f_mean = np.mean([r["forest"] for r in done if r["forest"] is not None] or [np.nan])
        print(
            f"{case.name:16s} {len(jobs):2d} supports  TPM {t_mean:.3f}  RF {f_mean:.3f}  "
            f"[{time.perf_counter() - t_start:.0f} s]",
            file=sys.stderr,
            flush=True,
        )
    times["total"] = time.perf_counter() - t_start
    text = ar.report(rows, args, times, cfg)
    print(ar.summary(rows))
    if not args.no_write:
        with open(args.out, "a") as fh:
            fh.write(text)
        ar.write_csv(rows, args.csv)
        print(f"appended to {args.out}; per-case rows in {args.csv}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
