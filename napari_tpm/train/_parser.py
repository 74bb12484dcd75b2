"""The training command line's parser: data sources, the ``train`` recipe, ``prepare`` and
``supervoxels``.

Kept apart from ``__main__`` (which runs the commands) so that the long option list does not
bury the control flow, as ``_segment_parser`` does for ``segment``.
"""

from __future__ import annotations

import argparse

from napari_tpm._cli import OneLineParser, non_negative_int, positive_float, positive_int

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

  # a fixed budget: stop after 120 minutes, export the model; --resume goes on later
  python -m napari_tpm.train train data/chaos --holdout chaos:0 --out runs/chaos/fold0 \\
      --time-limit 120

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
    t.add_argument(
        "--amp",
        action="store_true",
        help="bfloat16 autocast (GPU, or a CPU with native bf16; elsewhere ignored with a warning)",
    )
    t.add_argument("--channels-last", action="store_true")
    t.add_argument("--checkpoint-every", type=positive_int, default=1000)
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    t.add_argument(
        "--time-limit",
        type=positive_float,
        metavar="MINUTES",
        help="stop after this much training time, checkpoint and export; --resume continues",
    )
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
