"""Command line: reproduce the paper's evaluation, or measure any structure on your own data.

    python -m napari_tpm.evaluate paper --dataset chaos --data DIR --checkpoints PATTERN ...
    python -m napari_tpm.evaluate generic --images DIR --labels DIR --classes liver=6 ...

Bad input exits with status 2 and one line on stderr; see docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from napari_tpm._cli import (
    EXIT_BAD_INPUT,
    BadInput,
    Interrupted,
    OneLineParser,
    interrupts_as_exit,
    one_line,
    os_error_line,
    positive_int,
)
from napari_tpm.options import SegmentOptions

EXAMPLES = """\
examples:
  # your own data: liver and spleen, support painted in each volume itself (EP2)
  python -m napari_tpm.evaluate generic --images imgs/ --labels labs/ \\
      --classes liver=6,spleen=1 --checkpoint default --out eval/

  # support from another volume (round robin), EP1, also the multi-class table
  python -m napari_tpm.evaluate generic --images imgs/ --labels labs/ --classes liver=6,spleen=1 \\
      --checkpoint my.pt --support other --protocol EP1 --multiclass --out eval/

  # the paper: CHAOS, 5 folds x 3 runs, setting 1, ADNet and multi-foreground checkpoints
  python -m napari_tpm.evaluate paper --dataset chaos --data prepared/chaos \\
      --checkpoints 'runs/chaos/run{run}/fold{fold}/tpm.pt' --runs 1 2 3 \\
      --adnet-checkpoint 'runs/chaos/run{run}/fold{fold}/adnet.pt' \\
      --mf-checkpoints 'runs/chaos/run{run}/fold{fold}/tpm_mf.pt' --out eval/chaos
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--protocol",
        choices=("EP1", "EP2"),
        default="EP2",
        type=str.upper,
        help="EP2: middle labelled support slice, whole query volume (the paper's); "
        "EP1: three support slices, labelled query slices in three chunks",
    )
    p.add_argument(
        "--prototypes",
        type=positive_int,
        nargs="+",
        default=[1, 5],
        help="prototype counts per class to evaluate (default: 1 5)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("evaluation"),
        help="output folder (results.md, tables.csv, per_volume.json, PNG figure)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="slices per encoder call")
    p.add_argument(
        "--modality",
        choices=("auto", "ct", "mr"),
        default="auto",
        help="intensity normalisation (default: guessed per volume)",
    )
    p.add_argument("--seed", type=int, default=0, help="tie-breaking of the multi-class slice")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a session option (napari_tpm.options.SegmentOptions) over the protocol's plain "
        "TPM (connected=false, refine=0, refine_atlas=0, bootstrap=false), e.g. refine_atlas=2; "
        "repeatable",
    )
    p.add_argument(
        "--product",
        action="store_true",
        help="add rows to Table 1 and Table 2 for what the CLI and the dock write from the same "
        "support (the session's default options, auto prior and post-processing); segments "
        "each case twice",
    )
    p.add_argument(
        "--product-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a session option over the product's defaults for the --product rows (implies "
        "--product), e.g. contrast_search=false to measure that step; repeatable",
    )


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m napari_tpm.evaluate",
        description="Evaluate the Tied Prototype Model: the paper's protocol (Tables 1 and 2) "
        "on CHAOS / Synapse, or any labelled volumes of your own.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    g = sub.add_parser(
        "generic",
        help="your own images and label maps",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("--images", nargs="+", required=True, help="image folder(s) or files")
    g.add_argument("--labels", nargs="+", required=True, help="label-map folder(s) or files")
    g.add_argument(
        "--classes",
        required=True,
        help="structures to measure as name=label, e.g. liver=6,spleen=1",
    )
    g.add_argument("--checkpoint", default="default", help="model name or checkpoint file")
    g.add_argument(
        "--support",
        choices=("same", "other"),
        default="same",
        help="paint the support slice in the query itself (same) or in the next "
        "volume that shows the structure (other)",
    )
    g.add_argument("--image-pattern", default="*", help="glob for image files in folders")
    g.add_argument("--label-pattern", default="*", help="glob for label files in folders")
    g.add_argument("--adnet-checkpoint", default=None, help="ADNet-mode checkpoint (extra row)")
    g.add_argument(
        "--multiclass",
        action="store_true",
        help="also segment all classes jointly (Table 2) with the max-rule baseline",
    )
    g.add_argument("--mf-checkpoint", default=None, help="multi-foreground trained checkpoint")
    _common(g)

    from napari_tpm.evaluate.datasets import DATASETS

    q = sub.add_parser("paper", help="CHAOS / Synapse with the paper's folds")
    q.add_argument(
        "--dataset",
        choices=tuple(DATASETS),
        required=True,
        help="chaos, synapse: the prepared full sets, 5 folds; sabs_ct, chaos_t2spir: the "
        "development subsets as stored in shared/data, 2 folds (0 = held-out half)",
    )
    q.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with image_<id>/label_<id> volumes (or its prepared subfolder); for "
        "sabs_ct / chaos_t2spir the folder of sabs_NN_ct / chaos_t2_NN_mr files or its parent",
    )
    q.add_argument(
        "--checkpoints",
        required=True,
        help="binary checkpoint per fold, e.g. 'runs/run{run}/fold{fold}/model.pt'; "
        "placeholders {fold} {run} {setting} {group}",
    )
    q.add_argument("--runs", type=int, nargs="+", default=[1], help="run numbers for {run}")
    q.add_argument("--folds", type=int, nargs="+", default=None, help="folds (default: all)")
    q.add_argument(
        "--setting",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: models trained on all slices; 2: trained without the slices of the "
        "test classes, one model per {group} (kidneys, liver_spleen)",
    )
    q.add_argument(
        "--adnet-checkpoint",
        default=None,
        help="pattern of ADNet-mode checkpoints (Table 1 ADNet row, ADNet++)",
    )
    q.add_argument(
        "--mf-checkpoints",
        default=None,
        help="pattern of multi-foreground trained checkpoints (Table 2)",
    )
    q.add_argument("--no-multiclass", action="store_true", help="skip Table 2")
    _common(q)
    return p


