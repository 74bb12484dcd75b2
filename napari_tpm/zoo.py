"""The one model registry: which models exist, and which one every front end uses by default.

The CLI (``--checkpoint default``), ``checkpoints.load_model("default")``, the napari widget's
Model box and ``python -m napari_tpm.evaluate`` all ask this module, so they can never disagree
again (issue 12: the widget opened on a zoo model while the CLI used the filter bank, and lost
0.3-0.5 Dice on real scans).

The default is chosen per modality by a small JSON file, ``models/default.json``::

    {"ct": "filterbank", "mr": "filterbank"}

Whoever trains a better CT or MR model ships ``<name>.pt`` and edits only that file. An optional
``"auto"`` entry names the model for an image of unknown modality; without it, "auto" means the
shared entry when CT and MR agree, else the training-free filter bank, which suits both.

This module is import-light (no torch): the widget reads the list before loading anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import napari_tpm

FILTERBANK = "filterbank"
DEFAULT = "default"
MODALITIES = ("ct", "mr")
DEFAULTS_FILE = "default.json"


def model_dir() -> Path:
    """The package's model folder (a link to the repository's ``models/`` in a checkout)."""
    return Path(napari_tpm.__file__).resolve().parent / "models"


def _defaults() -> dict[str, str]:
    """The ``default.json`` entries ("ct", "mr", optional "auto"); empty when there is none.

    Raises ValueError for a file that is not a JSON object of model names, so a typo made while
    editing it is reported by every front end instead of silently falling back.
    """
    path = model_dir() / DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f'{path} must hold an object such as {{"ct": "filterbank"}}')
    out: dict[str, str] = {}
    for key in (*MODALITIES, "auto"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}: entry {key!r} must be a model name, got {value!r}")
        out[key] = value.strip()
    return out


def default_model(modality: str = "auto") -> str:
    """The name of the default model for ``modality`` ("ct", "mr" or "auto").

    "auto" (the modality is not known yet) gives the file's "auto" entry, else the entry CT and
    MR share, else the filter bank. A modality without an entry also gives the filter bank, the
    training-free model that needs no file.
    """
    modality = modality.lower()
    if modality not in (*MODALITIES, "auto"):
        raise ValueError(f"modality must be 'auto', 'ct' or 'mr', got {modality!r}")
    entries = _defaults()
    if modality in entries:
        return entries[modality]
    if modality == "auto":
        named = {entries[m] for m in MODALITIES if m in entries}
        if len(named) == 1:
            return named.pop()
    return FILTERBANK


def default_for_image(array, modality: str = "auto") -> str:
    """The default model for this image: ``modality``, or the modality guessed from its values."""
    if modality == "auto":
        from napari_tpm.preprocess import guess_modality

        modality = guess_modality(array)
    return default_model(modality)


def resolve(name: str, modality: str = "auto") -> str:
    """``name`` with ``"default"`` replaced by the default model for ``modality``."""
    return default_model(modality) if name == DEFAULT else name


def list_models() -> list[str]:
    """Every usable model name, the default (for an unknown modality) first.

    The zoo's ``<name>.pt`` files in name order and ``"filterbank"``; a per-modality default
    follows the overall default, so a front end's first entries are the ones worth trying.
    """
    folder = model_dir()
    names = sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []
    names.append(FILTERBANK)
    preferred = [default_model("auto"), *(default_model(m) for m in MODALITIES)]
    front = [n for n in dict.fromkeys(preferred) if n in names]
    return [*front, *(n for n in names if n not in front)]
