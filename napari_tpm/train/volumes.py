"""Training volumes: any folder of CT/MR scans, prepared exactly as the session prepares images.

Self-supervised training needs no labels, only volumes. Each one is intensity-normalised and
resampled in-plane onto the encoder's square working grid with the same code the
`SegmentationSession` uses (`napari_tpm.preprocess`), so the encoder is trained on the very
input distribution it will see when a user paints a slice. Slices stay along axis 0 (z).

Supervoxels are computed on the working-grid image and cached on disk, keyed by the source
file's content hash and every parameter they depend on, so a second run (or another DDP rank)
reuses them instantly.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_tpm.train.supervoxels import cached_supervoxels, compute_supervoxels

#: File endings of volume files (a folder of .dcm files is a DICOM series).
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: File names that look like label maps or derived files, skipped when scanning a folder.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "*label*",
    "*seg*",
    "*mask*",
    "*superpix*",
    "*supervox*",
    "*_gt*",
    "gt_*",
)

#: Supervoxel minimum sizes of the paper (tpm-method.md section 11): MR 5000, CT 2000 voxels.
DEFAULT_MIN_SIZE: dict[str, int] = {"mr": 5000, "ct": 2000}

CACHE_FOLDER = ".napari-tpm-cache"


@dataclass
class TrainingVolume:
    """One prepared training volume.

    Attributes:
        name: short identifier (file stem), used in logs and cache file names.
        image: float32 ``(z, size, size)``, intensity-normalised, on the working grid.
        spacing: ``(z, y, x)`` voxel size in mm of ``image`` (in-plane after resampling).
        supervoxels: int32 ``(z, size, size)`` pseudo-labels, 0 outside the body; None until
            computed.
        source: where it came from (a path, or "" for arrays).
        modality: "ct" or "mr" as used for the normalisation.
    """

    name: str
    image: np.ndarray
    spacing: tuple[float, float, float]
    supervoxels: np.ndarray | None = None
    source: str = ""
    modality: str = "auto"

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[0])


def to_working_volume(
    array: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    size: int = 256,
    modality: str = "auto",
    normalisation: str = "zscore",
) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """Normalise like the session and resample every slice onto the square working grid.

    ``normalisation`` is the model's (``TPMModel.normalisation``): "zscore" as in the paper, or
    "robust", the fixed per-modality map the filter bank uses. Returns the float32
    ``(z, size, size)`` image, its spacing and the modality used. Padding takes the volume
    minimum, as the session's `WorkingGrid.to_working` does.
    """
    import torch

    from napari_tpm.preprocess import WorkingGrid, guess_modality, normalise_intensity

    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {arr.shape}")
    used = guess_modality(arr) if modality == "auto" else modality
    method = {} if normalisation == "zscore" else {"method": normalisation}
    norm = normalise_intensity(arr, used, **method)
    grid = WorkingGrid.fit(arr.shape[1:], spacing[1:], size)
    pad = float(norm.min()) if norm.size else 0.0
    out = np.empty((arr.shape[0], size, size), dtype=np.float32)
    chunk = 32  # bounded memory for long volumes
    with torch.no_grad():
        for start in range(0, arr.shape[0], chunk):
            block = torch.from_numpy(np.ascontiguousarray(norm[start : start + chunk]))[:, None]
            out[start : start + chunk] = grid.to_working(block, pad)[:, 0].numpy()
    ch, cw = grid.content_hw
    (h, w), (sy, sx) = grid.shape_hw, grid.spacing_hw
    new_spacing = (float(spacing[0]), h * sy / ch, w * sx / cw)
    return out, new_spacing, used


def volume_from_array(
    array: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    name: str = "volume",
    size: int = 256,
    modality: str = "auto",
    min_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    content_hash: str | None = None,
    normalisation: str = "zscore",
) -> TrainingVolume:
    """A `TrainingVolume` from an in-memory array (phantoms, tests, the user's own image).

    ``min_size`` None picks the paper's value for the modality; with ``cache_dir`` the
    supervoxels are cached there.
    """
    image, new_spacing, used = to_working_volume(
        array, spacing, size=size, modality=modality, normalisation=normalisation
    )
    ms = DEFAULT_MIN_SIZE.get(used, 5000) if min_size is None else int(min_size)
    if cache_dir is None:
        sv = compute_supervoxels(image, new_spacing, min_size=ms)
    else:
        key = content_hash or _array_digest(array)
        key = hashlib.sha256(f"{key}|{_params(size, used, normalisation)}".encode()).hexdigest()
        sv = cached_supervoxels(
            image, new_spacing, cache_dir, name=name, content_hash=key, min_size=ms
        )
    return TrainingVolume(name, image, new_spacing, sv, "", used)


def _params(size: int, modality: str, normalisation: str) -> str:
    """The preparation parameters in a supervoxel cache key (z-score keys stay as they were)."""
    text = f"size={size}|modality={modality}"
    return text if normalisation == "zscore" else f"{text}|normalisation={normalisation}"


def _array_digest(array: np.ndarray) -> str:
    h = hashlib.sha256(str((array.dtype, array.shape)).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, or of every file in a DICOM folder (sorted by name)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _is_volume_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in VOLUME_SUFFIXES)


def _is_dicom_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    for p in path.iterdir():
        if p.is_file() and (p.suffix.lower() in (".dcm", ".ima") or p.suffix == ""):
            with open(p, "rb") as fh:
                head = fh.read(132)
            if p.suffix.lower() in (".dcm", ".ima") or head[128:132] == b"DICM":
                return True
    return False


def _stem(path: Path) -> str:
    name = path.name
    for s in VOLUME_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def find_volumes(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    include: Sequence[str] = (),
) -> list[Path]:
    """Volume files and DICOM series folders under ``inputs`` (files or folders), naturally sorted.

    Files whose name matches an ``exclude`` glob (label maps by default) are skipped unless they
    match an ``include`` glob. Hidden folders (the cache) are never entered.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[Path] = []

    def wanted(p: Path) -> bool:
        name = p.name.lower()
        if include and any(fnmatch.fnmatch(name, g.lower()) for g in include):
            return True
        return not any(fnmatch.fnmatch(name, g.lower()) for g in exclude)

    for item in inputs:
        root = Path(item)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or folder")
        if root.is_file() or _is_dicom_folder(root):
            found.append(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            here = Path(dirpath)
            for d in list(dirnames):
                if _is_dicom_folder(here / d) and wanted(here / d):
                    found.append(here / d)
                    dirnames.remove(d)
            found.extend(p for f in filenames if _is_volume_file(p := here / f) and wanted(p))
    return sorted(dict.fromkeys(found), key=_natural_key)


def default_cache_dir(source: Path) -> Path:
    """``<folder of the data>/.napari-tpm-cache``, or a user cache when that is read-only."""
    folder = source.parent
    candidate = folder / CACHE_FOLDER
    try:
        candidate.mkdir(exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "napari-tpm" / "supervoxels"


def load_training_volume(
    path: str | os.PathLike,
    *,
    size: int = 256,
    modality: str = "auto",
    min_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    supervoxels: bool = True,
    normalisation: str = "zscore",
) -> TrainingVolume:
    """Read one volume file or DICOM folder and prepare it (supervoxels cached on disk)."""
    from napari_tpm.io import read_volume

    path = Path(path)
    vol = read_volume(path)
    image, spacing, used = to_working_volume(
        vol.array, vol.spacing, size=size, modality=modality, normalisation=normalisation
    )
    name = _stem(path)
    sv = None
    if supervoxels:
        ms = DEFAULT_MIN_SIZE.get(used, 5000) if min_size is None else int(min_size)
        key = hashlib.sha256(f"{file_digest(path)}|{_params(size, used, normalisation)}".encode())
        sv = cached_supervoxels(
            image,
            spacing,
            cache_dir or default_cache_dir(path),
            name=name,
            content_hash=key.hexdigest(),
            min_size=ms,
        )
    return TrainingVolume(name, image, spacing, sv, str(path), used)


def label_path_for(image_path: str | os.PathLike) -> Path | None:
    """The label map beside a training image: ``image_<id>.*`` -> ``label_<id>.*`` (prepared
    paper data), else the same name with "image"/"ct"/"mr" replaced by "label"; None if absent."""
    path = Path(image_path)
    name = path.name
    candidates = []
    for old in ("image", "_ct", "_mr"):
        if old in name:
            new = "label" if old == "image" else "_label"
            candidates.append(path.with_name(name.replace(old, new, 1)))
    return next((c for c in candidates if c.exists() and c != path), None)


def exclude_label_slices(
    volume: TrainingVolume, labels: np.ndarray, values: Sequence[int]
) -> tuple[TrainingVolume, int]:
    """Setting 2 of the few-shot protocol: slices showing any of ``values`` get no supervoxels.

    Training stays label-free; the labels only decide which axial slices may be sampled, so
    that test classes are never seen in training (tpm-method.md section 10.4). Returns the
    volume (with a new supervoxel array) and the number of slices excluded.
    """
    if volume.supervoxels is None:
        raise ValueError(f"{volume.name}: compute supervoxels before excluding slices")
    if labels.shape[0] != volume.n_slices:
        raise ValueError(
            f"{volume.name}: the label map has {labels.shape[0]} slices, "
            f"the image {volume.n_slices}"
        )
    hit = np.isin(labels, list(values)).reshape(labels.shape[0], -1).any(axis=1)
    sv = volume.supervoxels.copy()
    sv[hit] = 0
    volume.supervoxels = sv
    return volume, int(hit.sum())


def load_training_volumes(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    size: int = 256,
    modality: str = "auto",
    min_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    include: Sequence[str] = (),
) -> list[TrainingVolume]:
    """Every volume under ``inputs``, prepared; unreadable files are skipped with a warning."""
    from napari_tpm.io import VolumeError

    paths = find_volumes(inputs, exclude=exclude, include=include)
    volumes = []
    for p in paths:
        try:
            volumes.append(
                load_training_volume(
                    p, size=size, modality=modality, min_size=min_size, cache_dir=cache_dir
                )
            )
        except VolumeError as err:
            warnings.warn(f"skipping {p}: {err}", RuntimeWarning, stacklevel=2)
    if not volumes:
        raise ValueError(f"no readable volumes found in {list(map(str, paths)) or inputs}")
    return volumes