def _drain(progress: Iterator, quiet: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=None, disable=quiet, unit="vol", dynamic_ncols=True, file=sys.stderr) as bar:
        for p in progress:
            bar.total = p.total
            bar.n = p.done
            bar.set_description(p.stage[:40])
            bar.refresh()


def _check_patterns(patterns: Sequence[str | None], **fill: Sequence) -> None:
    """Fail before any work when a checkpoint file named by a pattern is missing."""
    from napari_tpm.evaluate.protocols import checkpoint_path, pattern_fields

    for pattern in patterns:
        if not pattern:
            continue
        fields = pattern_fields(pattern)
        if not fields:
            continue  # a zoo name or one file: load_model reports problems itself
        for run in fill["runs"]:
            for fold in fill["folds"]:
                for group in fill["groups"]:
                    path = checkpoint_path(
                        pattern, fold=fold, run=run, setting=fill["setting"], group=group
                    )
                    if not Path(path).is_file():
                        raise BadInput(f"checkpoint {path} (from {pattern!r}) does not exist")


def _segment_options(pairs: list[str]) -> SegmentOptions:
    """The protocol's plain TPM (no connectivity filter, no refinement) with ``--option``s."""
    try:
        return SegmentOptions.from_pairs(
            pairs, {"connected": "false", "refine": "0", "refine_atlas": "0", "bootstrap": "false"}
        )
    except ValueError as err:
        raise BadInput(str(err)) from None


def _product_options(pairs: list[str], asked: bool) -> SegmentOptions | None:
    """The product's own defaults with ``--product-option``s; None without --product or any
    --product-option (no product rows)."""
    if not (asked or pairs):
        return None
    try:
        return SegmentOptions.from_pairs(pairs, {}, flag="--product-option")
    except ValueError as err:
        raise BadInput(str(err)) from None


