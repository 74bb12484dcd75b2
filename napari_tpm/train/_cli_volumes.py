"""Reading the training volumes for ``python -m napari_tpm.train train``.

Kept apart from the command line's parser and commands (``__main__``): which volumes a run
trains on, with the paper-fold holdout and setting 2's excluded slices.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from napari_tpm._cli import BadInput


def _holdout_paths(spec_fold: str, roots: Sequence[str]) -> set[Path]:
    """The image paths of ``--holdout DATASET:FOLD``'s test volumes, to leave out of training."""
    from napari_tpm.evaluate.datasets import DATASETS, find_paper_cases

    try:
        name, fold_text = spec_fold.split(":")
        spec, fold = DATASETS[name], int(fold_text)
        indices = spec.folds[fold]
    except (ValueError, KeyError, IndexError):
        raise BadInput(
            f"--holdout must be DATASET:FOLD with DATASET in {sorted(DATASETS)} and FOLD a "
            f"fold number, got {spec_fold!r}"
        ) from None
    if len(roots) != 1:
        raise BadInput("--holdout needs exactly one DATA folder (the prepared dataset)")
    try:
        cases = find_paper_cases(spec, roots[0])
    except ValueError as err:
        raise BadInput(str(err)) from None
    return {Path(cases[i].image_path).resolve() for i in indices}


def load_volumes(args, dist) -> list:
    """The training volumes the parsed command line names (files, folders or phantoms).

    ``--holdout`` drops a paper fold's test volumes; ``--exclude-label-values`` drops the
    slices that show those labels (setting 2). In a distributed run rank 0 computes and caches
    the supervoxels first. Bad input raises :class:`napari_tpm._cli.BadInput`.
    """
    from napari_tpm.train.ddp import barrier
    from napari_tpm.train.volumes import (
        DEFAULT_EXCLUDE,
        find_volumes,
        load_training_volume,
        volume_from_array,
    )

    if args.phantoms:
        from napari_tpm.phantom import make_phantom_dataset

        try:
            shape = tuple(int(v) for v in args.phantom_shape.split(","))
        except ValueError:
            raise BadInput(f"--phantom-shape must be z,y,x, got {args.phantom_shape!r}") from None
        phantoms = make_phantom_dataset(args.phantoms, shape=shape, seed=0)
        min_size = args.sv_min_size or max(50, int(0.002 * shape[0] * args.size**2))
        return [
            volume_from_array(
                p.image,
                p.spacing,
                name=f"phantom{i}",
                size=args.size,
                modality=p.modality,
                min_size=min_size,
                normalisation=args.normalisation,
            )
            for i, p in enumerate(phantoms)
        ]
    if not args.data:
        raise BadInput("give DATA folders or files (or --phantoms N)")
    try:
        paths = find_volumes(
            args.data, exclude=args.exclude or DEFAULT_EXCLUDE, include=args.include
        )
    except FileNotFoundError as err:
        raise BadInput(str(err)) from None
    if args.holdout:
        held = _holdout_paths(args.holdout, args.data)
        paths = [p for p in paths if p.resolve() not in held]
    if not paths:
        raise BadInput(f"no volumes found in {' '.join(args.data)}")
    from napari_tpm.io import VolumeError

    volumes = []
    # Rank 0 computes and caches the supervoxels first; the other ranks then read the cache.
    for turn in (0, 1):
        if (turn == 0) == dist.is_main:
            for p in paths:
                try:
                    volumes.append(
                        load_training_volume(
                            p,
                            size=args.size,
                            modality=args.modality,
                            normalisation=args.normalisation,
                            min_size=args.sv_min_size,
                            cache_dir=args.cache_dir,
                        )
                    )
                except VolumeError as err:
                    print(f"skipping {p}: {err}", file=sys.stderr)
        barrier(dist)
    if not volumes:
        raise BadInput("none of the volumes could be read")
    if args.exclude_label_values:
        volumes = _exclude_label_values(volumes, args.exclude_label_values)
    return volumes


def _exclude_label_values(volumes: list, text: str) -> list:
    """Apply --exclude-label-values (setting 2) using the label map beside each image."""
    from napari_tpm.io import VolumeError, read_volume
    from napari_tpm.train.volumes import exclude_label_slices, label_path_for

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInput(
            f"--exclude-label-values must be whole numbers like 2,3, got {text!r}"
        ) from None
    for vol in volumes:
        label = label_path_for(vol.source) if vol.source else None
        if label is None:
            raise BadInput(f"--exclude-label-values: no label map found beside {vol.source}")
        try:
            exclude_label_slices(vol, read_volume(label).array, values)
        except (VolumeError, ValueError) as err:
            raise BadInput(f"--exclude-label-values: {err}") from None
    return volumes
