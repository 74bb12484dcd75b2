"""Dataset descriptions: the paper's two abdominal sets, and any folder of labelled volumes.

The paper evaluates on two prepared sets (tpm-method.md §2 and §10.1):

* ABD-MRI: CHAOS T2-SPIR, 20 volumes, labels 1 liver, 2 right kidney, 3 left kidney, 4 spleen;
* ABD-CT: Synapse / BTCV, 30 volumes, labels 6 liver, 2 right kidney, 3 left kidney, 1 spleen.

Both are a folder of ``image_<id>.nii.gz`` / ``label_<id>.nii.gz`` pairs, and the folds index the
list sorted **numerically** by id (``image_10`` after ``image_9``), which is why the sort here is
numeric rather than by name. The generic mode pairs any images with any label maps and takes the
structures to measure from a ``name=value`` mapping, so a user can run the same protocol on
their own data.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: File-name endings of volume files, longest first so ".nii.gz" wins over ".gz".
VOLUME_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class DatasetSpec:
    """One of the paper's datasets: where its files are, its label map, folds and class groups.

    Attributes:
        name: key used on the command line ("chaos", "synapse").
        title: human name used in table captions.
        classes: organ name -> label value, in the column order of the paper's tables.
        folds: per fold, the indices into the numerically sorted volume list.
        n_volumes: how many labelled volumes the prepared set holds.
        subfolder: the folder name the SSL-ALPNet notebooks write (searched inside ``--data``).
        class_groups: setting 2 (tpm-method.md §10.4) trains one model per group of test classes
            with the slices that show them removed; organ -> group name.
        image_glob: how image files are named (the id is the last number in the name).
        label_name: the label file's name without extension, ``{id}`` standing for the id.
    """

    name: str
    title: str
    classes: dict[str, int]
    folds: tuple[tuple[int, ...], ...]
    n_volumes: int
    subfolder: str
    class_groups: dict[str, str] = field(default_factory=dict)
    image_glob: str = "image_*"
    label_name: str = "label_{id}"

    def group_labels(self, group: str) -> list[int]:
        """Label values of the classes in ``group``: what setting-2 training must exclude."""
        return [self.classes[o] for o, g in self.class_groups.items() if g == group]


CHAOS = DatasetSpec(
    name="chaos",
    title="ABD-MRI (CHAOS T2-SPIR)",
    classes={"liver": 1, "lk": 3, "rk": 2, "spleen": 4},
    folds=(
        (0, 1, 2, 3, 4),
        (4, 5, 6, 7, 8),
        (8, 9, 10, 11, 12),
        (12, 13, 14, 15, 16),
        (0, 16, 17, 18, 19),
    ),
    n_volumes=20,
    subfolder="chaos_MR_T2_normalized",
    class_groups={
        "liver": "liver_spleen",
        "spleen": "liver_spleen",
        "lk": "kidneys",
        "rk": "kidneys",
    },
)

SYNAPSE = DatasetSpec(
    name="synapse",
    title="ABD-CT (Synapse / BTCV)",
    classes={"liver": 6, "lk": 3, "rk": 2, "spleen": 1},
    folds=tuple(tuple(range(6 * k, 6 * k + 6)) for k in range(5)),
    n_volumes=30,
    subfolder="sabs_CT_normalized",
    class_groups={
        "liver": "liver_spleen",
        "spleen": "liver_spleen",
        "lk": "kidneys",
        "rk": "kidneys",
    },
)

_GROUPS = {"liver": "liver_spleen", "spleen": "liver_spleen", "lk": "kidneys", "rk": "kidneys"}

#: The development subsets in ``../shared/data`` as stored there (``sabs_NN_ct`` /
#: ``sabs_NN_label``, ``chaos_t2_NN_mr`` / ``chaos_t2_NN_label``; both relabelled to 1 liver,
#: 2 RK, 3 LK, 4 spleen). They hold 15 and 10 of the paper's 30 and 20 volumes, so the paper's
#: five folds cannot apply. Two folds instead: fold 0 is the held-out half (sabs 22-29, CHAOS
#: 34-39), on which the product is measured and nothing is tuned; fold 1 is the other half, the
#: volumes training and every recipe choice use.
SABS_DEV = DatasetSpec(
    name="sabs_ct",
    title="ABD-CT development subset (BTCV, 15 volumes)",
    classes={"liver": 1, "lk": 3, "rk": 2, "spleen": 4},
    folds=(tuple(range(7, 15)), tuple(range(0, 7))),
    n_volumes=15,
    subfolder="sabs_ct",
    class_groups=dict(_GROUPS),
    image_glob="sabs_*_ct.*",
    label_name="sabs_{id}_label",
)

CHAOS_DEV = DatasetSpec(
    name="chaos_t2spir",
    title="ABD-MRI development subset (CHAOS T2-SPIR, 10 volumes)",
    classes={"liver": 1, "lk": 3, "rk": 2, "spleen": 4},
    folds=(tuple(range(5, 10)), tuple(range(0, 5))),
    n_volumes=10,
    subfolder="chaos_t2spir",
    class_groups=dict(_GROUPS),
    image_glob="chaos_t2_*_mr.*",
    label_name="chaos_t2_{id}_label",
)

DATASETS: dict[str, DatasetSpec] = {
    "chaos": CHAOS,
    "synapse": SYNAPSE,
    "sabs_ct": SABS_DEV,
    "chaos_t2spir": CHAOS_DEV,
}

#: Display names of the organ keys used in tables.
ORGAN_TITLES: dict[str, str] = {"liver": "Liver", "lk": "LK", "rk": "RK", "spleen": "Spleen"}


def organ_title(name: str) -> str:
    return ORGAN_TITLES.get(name, name)


@dataclass
class Case:
    """One labelled volume: either two files, or arrays held in memory (tests, phantoms).

    ``load()`` reads the files on each call; the evaluation keeps what it needs in a small
    cache of its own, so a dataset of many volumes never sits in memory at once.
    """

    name: str
    image_path: Path | None = None
    label_path: Path | None = None
    image: np.ndarray | None = None
    labels: np.ndarray | None = None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def load(self) -> LoadedCase:
        direction = _LPS
        if self.image is not None and self.labels is not None:
            image, labels, spacing = self.image, self.labels, tuple(self.spacing)
        else:
            if self.image_path is None or self.label_path is None:
                raise ValueError(f"case {self.name!r} has neither arrays nor files")
            from napari_tpm.io import read_volume, require_same_grid

            img = read_volume(self.image_path)
            lab = read_volume(self.label_path)
            require_same_grid(img, lab, what=f"labels {self.label_path.name}")
            image, labels, spacing = img.array, lab.array, tuple(img.spacing)
            direction = img.direction
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            labels = np.rint(labels).astype(np.int32)
        if image.shape != labels.shape:
            raise ValueError(
                f"case {self.name!r}: image {image.shape} and labels {labels.shape} differ"
            )
        return LoadedCase(self.name, np.asarray(image), labels, spacing, tuple(direction))


#: identity direction cosines: arrays held in memory are taken as they are
_LPS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class LoadedCase:
    """A case's arrays, (z, y, x), its spacing (z, y, x) in mm and its file's direction."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    direction: tuple[float, ...] = _LPS

    def like(self, query: LoadedCase) -> LoadedCase:
        """This support volume with its axes pointing as ``query``'s do (as the CLI does:
        :mod:`napari_tpm.orientation`); itself when they already agree."""
        from napari_tpm.orientation import reorient_pair

        image, labels, spacing, change = reorient_pair(
            self.image, self.labels, self.spacing, self.direction, query.direction
        )
        if not change:
            return self
        return LoadedCase(self.name, image, labels, spacing, query.direction)


