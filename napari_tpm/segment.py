"""Command line: segment a whole volume from one painted slice.

    python -m napari_tpm.segment IMAGE --support-labels LABELS --out OUT [options]

This is a stable contract that scripts rely on: bad input exits with status 2 and one line on
stderr that names the problem, and OUT is only written when everything succeeded.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from napari_tpm._cli import (
    EXIT_BAD_INPUT,
    BadInput,
    Interrupted,
    interrupts_as_exit,
    one_line,
    os_error_line,
)
from napari_tpm._segment_parser import build_parser
from napari_tpm.options import SegmentOptions
from napari_tpm.segment_checks import (
    check_inputs_fit_memory,
    check_intensities,
    check_label_values,
)


def _drain(gen: Iterator, quiet: bool, desc: str) -> None:
    """Run a Progress generator to the end behind a tqdm bar on stderr."""
    from tqdm import tqdm

    bar = None
    try:
        for prog in gen:
            if quiet:
                continue
            if bar is None:
                bar = tqdm(total=prog.total, desc=desc, unit="slice", file=sys.stderr, leave=False)
            bar.total = prog.total
            bar.n = prog.done
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()


def _atomic_write(path: Path, array: np.ndarray, like) -> None:
    """Write OUT atomically and verified (`write_volume`): complete, or the old file kept."""
    from napari_tpm.io import VolumeError, write_volume

    try:
        write_volume(path, array, like)
    except VolumeError as err:
        raise BadInput(f"{err}; {path} was not changed") from None


def _check_out_path(path: str | None, flag: str) -> Path | None:
    """Refuse an unusable output path before any work: folder, missing or read-only folder."""
    from napari_tpm.atomic import OutputError, check_writable_folder, clean_stale_partials

    if path is None:
        return None
    out = Path(path).expanduser()
    if out.is_dir():
        raise BadInput(f"{flag} {path} is a folder; give a file name such as result.nii.gz")
    if not any(str(out).lower().endswith(e) for e in (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")):
        raise BadInput(f"{flag} {path}: use a .nii, .nii.gz, .nrrd, .mha or .mhd file name")
    try:
        check_writable_folder(out.parent, flag)
    except OutputError as err:
        raise BadInput(str(err)) from None
    clean_stale_partials(out)  # temporaries a killed earlier run left behind
    return out


def _check_outputs_spare_inputs(args: argparse.Namespace) -> None:
    """No output may overwrite an input or another output (symlinks and hard links resolved)."""
    from napari_tpm.atomic import OutputError, check_not_input

    inputs = {
        "IMAGE": args.image,
        "--support-labels": args.support_labels,
        "--support-image": args.support_image,
    }
    outputs = {"--out": args.out, "--probabilities": args.probabilities}
    if args.save_adapted is not None:
        outputs["--save-adapted"] = args.save_adapted
    try:
        for i, (flag, path) in enumerate(outputs.items()):
            if path is None:
                continue
            earlier = dict(list(outputs.items())[:i])
            check_not_input(path, flag, {**inputs, **earlier})
    except OutputError as err:
        raise BadInput(str(err)) from None


def run(args: argparse.Namespace) -> dict:
    """Do the work for parsed arguments; raise BadInput for user errors. Returns a summary."""
    from napari_tpm.contrast import DOUBTFUL_FIT, describe_step, is_unchanged
    from napari_tpm.io import VolumeError, read_volume, require_same_grid
    from napari_tpm.session import SegmentationSession, SupportError, VolumeTooLargeError

    if args.image is None or args.support_labels is None or args.out is None:
        raise BadInput("IMAGE, --support-labels and --out are required (or use --demo)")
    _check_outputs_spare_inputs(args)
    out = _check_out_path(args.out, "--out")
    prob_out = _check_out_path(args.probabilities, "--probabilities")
    if args.save_adapted is not None:
        if args.adapt_steps is None:
            raise BadInput("--save-adapted needs --adapt-steps N")
        from napari_tpm.atomic import OutputError, check_writable_folder

        try:
            check_writable_folder(Path(args.save_adapted).expanduser().parent, "--save-adapted")
        except OutputError as err:
            raise BadInput(str(err)) from None
    try:
        check_inputs_fit_memory(args)
        image = read_volume(args.image, series=args.series)
        support_image = (
            read_volume(args.support_image, series=args.series) if args.support_image else image
        )
        paint = read_volume(args.support_labels)
        require_same_grid(support_image, paint, "--support-labels")
    except VolumeError as err:
        raise BadInput(str(err)) from None
    check_label_values(paint.array, args.support_labels)
    check_intensities(image.array, "IMAGE", args.modality)
    reoriented = ""
    if support_image is not image:
        check_intensities(support_image.array, "--support-image", args.modality)
        from napari_tpm.orientation import support_like

        support_image, paint, reoriented = support_like(support_image, paint, image)

    t0 = time.perf_counter()
    try:
        from napari_tpm.zoo import DEFAULT, default_for_image

        checkpoint = args.checkpoint
        if checkpoint == DEFAULT:  # the registry's default for this image's modality
            checkpoint = default_for_image(image.array, args.modality)
        session = SegmentationSession(
            checkpoint,
            device=args.device,
            batch_size=args.batch_size,
            options=SegmentOptions.from_pairs(args.option),
        )
        # check_intensities above already refused a constant or overflowing IMAGE, with the
        # CLI's wording and before the model was loaded: the session need not pass over it again
        session.set_image(image.array, image.spacing, modality=args.modality, check_range=False)
        if args.adapt_steps is not None:
            from napari_tpm.adapt import check_adaptable, run_adaptation_for_cli

            check_adaptable(session.model)
            run_adaptation_for_cli(
                session, image.array, image.spacing, args.adapt_steps, args.save_adapted, args.quiet
            )
        _drain(
            session.segment(
                paint.array,
                support_image=None if support_image is image else support_image.array,
                support_spacing=support_image.spacing,
                n_prototypes=args.prototypes,
            ),
            args.quiet,
            "segment",
        )
        labels = session.labels(
            args.prior,
            z_range=tuple(args.range) if args.range else None,
            connected=args.connected,
        )
        prior = session.auto_prior() if args.prior is None else args.prior
        probs = session.probabilities(prior) if prob_out is not None else None
    except (SupportError, VolumeTooLargeError, VolumeError) as err:
        raise BadInput(str(err)) from None
    except ValueError as err:  # checkpoint, device and input checks all raise ValueError
        raise BadInput(str(err)) from None
    seconds = time.perf_counter() - t0

    _atomic_write(out, labels, image)
    if probs is not None:
        _atomic_write(prob_out, probs.astype(np.float32), image)
    return {
        "seconds": seconds,
        "prior": prior,
        "labels": session.label_values,
        "voxels": {int(v): int((labels == v).sum()) for v in session.label_values},
        "model": session.model.name,
        "device": str(session.device),
        "encoder_calls": session.encoder_calls,
        "second_pass_slices": session.support_slices if session.bootstrapped else (),
        "paint_on_image": support_image is image,
        "support_reoriented": reoriented,
        "contrast_steps": {
            int(v): describe_step(step)
            for v, step in session.contrast_steps.items()
            if not is_unchanged(step)
        },
        "fit_scores": {int(v): round(float(f), 3) for v, f in session.fit_scores.items()},
        "doubtful_labels": session.doubtful_labels,
        "doubtful_below": DOUBTFUL_FIT,
        "small_sections": {int(v): round(a, 1) for v, a in session.small_sections.items()},
        "pole_slices": session.pole_slices,
        "completed": dict(session.completed),
    }


def run_demo(folder: str, args: argparse.Namespace) -> dict:
    """Segment a synthetic abdomen from one painted slice and report Dice per organ."""
    from napari_tpm.io import Volume, write_volume
    from napari_tpm.phantom import make_phantom

    ph = make_phantom(seed=7)
    target = {1: "spleen", 2: "right kidney", 3: "left kidney", 5: "liver"}
    organs = np.isin(ph.labels, list(target)) * ph.labels
    # paint the axial slice that shows the most target organs, as a user would, where the
    # smallest of them is widest: an organ's pole is too small a section to paint from
    # (napari_tpm.paint_size)
    shown = np.stack([(organs == v).sum(axis=(1, 2)) for v in target], axis=1)
    z = int(np.lexsort((shown.min(axis=1), (shown > 0).sum(axis=1)))[-1])
    paint = np.zeros_like(organs)
    paint[z] = organs[z]
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    like = Volume(np.asarray(ph.image), tuple(ph.spacing))
    write_volume(out_dir / "image.nii.gz", ph.image, like)
    write_volume(out_dir / "support.nii.gz", paint.astype(np.uint8), like)
    write_volume(out_dir / "truth.nii.gz", organs.astype(np.uint8), like)
    args.image = str(out_dir / "image.nii.gz")
    args.support_labels = str(out_dir / "support.nii.gz")
    args.out = str(out_dir / "result.nii.gz")
    args.connected = True  # what a user would tick: organs are single 3D regions
    summary = run(args)
    from napari_tpm.io import read_volume

    result = read_volume(args.out).array
    dice = {}
    for value, name in target.items():
        if value in summary["labels"]:
            a, b = result == value, organs == value
            dice[name] = 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)
    summary["dice"] = dice
    summary["folder"] = str(out_dir)
    summary["painted_slice"] = z
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a bad flag already reported on one line
        return int(exc.code or 0)
    try:
        with interrupts_as_exit():
            summary = run_demo(args.demo, args) if args.demo is not None else run(args)
    except BadInput as err:
        print(f"{parser.prog}: error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print(f"{parser.prog}: error: out of memory; try --batch-size 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # e.g. --demo DIR on a read-only disk
        print(f"{parser.prog}: error: {os_error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as stop:
        print(f"{parser.prog}: {stop}; no output was written or changed", file=sys.stderr)
        return stop.code
    if not args.quiet:
        print(
            f"segmented labels {list(summary['labels'])} with model '{summary['model']}' on "
            f"{summary['device']} in {summary['seconds']:.1f} s at prior {summary['prior']:.3f}; "
            f"wrote {args.out}",
            file=sys.stderr,
        )
        if summary.get("second_pass_slices"):
            slices = list(summary["second_pass_slices"])
            why, option = (
                ("paint at the organ's end", "end_second_pass")
                if summary.get("paint_on_image")
                else ("paint from another volume", "bootstrap")
            )
            print(
                f"  {why}: segmented again from this volume's slice(s) {slices} of the first "
                f"result (--option {option}=false turns this off)",
                file=sys.stderr,
            )
        if summary.get("support_reoriented"):
            print(
                "  --support-image and --support-labels reordered to IMAGE's axes "
                f"({summary['support_reoriented']}): the files store their voxels differently",
                file=sys.stderr,
            )
        if summary.get("contrast_steps"):
            changed = ", ".join(f"{s} (label {v})" for v, s in summary["contrast_steps"].items())
            print(
                "  contrast search: the painted intensities fit this scan best changed by "
                f"{changed} (--option contrast_search=false keeps them)",
                file=sys.stderr,
            )
        from napari_tpm.scribble import completed_message

        for v, slices in summary.get("completed", {}).items():
            print(f"  {completed_message(v, slices)}", file=sys.stderr)
        from napari_tpm.contrast import doubt_message

        for v in summary.get("doubtful_labels", ()):
            print(f"  warning: {doubt_message(v, summary['fit_scores'][v])}", file=sys.stderr)
        from napari_tpm.paint_size import small_section_message

        poles = summary.get("pole_slices", {})
        for v, area in summary.get("small_sections", {}).items():
            said = small_section_message(v, area, poles.get(v))
            print(f"  warning: {said}", file=sys.stderr)
        if "dice" in summary:
            for name, d in summary["dice"].items():
                print(f"  Dice {name:13s} {d:.3f}", file=sys.stderr)
            print(f"  files in {summary['folder']}/ (open them in napari)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
