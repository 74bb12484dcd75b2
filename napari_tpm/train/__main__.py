"""Command line for self-supervised training, dataset preparation and supervoxel caching.

    python -m napari_tpm.train [train] DATA... --out RUN_DIR [options]
    python -m napari_tpm.train prepare chaos|synapse SRC DST
    python -m napari_tpm.train supervoxels DATA... [--min-size N]
    torchrun --nproc_per_node N -m napari_tpm.train train DATA... --out RUN_DIR [options]

Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from napari_tpm._cli import (
    EXIT_BAD_INPUT,
    BadInput,
    Interrupted,
    OneLineParser,
    first_line,
    interrupts_as_exit,
    non_negative_int,
    one_line,
    os_error_line,
    positive_int,
)
from napari_tpm.train._cli_volumes import load_volumes

COMMANDS = ("train", "prepare", "supervoxels")

EXAMPLES = """\
examples:
  # the paper's ABD-MRI setting: prepare CHAOS, train TPM (ResNet-101 from ImageNet) on fold 0
  python -m napari_tpm.train prepare chaos CHAOS_Train_Sets/ data/chaos
  python -m napari_tpm.train train data/chaos --holdout chaos:0 --init resnet101-63fe2227.pth \\
      --out runs/chaos/fold0 --device cuda --amp --workers 8

  # any folder of unlabelled CT/MR volumes, a light encoder, 4 GPUs
  torchrun --nproc_per_node 4 -m napari_tpm.train train scans/ --encoder resnet18 --out runs/mine

  # resume a killed run (same command line plus --resume)
  python -m napari_tpm.train train data/chaos --holdout chaos:0 --out runs/chaos/fold0 --resume

  # fine-tune a shipped model on your own scans, multi-foreground episodes
  python -m napari_tpm.train train scans/ --from-checkpoint default --steps 2000 \\
      --max-classes 5 --out runs/finetune

  # a quick smoke run on synthetic phantoms, no data needed
  python -m napari_tpm.train train --phantoms 4 --encoder resnet18-l3 --steps 50 --out runs/demo