# ------------------------------------------------------------------------------ paper sets
_ID = re.compile(r"(\d+)(?=\D*$)")


def _numeric_id(path: Path) -> int:
    """The last number in a file name: image_12.nii.gz -> 12."""
    stem = strip_extension(path.name)
    match = _ID.search(stem)
    if match is None:
        raise ValueError(f"no number in file name {path.name!r}")
    return int(match.group(1))


def find_paper_cases(spec: DatasetSpec, root: str | Path) -> list[Case]:
    """The prepared volumes of ``spec`` under ``root``, sorted numerically by id.

    Accepts ``root`` itself or ``root/<spec.subfolder>`` holding images named like
    ``spec.image_glob`` (``image_<id>.*``) and labels like ``spec.label_name``
    (``label_<id>.*``). Raises ValueError (with what was found) unless exactly
    ``spec.n_volumes`` pairs are there, because a missing volume silently shifts every fold.
    """
    root = Path(root)
    candidates = [root / spec.subfolder, root]
    pattern = spec.image_glob
    folder = next((c for c in candidates if c.is_dir() and any(c.glob(pattern))), None)
    if folder is None:
        raise ValueError(
            f"no {pattern} files in {root} or {root / spec.subfolder}; prepare the "
            f"{spec.title} data first (python -m napari_tpm.train prepare ...)"
        )
    images = sorted((p for p in folder.glob(pattern) if _is_volume(p)), key=_numeric_id)
    cases = []
    for image in images:
        ident = _numeric_id(image)
        label = spec.label_name.format(id=ident)
        labels = [p for p in folder.glob(f"{label}.*") if _is_volume(p)]
        if not labels:
            raise ValueError(f"{image.name} has no matching {label}.* in {folder}")
        cases.append(Case(f"{spec.name}_{ident}", image, labels[0]))
    if len(cases) != spec.n_volumes:
        raise ValueError(
            f"{spec.title} needs {spec.n_volumes} labelled volumes for the paper's folds, "
            f"found {len(cases)} in {folder}"
        )
    return cases


