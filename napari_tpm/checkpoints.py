"""TPM models on disk: one safe file format, the model zoo, and the training-free default.

A checkpoint is a plain dictionary saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only, so opening a
file from the internet can never run code. The encoder is stored as its ``config()`` (plain
builtins) plus a state dict, and rebuilt with ``build_encoder``; no Python class is pickled.

Besides the weights, a TPM model is a handful of numbers (tpm-method.md section 5): the fixed
cosine scale ``alpha``, the learned distance threshold ``t_d`` and the EMA spreads ``sigma_f``,
``sigma_b``, plus the class-prior estimators (AvgEst/LinEst states). A JSON model card is written
beside every checkpoint so a person (or the widget) can read what a file is without torch.

Zoo: ``Path(napari_tpm.__file__).parent / "models"`` holds ``<name>.pt`` (+ ``<name>.json``,
``<name>.md``); which one is the default (per modality) is decided by :mod:`napari_tpm.zoo`, the
single registry every front end asks. ``"filterbank"`` needs no file.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_tpm import zoo as registry
from napari_tpm.encoders import Encoder, build_encoder
from napari_tpm.torch_files import atomic_write, verify_torch_file
from napari_tpm.zoo import DEFAULT, FILTERBANK, list_models

FORMAT = "napari-tpm/1"
ALPHA = 20.0

#: Distance threshold of the filter bank: sqrt of the median self-calibrated D2 threshold over
#: the development organs (benchmarks/RESULTS-encoders.md). Only the scale matters: the session
#: recentres the filter bank's scores on the support slice, but sigma_f and sigma_b (and so the
#: EM responsibilities and multi-class mixtures) must match its distance scale.
FILTERBANK_T_D = 0.42

_REQUIRED = ("format", "encoder_config", "state_dict", "alpha", "t_d", "sigma_f", "sigma_b")


class CheckpointError(ValueError):
    """A model file or name cannot be used: missing, not a napari-tpm file, or mismatched."""


def sigmas_from_threshold(
    alpha: float, t_d: float, prior: float = 0.5, d: int = 1
) -> tuple[float, float]:
    """(sigma_F, sigma_B) of the tied Gaussians whose P = 0.5 boundary at ``prior`` is ``t_d``.

    With r = (pi / (1 - pi))^(-2/d) exp(alpha t_d^2 / (2 d)) (tpm-method.md section 5.2):
    sigma_F^2 = (2/alpha)(1 - 1/r) and sigma_B^2 = (2/alpha)(r - 1).
    """
    if alpha <= 0 or t_d <= 0 or not 0 < prior < 1:
        raise ValueError(f"need alpha > 0, t_d > 0, 0 < prior < 1; got {alpha}, {t_d}, {prior}")
    log_r = alpha * t_d**2 / (2 * d) - (2 / d) * math.log(prior / (1 - prior))
    if log_r <= 0:
        raise ValueError("this threshold and prior give sigma_B <= sigma_F; no tied model exists")
    sigma_f2 = (2 / alpha) * -math.expm1(-log_r)
    sigma_b2 = (2 / alpha) * math.expm1(min(log_r, 700.0))
    return math.sqrt(sigma_f2), math.sqrt(sigma_b2)


@dataclass
class TPMModel:
    """An encoder and the few numbers that turn its distances into TPM posteriors.

    Attributes:
        encoder: the slice encoder (unit-norm features).
        alpha: cosine scale (20 in every released script).
        t_d: distance threshold (learned by training; the P = 0.5 boundary at prior 0.5).
        sigma_f, sigma_b: spreads of the tied Gaussians; when left ``None`` they are derived
            from ``alpha`` and ``t_d`` at prior 0.5, d = 1 (training replaces them by its EMAs).
        estimators: AvgEst/LinEst states as plain dicts (keys like "sp", "mp", "multiclass").
        card: free-form model card (data, training, results), plain builtins.
        name: short name shown to users (zoo name, file stem or "filterbank").
        calibrated: True when ``t_d`` comes from training. False means the distance scale has
            no learned threshold (the filter bank, an untrained encoder), and the session places
            the decision boundary by self-calibrating on the support slice.
        normalisation: how the session scales intensities for this encoder
            (``preprocess.normalise_intensity`` method): "zscore", the paper's per-volume
            z-score that every trained checkpoint so far expects, or "robust", one fixed map per
            modality that keeps values comparable across scans.
        head: None (TPM's tied Gaussians), or a compared scoring head of
            :mod:`napari_tpm.tpm.heads` (``train --head dspnet|mper``); stored as its config
            and weights, and used by ``evaluate`` (`napari_tpm.evaluate.head_session`).
    """

    encoder: Encoder
    alpha: float = ALPHA
    t_d: float = 1.0
    sigma_f: float | None = None
    sigma_b: float | None = None
    estimators: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)
    name: str = ""
    calibrated: bool = False
    normalisation: str = "zscore"
    head: Any = None

    def __post_init__(self) -> None:
        if self.normalisation not in ("zscore", "robust"):
            raise ValueError(
                f"normalisation must be 'zscore' or 'robust', got {self.normalisation!r}"
            )
        self.alpha = float(self.alpha)
        self.t_d = float(self.t_d)
        if self.sigma_f is None or self.sigma_b is None:
            sf, sb = sigmas_from_threshold(self.alpha, self.t_d)
            self.sigma_f = sf if self.sigma_f is None else float(self.sigma_f)
            self.sigma_b = sb if self.sigma_b is None else float(self.sigma_b)
        else:
            self.sigma_f, self.sigma_b = float(self.sigma_f), float(self.sigma_b)
        if not self.name:
            self.name = getattr(self.encoder, "name", "") or "model"


# ------------------------------------------------------------------------------ the zoo
def model_dir() -> Path:
    """The package's model folder (see :func:`napari_tpm.zoo.model_dir`)."""
    return registry.model_dir()


def filterbank_model(device: str | torch.device = "cpu") -> TPMModel:
    """The training-free model: filter-bank encoder, self-calibrated on the support slice.

    ``alpha`` is scaled so that ``alpha * t_d^2 / 2 = 10``, the same ratio
    ``sigma_B^2 / sigma_F^2 = e^10`` as a freshly initialised trained model (alpha 20, T_D 1),
    but on the filter bank's distance scale.
    """
    encoder = build_encoder(FILTERBANK).to(device).eval()
    alpha = 20.0 / FILTERBANK_T_D**2
    card = {
        "description": "training-free multi-scale filter bank with context and body position",
        "encoder": encoder.config(),
        "training": None,
    }
    return TPMModel(
        encoder,
        alpha=alpha,
        t_d=FILTERBANK_T_D,
        card=card,
        name=FILTERBANK,
        calibrated=False,
        normalisation="robust",
    )


def _resolve(name_or_path: str | os.PathLike) -> tuple[str, Path | None]:
    """(name, file) for a zoo name, "default", "filterbank" (no file) or a file path."""
    text = os.fspath(name_or_path)
    if text == DEFAULT:
        text = registry.default_model()
    if text == FILTERBANK:
        return FILTERBANK, None
    path = Path(text).expanduser()
    if path.is_file():
        return path.stem, path
    zoo = model_dir() / f"{text}.pt"
    if "/" not in text and os.sep not in text and zoo.is_file():
        return text, zoo
    if path.suffix in (".pt", ".pth") or "/" in text or os.sep in text:
        raise CheckpointError(f"model file not found: {path}")
    known = ", ".join([DEFAULT, *list_models()])
    raise CheckpointError(f"unknown model {text!r}: not a file and not in the zoo ({known})")


# ------------------------------------------------------------------------------ load / save
def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> TPMModel:
    """Load a model by zoo name, ``"default"``, ``"filterbank"`` or file path, in eval mode.

    The file is read with ``torch.load(weights_only=True)``: a pickle that would build arbitrary
    objects is refused. Raises ``CheckpointError`` (a ``ValueError``) with a clear message for a
    missing file, an unknown name, a file of another format, or weights that do not fit the
    stored encoder architecture.
    """
    name, path = _resolve(name_or_path)
    if path is None:
        return filterbank_model(device)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, EOFError, zip errors...
        raise CheckpointError(
            f"{path} is not a readable napari-tpm checkpoint (only plain tensors and builtins "
            f"are accepted): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint (format: {got!r})")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks the entries {missing}")
    validate_payload(payload, str(path))  # before anything is allocated from its numbers
    try:
        encoder = build_encoder(payload["encoder_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its encoder: {exc}") from exc
    _load_weights(encoder, payload["state_dict"], path)
    encoder.to(device).eval()
    head = _load_head(payload.get("head"), path, device)
    return TPMModel(
        encoder=encoder,
        alpha=float(payload["alpha"]),
        t_d=float(payload["t_d"]),
        sigma_f=float(payload["sigma_f"]),
        sigma_b=float(payload["sigma_b"]),
        estimators=dict(payload.get("estimators") or {}),
        card=dict(payload.get("card") or {}),
        name=str(payload.get("name") or name),
        calibrated=bool(payload.get("calibrated", True)),
        normalisation=str(payload.get("normalisation", "zscore")),
        head=head,
    )


def _load_head(entry: Any, path: Path, device: str | torch.device):
    """The compared head stored in a checkpoint (``{"config", "state_dict"}``), or None."""
    if entry is None:
        return None
    from napari_tpm.tpm.heads import build_head

    try:
        if not isinstance(entry, dict) or not isinstance(entry.get("state_dict"), dict):
            raise ValueError("the head entry needs a config and a state_dict")
        head = build_head(entry.get("config"))
        own = head.state_dict()
        state = entry["state_dict"]
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            raise ValueError("its weights do not fit its config")
        head.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its scoring head: {exc}") from None
    return head.to(device).eval()


def validate_payload(payload: dict, where: str) -> None:
    """Raise CheckpointError unless every number of a checkpoint lies within sane bounds.

    A file is data from anywhere: ``out_channels = 20000000`` would allocate tens of GB before
    any shape check, a filter-bank stride of 0 divides by zero, and a NaN threshold gives an
    empty segmentation without an error. So the encoder config, the TPM scalars and the
    estimator states are checked here, before `build_encoder` sees them.
    """
    from napari_tpm.checkpoint_checks import check_encoder_config, check_estimators, check_scalars

    try:
        check_encoder_config(payload["encoder_config"])
    except ValueError as exc:
        raise CheckpointError(f"{where}: cannot rebuild its encoder: {exc}") from None
    try:
        check_scalars({k: payload[k] for k in ("alpha", "t_d", "sigma_f", "sigma_b")})
        check_estimators(payload.get("estimators"))
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def _load_weights(encoder: Encoder, state: Any, path: Path) -> None:
    """Strictly load ``state`` into ``encoder`` (fp16 storage is cast back to the encoder's)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the state_dict entry is not a dict")
    own = encoder.state_dict()
    extra = sorted(set(state) - set(own))
    lacking = sorted(set(own) - set(state))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if extra or lacking or wrong:
        details = []
        if lacking:
            details.append(f"{len(lacking)} missing (e.g. {lacking[0]})")
        if extra:
            details.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        if wrong:
            k = wrong[0]
            details.append(
                f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                f"{tuple(own[k].shape)} expected)"
            )
        raise CheckpointError(
            f"{path}: the weights do not match the {encoder.name!r} architecture: "
            + "; ".join(details)
        )
    cast = {k: v.to(own[k].dtype) for k, v in state.items()}
    encoder.load_state_dict(cast, strict=True)


def save_model(
    model: TPMModel,
    path: str | os.PathLike,
    *,
    card: dict | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` to ``path`` atomically, plus a JSON model card at ``<stem>.json``.

    Each file is written to a temporary file in the same folder and moved into place with
    ``os.replace``, so a crash or an error never leaves a partial checkpoint (an existing file
    is either kept whole or replaced whole). ``card`` entries are merged over ``model.card``.
    ``half=True`` stores floating-point weights as float16 (half the size; they are cast back
    on load). Returns the checkpoint path.
    """
    path = Path(path)
    merged = {**(model.card or {}), **(card or {})}
    payload = {
        "format": FORMAT,
        "name": model.name,
        "encoder_config": _plain(model.encoder.config(), "encoder config"),
        "state_dict": {
            k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v)
            .detach()
            .cpu()
            .clone()
            for k, v in model.encoder.state_dict().items()
        },
        "alpha": float(model.alpha),
        "t_d": float(model.t_d),
        "sigma_f": float(model.sigma_f),
        "sigma_b": float(model.sigma_b),
        "calibrated": bool(model.calibrated),
        "normalisation": str(model.normalisation),
        "estimators": _plain(model.estimators or {}, "estimators"),
        "card": _plain(merged, "card"),
    }
    if model.head is not None:
        payload["head"] = {
            "config": _plain(model.head.config(), "head config"),
            "state_dict": {
                k: (v.to(torch.float16) if half and v.is_floating_point() else v)
                .detach()
                .cpu()
                .clone()
                for k, v in model.head.state_dict().items()
            },
        }
    summary = {
        "name": model.name,
        "format": FORMAT,
        "file": path.name,
        "encoder": payload["encoder_config"],
        "parameters": int(sum(p.numel() for p in model.encoder.parameters())),
        "weights_dtype": "float16" if half else "float32",
        "alpha": payload["alpha"],
        "t_d": payload["t_d"],
        "sigma_f": payload["sigma_f"],
        "sigma_b": payload["sigma_b"],
        "calibrated": payload["calibrated"],
        "normalisation": payload["normalisation"],
        "estimators": sorted(payload["estimators"]),
        **({"head": payload["head"]["config"]} if "head" in payload else {}),
        "card": payload["card"],
    }
    text = json.dumps(summary, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda f: torch.save(payload, f), verify=verify_torch_file)
    atomic_write(path.with_suffix(".json"), lambda f: f.write(text.encode("utf-8")))
    return path


def _plain(value: Any, what: str) -> Any:
    """``value`` as builtins only (numpy numbers and arrays become floats/lists).

    Anything else would make the file unloadable with ``weights_only=True``, so it is refused
    *before* any file is written.
    """
    if isinstance(value, np.generic):  # before float: np.float64 subclasses float
        return value.item()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):  # str subclasses (torch.__version__) would not unpickle safely
        return str(value)
    if isinstance(value, (int, float)):
        return int(value) if isinstance(value, int) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{what}: keys must be strings, got {k!r}")
            out[k] = _plain(v, what)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    raise CheckpointError(
        f"{what} may hold only numbers, strings, lists and dicts; got {type(value).__name__}"
    )
