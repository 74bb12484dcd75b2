"""Bounds on every number a checkpoint file carries, checked before anything is built from it.

A checkpoint is data from anywhere. ``torch.load(weights_only=True)`` keeps it from running
code, but not from asking for 20 million output channels (tens of GB allocated before any
shape check), a filter-bank stride of 0 (a division by zero deep in a convolution) or a NaN
threshold (an empty segmentation and exit 0). These checks turn each of those into a
`ValueError` with one line; `napari_tpm.checkpoints` words it as a `CheckpointError`.

The bounds are generous (10x anything the project trains or ships) so a real model never trips
them: they only exist to stop absurd values.
"""

from __future__ import annotations

import math
from typing import Any

from napari_tpm.encoders.registry import ENCODER_NAMES

#: Integer fields of encoder configs with their own bounds (inclusive).
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "out_channels": (1, 8192),
    "width": (1, 8192),
    "learned_channels": (1, 8192),
    "stride": (1, 64),
    "body_open": (0, 64),
}
#: Any other integer in an encoder config (dilations, sizes).
GENERIC_INT: tuple[int, int] = (-8192, 8192)
#: Float fields that must be strictly positive (filter scales and widths).
POSITIVE_FLOATS = frozenset({"scales", "hist_scales", "body_scales", "hist_width"})
#: Any float's magnitude; and the most entries a list or dict may hold.
MAX_FLOAT = 1e6
MAX_ITEMS = 256
#: TPM scalars: (lowest allowed, highest allowed); all must be finite and positive.
SCALAR_BOUNDS: dict[str, tuple[float, float]] = {
    "alpha": (1e-6, 1e6),
    "t_d": (1e-6, 1e3),
    "sigma_f": (1e-12, 1e6),
    "sigma_b": (1e-12, 1e6),
}


def _check_value(value: Any, key: str, where: str, depth: int = 0) -> None:
    if depth > 6:
        raise ValueError(f"encoder config {where} is nested too deeply")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        lo, hi = INT_BOUNDS.get(key, GENERIC_INT)
        if not lo <= value <= hi:
            raise ValueError(f"encoder config {where} = {value} is outside {lo}..{hi}")
        if key in POSITIVE_FLOATS and value <= 0:
            raise ValueError(f"encoder config {where} = {value} must be positive")
        return
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_FLOAT:
            raise ValueError(f"encoder config {where} = {value} is not a sane number")
        if key in POSITIVE_FLOATS and value <= 0:
            raise ValueError(f"encoder config {where} = {value} must be positive")
        if key in INT_BOUNDS:
            raise ValueError(f"encoder config {where} = {value} must be a whole number")
        return
    if isinstance(value, str):
        if len(value) > 200:
            raise ValueError(f"encoder config {where} is a string of {len(value)} characters")
        return
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS:
            raise ValueError(f"encoder config {where} has {len(value)} entries (max {MAX_ITEMS})")
        for i, item in enumerate(value):
            _check_value(item, key, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise ValueError(f"encoder config {where} has {len(value)} entries (max {MAX_ITEMS})")
        for k, item in value.items():
            if not isinstance(k, str):
                raise ValueError(f"encoder config {where} has a key that is not text: {k!r}")
            _check_value(item, k, f"{where}.{k}", depth + 1)
        return
    raise ValueError(f"encoder config {where} holds a {type(value).__name__}")


def check_encoder_config(config: Any) -> None:
    """A known encoder name and every field within bounds (nested configs included)."""
    if isinstance(config, str):
        config = {"name": config}
    if not isinstance(config, dict):
        raise ValueError(f"encoder_config must be a dict, got {type(config).__name__}")
    name = config.get("name")
    if name not in ENCODER_NAMES:
        raise ValueError(f"unknown encoder {name!r}; known encoders: {', '.join(ENCODER_NAMES)}")
    for key, value in config.items():
        if not isinstance(key, str):
            raise ValueError(f"encoder_config has a key that is not text: {key!r}")
        _check_value(value, key, key)


def check_scalars(values: dict[str, Any]) -> None:
    """alpha, t_d, sigma_f and sigma_b: finite numbers within `SCALAR_BOUNDS`."""
    for key, value in values.items():
        lo, hi = SCALAR_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {type(value).__name__}")
        if not (math.isfinite(float(value)) and lo <= float(value) <= hi):
            raise ValueError(f"{key} = {value} is outside the sane range {lo:g}..{hi:g}")


def check_estimators(estimators: Any) -> None:
    """Estimator states must rebuild (AvgEst/LinEst) and give finite priors."""
    from napari_tpm.tpm.estimators import AvgEst, LinEst

    if estimators is None:
        return
    if not isinstance(estimators, dict):
        raise ValueError(f"estimators must be a dict, got {type(estimators).__name__}")
    for key, entry in estimators.items():
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"estimators[{key!r}] must be a dict, got {type(entry).__name__}")
        for kind, cls in (("avgest", AvgEst), ("linest", LinEst)):
            if kind not in entry:
                continue
            state = entry[kind]
            try:
                est = cls.from_dict(state)
                numbers = [est.prior] if kind == "avgest" else [est.b0, est.b1, est.b2]
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
                raise ValueError(f"estimators[{key!r}][{kind!r}] is not a valid state") from None
            if not all(math.isfinite(v) and abs(v) < 1e6 for v in numbers):
                raise ValueError(f"estimators[{key!r}][{kind!r}] holds non-finite numbers")
            if kind == "avgest" and not 0.0 <= est.prior <= 1.0:
                raise ValueError(f"estimators[{key!r}]['avgest'] prior {est.prior} is not in 0..1")


def refuse_compared_head(model: Any, allowed: bool) -> None:
    """Refuse (ValueError) a model that scores with a compared head unless ``allowed``.

    Such a checkpoint (``train --head``) learned its own threshold and scoring, so segmenting
    with it as plain TPM would silently score it with a rule it never learned; only the
    paper evaluation's ``HeadSession`` scores with the head.
    """
    head = getattr(model, "head", None)
    if head is not None and not allowed:
        kind = getattr(head, "kind", None) or type(head).__name__
        raise ValueError(
            f"this checkpoint scores with a compared '{kind}' head (train --head), which only "
            "`python -m napari_tpm.evaluate paper` uses; segment with a model trained "
            "without --head"
        )