"""


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="*", help="volume files, DICOM folders or folders of them")
    p.add_argument("--size", type=positive_int, default=256, help="working grid (default 256)")
    p.add_argument("--modality", choices=("auto", "ct", "mr"), default="auto")
    p.add_argument(
        "--normalisation",
        choices=("zscore", "robust"),
        default="zscore",
        help="intensity map of the model: per-volume z-score (the paper's) or the fixed "
        "per-modality map of the filter bank (robust; what the hybrid encoder is trained with)",
    )
    p.add_argument(
        "--sv-min-size",
        type=positive_int,
        default=None,
        help="supervoxel minimum size in voxels (default: 5000 for MR, 2000 for CT, as the paper)",
    )
    p.add_argument("--cache-dir", default=None, help="supervoxel cache (default: beside the data)")
    p.add_argument(
        "--exclude",
        action="append",
        default=None,
        metavar="GLOB",
        help="skip files matching GLOB (default: names with label/seg/mask/...)",
    )
    p.add_argument("--include", action="append", default=[], metavar="GLOB")
    p.add_argument(
        "--holdout",
        default=None,
        metavar="DATASET:FOLD",
        help="leave out a fold of a prepared paper dataset, e.g. chaos:0 or synapse:3",
    )
    p.add_argument(
        "--exclude-label-values",
        default=None,
        metavar="V,V",
        help="setting 2: drop every training slice whose label map (label_<id> beside "
        "image_<id>) shows one of these values, e.g. 2,3 to hold out the kidneys",
    )
    p.add_argument(
        "--phantoms",
        type=positive_int,
        default=None,
        metavar="N",
        help="train on N synthetic phantoms instead of data (smoke tests, demos)",
    )
    p.add_argument("--phantom-shape", default="48,128,128", help="z,y,x of the phantoms")


def build_parser() -> argparse.ArgumentParser:
    from napari_tpm.encoders import ENCODER_NAMES

    p = OneLineParser(
        prog="python -m napari_tpm.train",
        description="Self-supervised TPM training on supervoxel episodes (no labels needed).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    t = sub.add_parser(
        "train",
        help="train a model",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _data_options(t)
    t.add_argument("--out", required=True, help="run folder (checkpoints, log, model)")
    t.add_argument("--export", default=None, help="exported model path (default RUN_DIR/model.pt)")
    t.add_argument("--encoder", choices=ENCODER_NAMES, default="resnet101")
    t.add_argument("--init", default="none", help="'none' or a torchvision ImageNet .pth file")
    t.add_argument(
        "--from-checkpoint",
        default=None,
        metavar="NAME_OR_PATH",
        help="fine-tune this model (zoo name or file) instead of a fresh encoder",
    )
    t.add_argument(
        "--mode",
        choices=("tpm", "adnet"),
        default="tpm",
        help="adnet adds the threshold loss (weight 1)",
    )
    t.add_argument(
        "--head",
        choices=("tpm", "dspnet", "mper"),
        default="tpm",
        help="scoring head: TPM (default) or a compared DSPNet-/MPER-style head (tpm/heads.py)",
    )
    t.add_argument("--steps", type=non_negative_int, default=50_000)
    t.add_argument("--batch-size", type=positive_int, default=1, help="episodes per step")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument(
        "--max-classes",
        type=positive_int,
        default=1,
        help="foreground supervoxels per episode (5 for multi-class training)",
    )
    t.add_argument("--min-support-px", type=positive_int, default=200)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--trainable", choices=("all", "last"), default="all")
    t.add_argument(
        "--workers", type=non_negative_int, default=0, help="DataLoader worker processes"
    )
    t.add_argument("--seed", type=int, default=2021)
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU or bf16 CPU)")
    t.add_argument("--channels-last", action="store_true")
    t.add_argument("--checkpoint-every", type=positive_int, default=1000)
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    t.add_argument(
        "--analysis-episodes",
        type=non_negative_int,
        default=1000,
        help="episodes for fitting AvgEst/LinEst after training (0: skip)",
    )
    t.add_argument(
        "--prototypes",
        type=positive_int,
        default=5,
        help="prototypes of the multi-prototype estimators",
    )
    t.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    pr = sub.add_parser("prepare", help="prepare CHAOS or Synapse like the paper")
    pr.add_argument("dataset", choices=("chaos", "synapse"))
    pr.add_argument("src")
    pr.add_argument("dst")
    pr.add_argument(
        "--keep-all-labels",
        action="store_true",
        help="Synapse: keep all 13 BTCV organs, not only the four targets",
    )

    sv = sub.add_parser("supervoxels", help="compute and cache supervoxels")
    _data_options(sv)
    return p


# --------------------------------------------------------------------------- helpers


def _drain(progress: Iterator, quiet: bool, desc: str, initial: int = 0):
    """Run a Progress generator under a tqdm bar (it/s and ETA); returns the last Progress."""
    last = None
    if quiet:
        for item in progress:
            last = item
        return last
    from tqdm import tqdm

    bar = None
    try:
        for last in progress:
            if bar is None:
                bar = tqdm(
                    total=last.total,
                    initial=max(0, last.done - 1),
                    desc=desc,
                    unit="it",
                    dynamic_ncols=True,
                    smoothing=0.05,
                )
            bar.update(last.done - bar.n)
            info = last.info or {}
            if "loss" in info:
                bar.set_postfix(
                    loss=f"{info['loss']:.3f}",
                    lr=f"{info.get('lr', 0):.2e}",
                    t_d=f"{info.get('t_d', 0):.3f}",
                    refresh=False,
                )
    finally:
        if bar is not None:
            bar.close()
    return last


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    import platform

    import numpy
    import torch

    import napari_tpm

    # str(): torch's version is a str subclass that weights_only loading refuses
    return {
        "napari_tpm": str(napari_tpm.__version__),
        "torch": str(torch.__version__),
        "numpy": str(numpy.__version__),
        "python": str(platform.python_version()),
    }


# --------------------------------------------------------------------------- commands


def cmd_train(args) -> int:
    import torch

    from napari_tpm.train.analysis import fit_estimators
    from napari_tpm.train.checkpointing import check_run_dir, read_resume_state
    from napari_tpm.train.ddp import (
        barrier,
        init_distributed,
        parameters_in_sync,
        resolve_device,
        shutdown,
    )
    from napari_tpm.train.runlog import plot_losses
    from napari_tpm.train.setup import new_model
    from napari_tpm.train.trainer import TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(
        encoder=args.encoder,
        init=None if args.init == "none" else args.init,
        from_checkpoint=args.from_checkpoint,
        mode=args.mode,
        head=args.head,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_classes=args.max_classes,
        min_support_px=args.min_support_px,
        augment=not args.no_augment,
        seed=args.seed,
        normalisation=args.normalisation,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        workers=args.workers,
        trainable=args.trainable,
        checkpoint_every=args.checkpoint_every,
        analysis_episodes=args.analysis_episodes,
        analysis_prototypes=args.prototypes,
    )
    if config.init and not Path(config.init).is_file():
        raise BadInput(f"--init file not found: {config.init}")
    run_dir = check_run_dir(args.out, args.export)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    resume_state = read_resume_state(run_dir, config, main_rank) if args.resume else None
    try:
        device = resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError as err:
        raise BadInput(str(err)) from None
    dist = init_distributed(device)
    try:
        volumes = load_volumes(args, dist)
        torch.manual_seed(config.seed + dist.rank)
        try:
            model = new_model(config)
        except ValueError as err:  # --init or --from-checkpoint: first line, not torch's essay
            raise BadInput(first_line(err)) from None
        trainer = Trainer(
            model, volumes, config, run_dir=run_dir, dist=dist, export_path=args.export
        )
        if resume_state is not None:
            try:
                trainer.resume(state=resume_state)
            except ValueError as err:
                raise BadInput(f"--resume: {first_line(err)}") from None
            del resume_state
        quiet = args.quiet or not dist.is_main
        if dist.is_main:
            print(
                f"{len(volumes)} volumes, encoder {config.encoder}, device {trainer.device}, "
                f"{dist.world_size} process(es), step {trainer.step}/{config.steps}",
                file=sys.stderr,
            )
        _drain(trainer.run(), quiet, "train")
        if not parameters_in_sync(trainer.net, dist, trainer.device):
            raise RuntimeError("DDP ranks ended with different weights")
        barrier(dist)
        if dist.is_main:
            if config.analysis_episodes and config.head == "tpm":  # TPM distances only
                model.estimators = fit_estimators(
                    model,
                    volumes,
                    config.analysis_episodes,
                    n_prototypes=config.analysis_prototypes,
                    max_classes=config.max_classes,
                    seed=config.seed,
                    device=trainer.device,
                    episode_config=config.episode_config(),
                )
            model.calibrated = True
            training = model.card.setdefault("training", {})
            training["versions"] = _versions()
            training["git_commit"] = _git_commit()
            training["calibrated_with_episodes"] = config.analysis_episodes
            path = trainer.export()
            log = run_dir / "losses.csv"
            if log.is_file() and log.stat().st_size > 0:
                with contextlib.suppress(ValueError, OSError):  # the plot is a convenience
                    plot_losses(log, run_dir / "losses.png")
            print(f"model written to {path}", file=sys.stderr)
        barrier(dist)
    finally:
        shutdown(dist)
    return 0


def cmd_prepare(args) -> int:
    from napari_tpm.train.prepare import prepare_chaos, prepare_synapse

    if not Path(args.src).is_dir():
        raise BadInput(f"{args.src}: not a folder")
    try:
        if args.dataset == "chaos":
            progress = prepare_chaos(args.src, args.dst)
        else:
            progress = prepare_synapse(args.src, args.dst, keep_all_labels=args.keep_all_labels)
        last = _drain(progress, False, f"prepare {args.dataset}")
    except ValueError as err:
        raise BadInput(str(err)) from None
    print(f"{last.done if last else 0} volumes written to {args.dst}", file=sys.stderr)
    return 0


def cmd_supervoxels(args) -> int:
    import numpy as np

    from napari_tpm.train.ddp import DistInfo

    start = time.perf_counter()
    volumes = load_volumes(args, DistInfo())
    for v in volumes:
        sizes = np.bincount(v.supervoxels.ravel())[1:]
        sizes = sizes[sizes > 0]
        print(
            f"{v.name}: {v.image.shape}, {len(sizes)} supervoxels, median size "
            f"{int(np.median(sizes)) if len(sizes) else 0}"
        )
    print(f"{len(volumes)} volumes in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "train")  # `python -m napari_tpm.train DATA --out RUN` means train
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"train": cmd_train, "prepare": cmd_prepare, "supervoxels": cmd_supervoxels}
    try:
        with interrupts_as_exit():
            return commands[args.command](args)
    except BadInput as err:
        print(f"{parser.prog}: error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # a full disk, a folder gone read-only, a vanished file...
        line = os_error_line(err, getattr(args, "out", None))
        print(f"{parser.prog}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as stop:  # last.pt holds the last completed checkpoint
        print(f"{parser.prog}: {stop}; resume with --resume", file=sys.stderr)
        return stop.code


if __name__ == "__main__":
    sys.exit(main())
