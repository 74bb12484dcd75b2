"""Command line for self-supervised training, dataset preparation and supervoxel caching.

    python -m napari_tpm.train [train] DATA... --out RUN_DIR [options]
    python -m napari_tpm.train prepare chaos|synapse SRC DST
    python -m napari_tpm.train supervoxels DATA... [--min-size N]
    torchrun --nproc_per_node N -m napari_tpm.train train DATA... --out RUN_DIR [options]

Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

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
    first_line,
    interrupts_as_exit,
    one_line,
    os_error_line,
)
from napari_tpm.train._cli_volumes import load_volumes
from napari_tpm.train._parser import COMMANDS, build_parser

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
        if args.time_limit is not None and dist.world_size > 1:
            raise BadInput("--time-limit needs one process: ranks would stop at different steps")
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
        limit_s = None if args.time_limit is None else 60.0 * args.time_limit
        _drain(trainer.run(limit_s), quiet, "train")
        if trainer.stopped_early and dist.is_main:
            print(
                f"time limit reached at step {trainer.step}/{config.steps}: the model is "
                "exported as trained so far; the same command with --resume continues",
                file=sys.stderr,
            )
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