# ---------------------------------------------------------------------------- generic mode
def strip_extension(name: str) -> str:
    low = name.lower()
    for ext in VOLUME_EXTENSIONS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _is_volume(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_EXTENSIONS)


def parse_classes(text: str) -> dict[str, int]:
    """``"liver=6,spleen=1"`` -> ``{"liver": 6, "spleen": 1}`` (order kept).

    Raises ValueError for a malformed item, a value < 1, or a repeated name or value.
    """
    out: dict[str, int] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"class {item!r} must look like name=value, e.g. liver=6")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(
                f"class {name!r}: label value {value.strip()!r} is not a whole number"
            ) from None
        if number < 1:
            raise ValueError(f"class {name!r}: label value must be >= 1, got {number}")
        if name in out:
            raise ValueError(f"class {name!r} is given twice")
        if number in out.values():
            raise ValueError(f"label value {number} is given to two classes")
        out[name] = number
    if not out:
        raise ValueError("no classes given: use e.g. --classes liver=6,spleen=1")
    return out


def _expand(paths: Iterable[str | Path], pattern: str) -> list[Path]:
    """Files named directly, plus the volume files in named folders that match ``pattern``."""
    out: list[Path] = []
    for p in (Path(p) for p in paths):
        if p.is_dir():
            out.extend(
                sorted(f for f in p.iterdir() if _is_volume(f) and fnmatch.fnmatch(f.name, pattern))
            )
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"{p} does not exist")
    return out


def _key(name: str, pattern: str) -> str:
    """The part of ``name`` that the ``*`` of ``pattern`` matched, used to pair files.

    ``amos_0001_slab_ct.nii.gz`` with pattern ``*_ct.nii.gz`` gives ``amos_0001_slab``, which
    also comes out of ``amos_0001_slab_label.nii.gz`` with ``*_label.nii.gz``.
    """
    if "*" in pattern:
        regex = "^" + "(.*)".join(re.escape(part) for part in pattern.split("*", 1)) + "$"
        regex = regex.replace(r"\*", ".*").replace(r"\?", ".")
        match = re.match(regex, name)
        if match:
            return strip_extension(match.group(1))
    return strip_extension(name)


def pair_cases(
    images: Sequence[str | Path],
    labels: Sequence[str | Path],
    *,
    image_pattern: str = "*",
    label_pattern: str = "*",
) -> list[Case]:
    """Pair image files with label files.

    ``images`` / ``labels`` are folders (their volume files matching the pattern are used) or
    files. Files given one by one are paired in the order given; files from folders are paired
    by the part of the name the pattern's ``*`` matched (with the default ``*``: the whole name
    without its extension, so ``images/case1.nii.gz`` pairs with ``labels/case1.nii.gz``).

    Raises ValueError when nothing is found, counts differ, or a name has no partner.
    """
    img_files = _expand(images, image_pattern)
    lab_files = _expand(labels, label_pattern)
    if not img_files:
        raise ValueError(f"no image volumes found in {', '.join(map(str, images))}")
    if len(img_files) != len(lab_files):
        raise ValueError(
            f"found {len(img_files)} images but {len(lab_files)} label maps; use "
            "--image-pattern/--label-pattern to select matching files"
        )
    by_order = all(Path(p).is_file() for p in [*images, *labels])
    if by_order:
        pairs = list(zip(img_files, lab_files))
    else:
        lab_keys = {_key(f.name, label_pattern): f for f in lab_files}
        pairs = []
        for f in img_files:
            key = _key(f.name, image_pattern)
            if key not in lab_keys:
                raise ValueError(
                    f"image {f.name} (key {key!r}) has no label map with the same key among "
                    f"{sorted(lab_keys)}; set --image-pattern/--label-pattern"
                )
            pairs.append((f, lab_keys[key]))
    names: dict[str, int] = {}
    cases = []
    for img, lab in pairs:
        name = _key(img.name, image_pattern)
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{name}_{names[name]}"
        cases.append(Case(name, img, lab))
    return cases


__all__ = [
    "CHAOS",
    "CHAOS_DEV",
    "DATASETS",
    "SABS_DEV",
    "SYNAPSE",
    "Case",
    "DatasetSpec",
    "LoadedCase",
    "find_paper_cases",
    "organ_title",
    "pair_cases",
    "parse_classes",
    "strip_extension",
]