def _check_out_folder(out: Path) -> None:
    """The report folder must be creatable and writable: checked before the evaluation runs."""
    from napari_tpm.atomic import OutputError, prepare_output_folder

    try:
        prepare_output_folder(out, "--out", "the report")
    except OutputError as err:
        raise BadInput(str(err)) from None


def args_classes(args: argparse.Namespace) -> str:
    """The classes asked for, as the user wrote them (paper mode: the dataset's)."""
    return getattr(args, "classes", None) or getattr(args, "dataset", "")


def _run(args: argparse.Namespace) -> int:
    import torch

    from napari_tpm.evaluate import datasets, report, runner

    if args.threads:
        torch.set_num_threads(args.threads)
    _check_out_folder(args.out)
    options = runner.Options(
        protocol=args.protocol,
        prototypes=tuple(args.prototypes),
        modality=args.modality,
        device=args.device,
        batch_size=args.batch_size,
        seed=args.seed,
        segment=_segment_options(args.option),
        product=_product_options(args.product_option, args.product),
    )
    results = runner.Results()
    start = time.perf_counter()
    if args.command == "generic":
        classes = datasets.parse_classes(args.classes)
        cases = datasets.pair_cases(
            args.images,
            args.labels,
            image_pattern=args.image_pattern,
            label_pattern=args.label_pattern,
        )
        from napari_tpm.zoo import resolve

        progress = runner.run_generic(
            cases,
            classes,
            resolve(args.checkpoint, args.modality),  # "default": the registry's, as the CLI
            results,
            options=options,
            support=args.support,
            adnet_checkpoint=args.adnet_checkpoint,
            multiclass=args.multiclass,
            mf_checkpoint=args.mf_checkpoint,
        )
    else:
        spec = datasets.DATASETS[args.dataset]
        cases = datasets.find_paper_cases(spec, args.data)
        folds = args.folds if args.folds is not None else list(range(len(spec.folds)))
        if any(f < 0 or f >= len(spec.folds) for f in folds):
            raise BadInput(f"folds must lie in 0..{len(spec.folds) - 1}, got {folds}")
        groups = sorted(set(spec.class_groups.values())) if args.setting == 2 else [""]
        _check_patterns(
            [args.checkpoints, args.adnet_checkpoint, args.mf_checkpoints],
            runs=args.runs,
            folds=folds,
            groups=groups,
            setting=args.setting,
        )
        progress = runner.run_paper(
            spec,
            cases,
            args.checkpoints,
            results,
            options=options,
            runs=tuple(args.runs),
            folds=folds,
            setting=args.setting,
            adnet_checkpoints=args.adnet_checkpoint,
            mf_checkpoints=args.mf_checkpoints,
            multiclass=not args.no_multiclass,
        )
    _drain(progress, args.quiet)
    if not results.records:
        why = f" ({one_line(results.notes[0])})" if results.notes else ""
        raise BadInput(
            f"nothing was measured: no volume shows any of the classes {args_classes(args)}"
            f"{why}; check the label values"
        )
    results.meta["seconds"] = round(time.perf_counter() - start, 1)
    results.meta["device"] = args.device
    if options.product is not None:  # the product session: its defaults, or these changes
        results.meta["product_options"] = ", ".join(args.product_option) or "the defaults"
    paths = report.write_report(results, args.out)
    if not args.quiet:
        print(paths["markdown"].read_text(encoding="utf-8"))
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed as one line
        return int(stop.code or 0)
    from napari_tpm.io import VolumeError

    try:
        with interrupts_as_exit():
            return _run(args)
    except (BadInput, VolumeError, ValueError, FileNotFoundError) as err:
        print(f"{parser.prog} {args.command}: error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # the report could not be written (disk full...)
        print(f"{parser.prog} {args.command}: error: {os_error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as stop:
        print(f"{parser.prog} {args.command}: {stop}", file=sys.stderr)
        return stop.code


if __name__ == "__main__":
    sys.exit(main())
