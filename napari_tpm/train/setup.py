"""What a training run is and what it starts from: its config, running statistics and model.

Kept apart from the loop (``trainer.py``) because test-time adaptation (``napari_tpm.adapt``)
builds on the same pieces: which parameters learn (``set_trainable``), frozen BatchNorm
(``freeze_bn``) and the starting model (``new_model``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from napari_tpm.tpm import (
    ALPHA,
    IDT_CLIP,
    ideal_class_prior,
    sigmas_from_alpha_td,
    td_from_T,
)
from napari_tpm.train.episodes import EpisodeConfig
from napari_tpm.train.losses import EpisodeModel


@dataclass
class TrainConfig:
    """Everything that defines a training (or adaptation) run; JSON-safe (`asdict`)."""

    encoder: str = "resnet101"
    init: str | None = None  # torchvision ImageNet state dict for the ResNet trunk
    from_checkpoint: str | None = None  # fine-tune this model instead of a fresh encoder
    mode: str = "tpm"  # "tpm" or "adnet" (adds the T loss)
    head: str = "tpm"  # scoring head: "tpm", or a compared head "dspnet" / "mper" (tpm.heads)
    steps: int = 50_000
    batch_size: int = 1
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int = 1000
    lr_gamma: float = 0.95
    clip_grad: float | None = 1.0
    bg_weight: float = 0.1
    align_weight: float = 1.0
    t_loss_weight: float | None = None  # None: 1 in ADNet mode, 0 in TPM mode
    ema_rate: float = 1e-3
    max_classes: int = 1
    min_support_px: int = 200
    min_slice_px: int = 20
    augment: bool = True
    seed: int = 2021
    normalisation: str = "zscore"  # the model's intensity map: "zscore" (paper) or "robust"
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    workers: int = 0
    trainable: str = "all"  # "all", or "last": last trunk stage + projection + theta
    freeze_bn: bool = False  # keep BatchNorm statistics fixed (adaptation on one volume)
    checkpoint_every: int = 1000
    analysis_episodes: int = 1000
    analysis_prototypes: int = 5
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("tpm", "adnet"):
            raise ValueError(f"mode must be 'tpm' or 'adnet', got {self.mode!r}")
        if self.head not in ("tpm", "dspnet", "mper"):
            raise ValueError(f"head must be 'tpm', 'dspnet' or 'mper', got {self.head!r}")
        if self.head != "tpm" and self.max_classes > 1:
            raise ValueError("the compared heads train on binary episodes (max_classes 1)")
        if self.trainable not in ("all", "last"):
            raise ValueError(f"trainable must be 'all' or 'last', got {self.trainable!r}")
        if self.steps < 0 or self.batch_size < 1 or self.max_classes < 1:
            raise ValueError("steps must be >= 0, batch_size and max_classes >= 1")
        if not 1 <= self.max_classes <= 16:
            raise ValueError(f"max_classes must be in 1..16, got {self.max_classes}")

    @property
    def t_weight(self) -> float:
        if self.t_loss_weight is not None:
            return float(self.t_loss_weight)
        return 1.0 if self.mode == "adnet" else 0.0

    def episode_config(self) -> EpisodeConfig:
        return EpisodeConfig(
            max_classes=self.max_classes,
            min_slice_px=self.min_slice_px,
            min_support_px=self.min_support_px,
            augment=self.augment,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RunningStats:
    """Training-time EMAs (section 6): sigma_F, sigma_B from the live T, and the query IDT."""

    sigma_f: float
    sigma_b: float
    idt: float = 1.0
    rate: float = 1e-3
    alpha: float = ALPHA

    @classmethod
    def initial(cls, t_d: float = 1.0, rate: float = 1e-3, alpha: float = ALPHA) -> RunningStats:
        sf, sb = sigmas_from_alpha_td(alpha, t_d, 0.5)
        return cls(sigma_f=float(sf), sigma_b=float(sb), idt=float(t_d), rate=rate, alpha=alpha)

    def update(self, T: float, idt: float | None) -> None:
        sf, sb = sigmas_from_alpha_td(self.alpha, td_from_T(T, self.alpha), 0.5)
        r = self.rate
        self.sigma_f += r * (float(sf) - self.sigma_f)
        self.sigma_b += r * (float(sb) - self.sigma_b)
        if idt is not None and math.isfinite(idt):
            idt = min(max(idt, IDT_CLIP[0]), IDT_CLIP[1])
            self.idt += r * (idt - self.idt)

    def prior(self, t_d: float) -> float:
        """p_F: the ICP implied by the IDT average at the current learned threshold."""
        return float(ideal_class_prior(self.idt, t_d, self.alpha))


# --------------------------------------------------------------------------- model set-up


def new_model(config: TrainConfig):
    """The starting `TPMModel`: a checkpoint to fine-tune, or a fresh encoder (T_D = 1)."""
    from napari_tpm.checkpoints import TPMModel, load_model
    from napari_tpm.encoders import build_encoder, load_imagenet_weights

    if config.from_checkpoint:
        return load_model(config.from_checkpoint)
    encoder = build_encoder(config.encoder)
    if config.init and config.init != "none":
        if not hasattr(encoder, "backbone"):
            raise ValueError(f"--init needs a ResNet encoder, not {config.encoder!r}")
        load_imagenet_weights(encoder, config.init)
    stats = RunningStats.initial(1.0)
    return TPMModel(
        encoder=encoder,
        alpha=ALPHA,
        t_d=1.0,
        sigma_f=stats.sigma_f,
        sigma_b=stats.sigma_b,
        estimators={},
        card={},
        calibrated=False,
        **({} if config.normalisation == "zscore" else {"normalisation": config.normalisation}),
    )


def last_stage_names(encoder: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes that stay trainable with ``trainable="last"``."""
    prefixes = ["projection."]
    blocks = getattr(encoder, "blocks", None)
    if blocks is not None and hasattr(encoder, "head"):  # the hybrid: its head and last block
        prefixes += ["head.", f"blocks.{len(blocks) - 1}."]
    backbone = getattr(encoder, "backbone", None)
    if backbone is not None:
        stages = [n for n, _ in backbone.named_children() if n.startswith("layer")]
        if stages:
            prefixes.append(f"backbone.{stages[-1]}.")
    return tuple(prefixes)


def set_trainable(net: EpisodeModel, trainable: str) -> None:
    """``"all"``: every parameter learns; ``"last"``: only :func:`last_stage_names` and theta
    (test-time adaptation on one volume, where the whole trunk would overfit)."""
    if trainable == "all":
        for p in net.parameters():
            p.requires_grad_(True)
        return
    train_last_stage_only(net.encoder)
    net.theta.requires_grad_(True)


def train_last_stage_only(encoder: nn.Module) -> None:
    """Let only the encoder's :func:`last_stage_names` parameters learn (the rest frozen)."""
    keep = last_stage_names(encoder)
    for name, p in encoder.named_parameters():
        p.requires_grad_(name.startswith(keep))


def freeze_bn(module: nn.Module) -> None:
    """Put every BatchNorm in eval mode: one volume's batches would skew their statistics."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
