"""Dataset adapters that reproduce the paper's preprocessing (tpm-method.md sections 2.1, 2.2).

``python -m napari_tpm.train prepare chaos|synapse SRC DST`` turns the public downloads into a
folder of ``image_<id>.nii.gz`` / ``label_<id>.nii.gz`` pairs, the layout that training and
``napari_tpm.evaluate`` read. Labels keep each dataset's own values for the four target organs
(CHAOS: 1 liver, 2 right kidney, 3 left kidney, 4 spleen; Synapse/BTCV: 6 liver, 2 right
kidney, 3 left kidney, 1 spleen); other BTCV organs are dropped unless asked for.

Deliberate differences from the SSL-ALPNet notebooks, both about geometry only:

* CHAOS DICOM is read with SimpleITK instead of the old ``dcm2nii``; each ground-truth PNG is
  paired with the DICOM file of the same name (or the same rank of its trailing number), so the
  vertical flip the notebook needed to undo dcm2nii's row order is not needed here.
* Synapse is resampled to exactly 256 x 256 in-plane and keeps its slice count; the notebook's
  ``int(size * ratio + 1)`` rule gave 257 x 257 and one extra, empty slice.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_tpm.progress import Progress

#: CHAOS ground-truth grey values -> label (CHAOS documentation: liver 63, right kidney 126,
#: left kidney 189, spleen 252; each stored within a small band around those values).
CHAOS_GREY_LEVELS: dict[int, int] = {63: 1, 126: 2, 189: 3, 252: 4}
CHAOS_SPACING_XYZ: tuple[float, float, float] = (1.25, 1.25, 7.70)
CHAOS_SIZE = 256

SYNAPSE_WINDOW: tuple[float, float] = (-125.0, 275.0)
SYNAPSE_CROP = 32
SYNAPSE_ZOOM = 1.75  # 448 / 256
#: The four evaluated BTCV organs: spleen 1, right kidney 2, left kidney 3, liver 6.
SYNAPSE_TARGETS: tuple[int, ...] = (1, 2, 3, 6)


def _trailing_number(path: Path) -> int:
    numbers = re.findall(r"\d+", path.stem)
    if not numbers:
        raise ValueError(f"no number in file name {path.name!r}")
    return int(numbers[-1])


# --------------------------------------------------------------------------- shared geometry


def resample(
    image: sitk.Image,
    spacing_xyz: tuple[float, ...],
    size_xyz: tuple[int, ...],
    *,
    interpolator: int = sitk.sitkLinear,
    default: float = 0.0,
) -> sitk.Image:
    """Resample onto a grid with the same origin and direction, new spacing and size."""
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing([float(s) for s in spacing_xyz])
    f.SetSize([int(s) for s in size_xyz])
    f.SetOutputOrigin(image.GetOrigin())
    f.SetOutputDirection(image.GetDirection())
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(float(default))
    f.SetOutputPixelType(sitk.sitkFloat32)
    return f.Execute(image)


def resample_labels(
    labels: sitk.Image, spacing_xyz: tuple[float, ...], size_xyz: tuple[int, ...]
) -> sitk.Image:
    """Each label as a float mask, resampled linearly and rounded, overwritten in label order."""
    arr = sitk.GetArrayFromImage(labels)
    out: np.ndarray | None = None
    for value in np.unique(arr):
        if value == 0:
            continue
        mask = sitk.GetImageFromArray((arr == value).astype(np.float32))
        mask.CopyInformation(labels)
        res = sitk.GetArrayFromImage(resample(mask, spacing_xyz, size_xyz))
        if out is None:
            out = np.zeros(res.shape, dtype=np.uint8)
        out[np.rint(res) >= 1] = value
    if out is None:
        ref = resample(labels, spacing_xyz, size_xyz, interpolator=sitk.sitkNearestNeighbor)
        out = np.zeros(sitk.GetArrayFromImage(ref).shape, dtype=np.uint8)
    img = sitk.GetImageFromArray(out)
    img.SetSpacing([float(s) for s in spacing_xyz])
    img.SetOrigin(labels.GetOrigin())
    img.SetDirection(labels.GetDirection())
    return img


def centre_crop_or_pad(image: sitk.Image, size_xy: int, pad_value: float) -> sitk.Image:
    """Crop or pad x and y symmetrically about the array centre to ``size_xy``."""
    size = list(image.GetSize())
    lower, upper = [0, 0, 0], [0, 0, 0]
    crop_lo, crop_hi = [0, 0, 0], [0, 0, 0]
    for axis in (0, 1):
        diff = size_xy - size[axis]
        if diff > 0:
            lower[axis], upper[axis] = diff // 2, diff - diff // 2
        elif diff < 0:
            crop_lo[axis], crop_hi[axis] = (-diff) // 2, (-diff) - (-diff) // 2
    if any(crop_lo) or any(crop_hi):
        image = sitk.Crop(image, crop_lo, crop_hi)
    if any(lower) or any(upper):
        image = sitk.ConstantPad(image, lower, upper, float(pad_value))
    return image


def _write(image: sitk.Image, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    sitk.WriteImage(image, str(tmp), useCompression=True)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- CHAOS


@dataclass(frozen=True)
class ChaosCase:
    pid: int
    dicom_dir: Path
    ground_dir: Path


def find_chaos_cases(src: str | os.PathLike) -> list[ChaosCase]:
    """Every ``<pid>/T2SPIR`` with DICOM files and a ``Ground`` folder under ``src``."""
    cases = []
    for t2 in sorted(Path(src).rglob("T2SPIR")):
        ground = t2 / "Ground"
        dicom = next((d for d in sorted(t2.iterdir()) if d.is_dir() and any(d.glob("*.dcm"))), None)
        if dicom is None or not ground.is_dir():
            continue
        try:
            pid = int(t2.parent.name)
        except ValueError:
            continue
        cases.append(ChaosCase(pid, dicom, ground))
    return sorted(cases, key=lambda c: c.pid)


def chaos_grey_to_label(grey: np.ndarray) -> np.ndarray:
    """Map CHAOS PNG grey values to labels 0..4 by the nearest nominal level."""
    levels = np.array([0, *CHAOS_GREY_LEVELS])
    values = np.array([0, *CHAOS_GREY_LEVELS.values()], dtype=np.uint8)
    g = np.asarray(grey, dtype=np.int32)
    if g.ndim == 3:  # RGB(A) PNG: take the first channel
        g = g[..., 0]
    nearest = np.abs(g[..., None] - levels).argmin(-1)
    return values[nearest]


def read_chaos_case(case: ChaosCase) -> tuple[sitk.Image, sitk.Image]:
    """The T2-SPIR series and its label map on the same grid."""
    import imageio.v3 as iio

    reader = sitk.ImageSeriesReader()
    files = list(reader.GetGDCMSeriesFileNames(str(case.dicom_dir)))
    if not files:
        raise ValueError(f"{case.dicom_dir}: no DICOM series")
    reader.SetFileNames(files)
    image = reader.Execute()
    pngs = {p.stem: p for p in case.ground_dir.glob("*.png")}
    if len(pngs) != len(files):
        raise ValueError(
            f"patient {case.pid}: {len(files)} DICOM slices but {len(pngs)} ground-truth PNGs"
        )
    by_rank = sorted(pngs.values(), key=_trailing_number)
    by_number = sorted(files, key=lambda f: _trailing_number(Path(f)))
    dicom_rank = {f: r for r, f in enumerate(by_number)}
    slices = []
    for f in files:
        png = pngs.get(Path(f).stem) or by_rank[dicom_rank[f]]
        slices.append(chaos_grey_to_label(iio.imread(png)))
    labels = sitk.GetImageFromArray(np.stack(slices).astype(np.uint8))
    if labels.GetSize() != image.GetSize():
        raise ValueError(
            f"patient {case.pid}: label size {labels.GetSize()} differs from {image.GetSize()}"
        )
    labels.CopyInformation(image)
    return image, labels


def normalise_chaos(image: sitk.Image, labels: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """Clip the top 0.5 %, resample to 1.25 x 1.25 x 7.7 mm, centre-crop/pad to 256 x 256."""
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    arr = np.minimum(arr, np.percentile(arr, 99.5))
    clipped = sitk.GetImageFromArray(arr)
    clipped.CopyInformation(image)
    old_size, old_spacing = image.GetSize(), image.GetSpacing()
    size = [int(n * s / t + 1) for n, s, t in zip(old_size, old_spacing, CHAOS_SPACING_XYZ)]
    img = resample(clipped, CHAOS_SPACING_XYZ, size, default=float(arr.min()))
    lab = resample_labels(labels, CHAOS_SPACING_XYZ, size)
    img = centre_crop_or_pad(img, CHAOS_SIZE, float(arr.min()))
    lab = centre_crop_or_pad(lab, CHAOS_SIZE, 0)
    return img, lab


def prepare_chaos(src: str | os.PathLike, dst: str | os.PathLike) -> Iterator[Progress]:
    """Prepare every CHAOS T2-SPIR case under ``src`` into ``dst``; yields one Progress each."""
    cases = find_chaos_cases(src)
    if not cases:
        raise ValueError(f"no CHAOS <pid>/T2SPIR folders with DICOM and Ground found in {src}")
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(cases):
        img, lab = normalise_chaos(*read_chaos_case(case))
        _write(img, out / f"image_{case.pid}.nii.gz")
        _write(lab, out / f"label_{case.pid}.nii.gz")
        yield Progress(i + 1, len(cases), "prepare", info={"case": case.pid})


# --------------------------------------------------------------------------- Synapse / BTCV


def find_synapse_cases(src: str | os.PathLike) -> list[tuple[Path, Path]]:
    """``img/img*.nii.gz`` with matching ``label/label*.nii.gz``, sorted by file name."""
    pairs = []
    for img_dir in sorted(Path(src).rglob("img")):
        lab_dir = img_dir.parent / "label"
        if not lab_dir.is_dir():
            continue
        for img in sorted(img_dir.glob("img*.nii*")):
            number = re.findall(r"\d+", img.name)[-1]
            lab = next(iter(sorted(lab_dir.glob(f"label{number}.nii*"))), None)
            if lab is not None:
                pairs.append((img, lab))
    return sorted(pairs, key=lambda p: p[0].name)


def normalise_synapse(
    image: sitk.Image, labels: sitk.Image, *, keep_all_labels: bool = False
) -> tuple[sitk.Image, sitk.Image]:
    """Window to [-125, 275] HU, rescale to [0, 255], crop 32 px per side, zoom spacing x1.75."""
    arr = np.clip(sitk.GetArrayFromImage(image).astype(np.float32), *SYNAPSE_WINDOW)
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    scaled = sitk.GetImageFromArray(arr.astype(np.float32))
    scaled.CopyInformation(image)
    lab_arr = sitk.GetArrayFromImage(labels)
    if not keep_all_labels:
        lab_arr = np.where(np.isin(lab_arr, SYNAPSE_TARGETS), lab_arr, 0)
    lab = sitk.GetImageFromArray(lab_arr.astype(np.uint8))
    lab.CopyInformation(labels)
    c = SYNAPSE_CROP
    if min(image.GetSize()[:2]) <= 2 * c:
        raise ValueError(f"in-plane size {image.GetSize()[:2]} is too small to crop {c} px")
    scaled = sitk.Crop(scaled, [c, c, 0], [c, c, 0])
    lab = sitk.Crop(lab, [c, c, 0], [c, c, 0])
    sx, sy, sz = scaled.GetSpacing()
    nx, ny, nz = scaled.GetSize()
    spacing = (sx * SYNAPSE_ZOOM, sy * SYNAPSE_ZOOM, sz)
    size = (round(nx / SYNAPSE_ZOOM), round(ny / SYNAPSE_ZOOM), nz)
    return resample(scaled, spacing, size), resample_labels(lab, spacing, size)


def prepare_synapse(
    src: str | os.PathLike, dst: str | os.PathLike, *, keep_all_labels: bool = False
) -> Iterator[Progress]:
    """Prepare the BTCV training CTs under ``src`` as ``image_0..`` in file-name order."""
    pairs = find_synapse_cases(src)
    if not pairs:
        raise ValueError(f"no img/img*.nii.gz with label/label*.nii.gz found in {src}")
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    for i, (img_path, lab_path) in enumerate(pairs):
        image = sitk.ReadImage(str(img_path))
        labels = sitk.ReadImage(str(lab_path))
        img, lab = normalise_synapse(image, labels, keep_all_labels=keep_all_labels)
        _write(img, out / f"image_{i}.nii.gz")
        _write(lab, out / f"label_{i}.nii.gz")
        yield Progress(i + 1, len(pairs), "prepare", info={"case": img_path.name})


PREPARERS: dict[str, Callable[..., Iterator[Progress]]] = {
    "chaos": prepare_chaos,
    "synapse": prepare_synapse,
}
