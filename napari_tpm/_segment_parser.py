"""The argument parser of ``python -m napari_tpm.segment`` (its flags, help and examples).

Kept apart from the command's run so each reads on its own: ``segment.py`` checks the inputs,
runs the session and writes the outputs, this module says what can be asked.
"""

from __future__ import annotations

import argparse

from napari_tpm._cli import OneLineParser, positive_int
from napari_tpm.support import DEFAULT_PROTOTYPES

EXAMPLES = """\
examples:
  # one organ painted on one slice of the same scan (label value kept in the output)
  python -m napari_tpm.segment ct.nii.gz --support-labels paint.nii.gz --out liver.nii.gz

  # several organs (labels 1..N on one slice), 5 prototypes each, a fixed class prior
  python -m napari_tpm.segment ct.nii.gz --support-labels paint.nii.gz --out organs.nii.gz \\
      --prototypes 5 --prior 0.3

  # atlas use: the paint lies on another patient's scan; a DICOM series folder as the query
  python -m napari_tpm.segment dicom_folder/ --support-image atlas.nii.gz \\
      --support-labels atlas_paint.nii.gz --out result.nrrd --probabilities prob.nii.gz

  # tune a trained encoder on this very scan first (label-free), and keep the tuned model
  python -m napari_tpm.segment ct.nii.gz --support-labels paint.nii.gz --out liver.nii.gz \\
      --checkpoint resnet18l3-cpu800 --adapt-steps 60 --save-adapted adapted.pt

  # try it without any data: a synthetic abdomen, painted and segmented, Dice printed
  python -m napari_tpm.segment --demo
"""


def _prior(text: str) -> float | None:
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m napari_tpm.segment",
        description=(
            "Segment structures through a whole 3D volume from one painted slice with the Tied "
            "Prototype Model. Paint labels 1..N on a single slice of SUPPORT_IMAGE; every label "
            "is segmented in IMAGE and written to OUT with the same label values and IMAGE's "
            "geometry."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "image",
        nargs="?",
        metavar="IMAGE",
        help="query volume: NIfTI (.nii/.nii.gz), NRRD, MHA/MHD, or a folder with one DICOM series",
    )
    p.add_argument(
        "--support-labels",
        metavar="LABELS",
        help="label volume on SUPPORT_IMAGE's grid whose non-zero voxels all lie on one slice "
        "(e.g. paint.nii.gz); the slice axis is the one along which all paint shares an index",
    )
    p.add_argument("--out", metavar="OUT", help="output label volume (e.g. result.nii.gz)")
    p.add_argument(
        "--support-image",
        metavar="SUPPORT_IMAGE",
        help="volume the paint belongs to (default: IMAGE), e.g. an atlas scan",
    )
    p.add_argument(
        "--series",
        metavar="UID",
        help="DICOM folders holding several series: the SeriesInstanceUID to read (the error "
        "for an ambiguous folder lists them)",
    )
    p.add_argument(
        "--prototypes",
        type=positive_int,
        default=DEFAULT_PROTOTYPES,
        metavar="K",
        help=f"prototypes per class, EM on the painted pixels (default {DEFAULT_PROTOTYPES})",
    )
    p.add_argument(
        "--prior",
        type=_prior,
        default=None,
        metavar="auto|P",
        help="class prior in (0, 1): higher gives larger segmentations; 'auto' (default) uses "
        "the checkpoint's AvgEst/LinEst estimate, or the support-slice calibration (e.g. 0.3)",
    )
    p.add_argument(
        "--checkpoint",
        default="default",
        metavar="NAME_OR_PATH",
        help="model: 'default', 'filterbank' (training-free), a name from models/, or a .pt file",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda", "mps"],
        help="where the encoder runs (default auto: CUDA when available, else CPU)",
    )
    p.add_argument(
        "--probabilities",
        metavar="PROB_OUT",
        help="also write P(foreground) as a float32 volume (e.g. prob.nii.gz)",
    )
    p.add_argument(
        "--connected",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep only 3D regions connected to the paint (largest one for atlas use); on by "
        "default, --no-connected keeps every region",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a segmentation option (napari_tpm.options.SegmentOptions), e.g. refine=2 or "
        "smooth_mm=3; repeatable",
    )
    p.add_argument(
        "--range",
        nargs=2,
        type=int,
        metavar=("FIRST", "LAST"),
        help="only keep slices FIRST..LAST (inclusive) along the painted slice's axis, e.g. 10 80",
    )
    p.add_argument(
        "--modality",
        default="auto",
        choices=["auto", "ct", "mr"],
        help="intensity normalisation: CT window or MR percentile clipping (default: guessed)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="B",
        help="slices per encoder call (default 8 on CPU, 32 on GPU); lower it to save memory",
    )
    p.add_argument(
        "--adapt-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="first tune the encoder on IMAGE itself for N label-free self-supervised steps "
        "(supervoxel episodes; needs a trained checkpoint, not 'filterbank'), e.g. 60",
    )
    p.add_argument(
        "--save-adapted",
        metavar="PATH",
        help="save the adapted model (with its JSON card) to PATH, e.g. adapted.pt",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument(
        "--demo",
        nargs="?",
        const="tpm-demo",
        metavar="DIR",
        help="run on a synthetic abdominal phantom (four organs painted on one slice, regions "
        "connected to the paint kept), write image, paint and result to DIR (default "
        "./tpm-demo) and print the Dice per organ",
    )
    return p
